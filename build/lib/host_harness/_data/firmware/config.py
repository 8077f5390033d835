# Device configuration: a JSON file on the device (config.json), or on the
# unix port the file named by the LIGHTCTL_CONFIG environment variable.
import json
import os

DEFAULT_PATH = "config.json"

DEFAULTS = {
    "device_id": "light-1",
    "base_topic": "lightctl",
    "board": "board.json",
    "mqtt": None,
    "wifi": None,
}


def path():
    getenv = getattr(os, "getenv", None)
    p = getenv("LIGHTCTL_CONFIG") if getenv else None
    return p or DEFAULT_PATH


def _read_json(p):
    with open(p) as f:
        return json.load(f)


def load(p=None):
    cfg = dict(DEFAULTS)
    cfg.update(_read_json(p or path()))
    b = cfg["board"]
    if isinstance(b, str):
        cfg["board"] = _read_json(b)
    return cfg
