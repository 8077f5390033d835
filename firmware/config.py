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


# Wi-Fi power save (config "wifi": {"pm": ...}): off by default. A sleeping
# radio hears the access point only at beacons (102.4 ms apart, DTIM times
# that), which is the largest tail on a real ESP32.
WIFI_PM = ("none", "min", "max")


def wifi_pm(cfg):
    """The configured Wi-Fi power-save mode: none (default), min or max."""
    w = cfg.get("wifi") or {}
    return w.get("pm") or "none"


def path():
    getenv = getattr(os, "getenv", None)
    p = getenv("LIGHTCTL_CONFIG") if getenv else None
    return p or DEFAULT_PATH


def _read_json(p):
    with open(p) as f:
        return json.load(f)


def build_id(p):
    # fw.txt beside the config: the firmware's build id, written by the host
    # when it deploys (a hash of the firmware sources); "" when there is none.
    try:
        with open(p[: p.rfind("/") + 1] + "fw.txt") as f:
            v = f.read(64).strip()
    except OSError:
        return ""
    return v if all(c in "0123456789abcdef" for c in v) else "?"


def load(p=None):
    cfg = dict(DEFAULTS)
    p = p or path()
    cfg.update(_read_json(p))
    cfg["fw"] = build_id(p)
    b = cfg["board"]
    if isinstance(b, str):
        cfg["board"] = _read_json(b)
    if wifi_pm(cfg) not in WIFI_PM:
        raise ValueError("wifi.pm must be none, min or max")
    # "gc": "between" (default; App.settle) or "when_full" (MicroPython's own)
    if cfg.get("gc", "between") not in ("between", "when_full"):
        raise ValueError("gc must be between or when_full")
    return cfg
