"""Input checks for ``run`` and ``sim``: every option, file and key is checked
before a broker or a device starts, and a bad one is a one-line error naming it.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_harness.broker.info import (
    EMBEDDED_KINDS,
    KIND_MOSQUITTO,
    KIND_MOSQUITTO_TUNED,
    BrokerInfo,
    parse_broker_url,
)
from host_harness.broker.mosquitto import find_mosquitto
from host_harness.core import budgets
from host_harness.dut import boards
from host_harness.netfault import attach

KINDS = budgets.JOURNEY_KINDS
MQTT_KINDS = ("mqtt", "button")  # journeys that need the broker (a button press is seen on MQTT)
PROBE_TIMEOUT = 2.0  # s: a broker given by URL must answer a TCP connect and an MQTT CONNECT within this
HEAPSIZE = re.compile(r"[1-9][0-9]*[kKmM]?")  # what `micropython -X heapsize=` takes (without its word unit)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # rfc2217://, socket://, labgrid:... : not a local path


class BadInput(ValueError):
    """Bad input: the message is one line naming the option, file or key."""


@dataclass
class Checked:
    """What ``run`` needs, taken from the checked options."""

    kinds: list[str]
    board_name: str
    board: dict[str, Any]
    budget: budgets.Budget
    warnings: list[str] = field(default_factory=list)

    @property
    def needs_mqtt(self) -> bool:
        return any(k in MQTT_KINDS for k in self.kinds)


def journeys(spec: str) -> list[str]:
    kinds = [k.strip() for k in spec.split(",")]
    if not any(kinds):
        raise BadInput(f"--journeys {spec!r}: no journey given; choose from {', '.join(KINDS)}")
    for k in kinds:
        if k not in KINDS:
            what = "an empty name" if not k else f"unknown journey {k!r}"
            raise BadInput(f"--journeys {spec!r}: {what}; choose from {', '.join(KINDS)}")
        if kinds.count(k) > 1:
            raise BadInput(f"--journeys {spec!r}: {k!r} given twice")
    return kinds


def at_least(option: str, value: float | None, low: float, strict: bool = False) -> None:
    if value is None:
        return
    if value < low or (strict and value == low) or value != value:
        raise BadInput(f"{option} {value:g}: must be {'more than' if strict else 'at least'} {low:g}")


def heapsize(value: str | None) -> None:
    if value is not None and not HEAPSIZE.fullmatch(value.strip()):
        raise BadInput(f"--heapsize {value!r}: not a size; give bytes with an optional k or m, e.g. 64k or 1m")


def output_file(option: str, path: str | None) -> None:
    """A file that will be written at the end of the run: its folder must exist now."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{option} {path}: is a folder; give a file name")
    _writable_folder(option, path, p.parent)
    if p.exists() and not os.access(p, os.W_OK):
        raise BadInput(f"{option} {path}: not writable")


def output_dir(option: str, path: str | None) -> None:
    """A folder that will be created (with its parents) and written at the end of the run."""
    if path is None:
        return
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise BadInput(f"{option} {path}: exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise BadInput(f"{option} {path}: folder not writable")
        return
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    _writable_folder(option, path, parent)


def _writable_folder(option: str, path: str, folder: Path) -> None:
    folder = folder if str(folder) else Path(".")
    if not folder.exists():
        raise BadInput(f"{option} {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise BadInput(f"{option} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"{option} {path}: cannot write in {folder}")


def tls(args: argparse.Namespace) -> None:
    given = [o for o in ("ca", "cert", "key") if getattr(args, o, None)]
    if not given:
        return
    url = args.broker
    if not url or url.strip().lower() in EMBEDDED_KINDS or not url.strip().lower().startswith("mqtts://"):
        shown = "the default broker" if not url else f"--broker {_shown_url(url)}"
        raise BadInput(f"--{given[0]} given with {shown}: TLS files need an mqtts:// broker")
    for o in given:
        p = Path(getattr(args, o))
        if not p.is_file():
            raise BadInput(f"--{o} {p}: no such file")
    if args.key and not args.cert:
        raise BadInput("--key given without --cert: a client key needs its certificate")
    try:
        ctx = ssl.create_default_context(cafile=args.ca)
    except (ssl.SSLError, ValueError) as e:
        raise BadInput(f"--ca {args.ca}: not a CA certificate (PEM): {e}") from None
    if args.cert:
        try:
            ctx.load_cert_chain(args.cert, args.key)
        except (ssl.SSLError, ValueError) as e:
            shown = f"--cert {args.cert}" + (f" / --key {args.key}" if args.key else "")
            raise BadInput(f"{shown}: not a certificate and its key (PEM): {e}") from None


def _shown_url(url: str) -> str:
    try:
        return parse_broker_url(url).redacted_url()
    except ValueError:
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def device_port(spec: str) -> None:
    """A serial device path must exist; a URL (rfc2217://, socket://, labgrid:...) is checked on opening."""
    if spec == "unix" or _SCHEME.match(spec) or os.path.exists(spec):
        return
    from serial.tools import list_ports

    found = sorted(p.device for p in list_ports.comports())
    hint = f"serial ports found: {', '.join(found)}" if found else "no serial ports found: is the board plugged in?"
    raise BadInput(f"--device {spec}: no such serial port ({hint})")


def board(args: argparse.Namespace) -> tuple[str, dict[str, Any], list[str]]:
    name = str(args.board or ("unix" if args.device == "unix" else "esp32-devkitc"))
    try:
        bdef = boards.load(name)
    except ValueError as e:
        raise BadInput(f"--board {name}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"--board {name}: cannot read it: {e}") from None
    except Exception as e:  # a board file that is not JSON
        raise BadInput(f"--board {name}: not a board definition (JSON): {e}") from None
    warnings = []
    if args.device == "unix" and bdef.get("platform", "unix") != "unix":
        warnings.append(
            f"--board {name} on the Unix port: the board's pins are not simulated; "
            "its pin numbers stand for the Unix port's simulated LED and button"
        )
    return name, bdef, warnings


def budget(args: argparse.Namespace, board_name: str, bdef: dict[str, Any]) -> budgets.Budget:
    if getattr(args, "no_budget", False):
        if args.budget:
            raise BadInput("--budget and --no-budget given together: choose one")
        return budgets.Budget("none (--no-budget): only lost and duplicated journeys fail the run")
    if not bdef.get("budget") and not args.budget:
        raise BadInput(
            f'--board {board_name}: has no latency budget (no "budget" key); give --budget FILE or --no-budget'
        )
    if bdef.get("budget"):
        try:
            budgets.load_file(budgets.BOARDS_DIR / str(bdef["budget"]))
        except ValueError as e:
            raise BadInput(f"--board {board_name}: its budget {e}") from None
    try:
        return budgets.for_board(bdef, args.budget, link=getattr(args, "link", None))
    except ValueError as e:
        raise BadInput(f"--budget {e}") from None


def link(args: argparse.Namespace) -> None:
    """--link: the Unix port, the harness's own Mosquitto, and the privileges to make a link."""
    name = getattr(args, "link", None)
    if not name:
        return
    if args.device != "unix":
        raise BadInput(f"--link {name}: puts the Unix-port device behind a link (--device unix); a board has its own")
    if args.broker and args.broker.strip().lower() not in (KIND_MOSQUITTO, KIND_MOSQUITTO_TUNED):
        raise BadInput(f"--link {name}: needs the harness's own Mosquitto (--broker mosquitto or mosquitto-tuned)")
    reason = attach.unavailable_reason()
    if reason:
        raise BadInput(f"--link {name}: {reason}")


def broker(args: argparse.Namespace) -> BrokerInfo | None:
    """A broker given by URL: parsed, then reached from here (TCP, then MQTT CONNECT) within 2 s."""
    url = args.broker
    if url is None or url.strip().lower() in EMBEDDED_KINDS:
        return None
    try:
        info = parse_broker_url(url)
    except ValueError as e:
        raise BadInput(f"--broker: {e}") from None
    probe_broker(info, args.ca, args.cert, args.key)
    return info


def probe_broker(info: BrokerInfo, ca: str | None = None, cert: str | None = None, key: str | None = None) -> None:
    from host_harness.link.mqtt_client import HostMqtt

    shown = f"--broker {info.redacted_url()}"
    try:
        with socket.create_connection(info.address, timeout=PROBE_TIMEOUT):
            pass
    except ConnectionRefusedError:
        raise BadInput(f"{shown}: connection refused") from None
    except socket.gaierror as e:
        raise BadInput(f"{shown}: cannot resolve host {info.host!r}: {e.strerror}") from None
    except TimeoutError:
        raise BadInput(f"{shown}: no answer to a TCP connect within {PROBE_TIMEOUT:g} s") from None
    except OSError as e:
        raise BadInput(f"{shown}: {e.strerror or e}") from None
    try:
        client = HostMqtt(info, "probe", ca_file=ca, cert_file=cert, key_file=key)
    except OSError as e:  # ssl.SSLError: a CA, certificate or key that does not load
        raise BadInput(f"{shown}: TLS files do not load: {e}") from None
    try:
        client.connect(timeout=PROBE_TIMEOUT).close()
    except ConnectionError as e:
        cause = e.__cause__
        why = str(cause if cause is not None else e)
        raise BadInput(f"{shown}: {'TLS handshake failed: ' if info.tls and cause else ''}{why}") from None
    except TimeoutError:
        raise BadInput(f"{shown}: no MQTT CONNACK within {PROBE_TIMEOUT:g} s: is it an MQTT broker?") from None


def common(args: argparse.Namespace) -> tuple[str, dict[str, Any], list[str]]:
    """Checks shared by ``run`` and ``sim``, but the broker's probe."""
    heapsize(args.heapsize)
    tls(args)
    if args.broker is not None and args.broker.strip().lower() not in EMBEDDED_KINDS:
        try:
            parse_broker_url(args.broker)
        except ValueError as e:
            raise BadInput(f"--broker: {e}") from None
    name, bdef, warnings = board(args)
    device_port(args.device)
    return name, bdef, warnings


def run_options(args: argparse.Namespace) -> Checked:
    """Everything ``run`` was given, before anything starts; warnings are printed."""
    kinds = journeys(args.journeys)
    at_least("--count", args.count, 1)
    at_least("--button-count", args.button_count, 1)
    at_least("--warmup", args.warmup, 0)
    at_least("--rate", args.rate, 0, strict=True)
    at_least("--timeout", args.timeout, 0, strict=True)
    output_file("--json", args.json)
    output_dir("--report", args.report)
    name, bdef, warnings = common(args)
    checked = Checked(kinds, name, bdef, budget(args, name, bdef), warnings)
    warn(warnings)
    bridge(args)
    broker(args)
    link(args)
    return checked


def bridge(args: argparse.Namespace) -> None:
    """``--bridge`` starts two mosquittos: it cannot use a broker given by URL or another kind."""
    if not getattr(args, "bridge", False):
        return
    if args.broker not in (None, "mosquitto", "mosquitto-tuned"):
        raise BadInput(
            f"--bridge starts a local mosquitto bridged to a cloud one; it cannot use --broker {args.broker} "
            "(give no --broker, or mosquitto / mosquitto-tuned)"
        )
    if any(getattr(args, k, None) for k in ("ca", "cert", "key")):
        raise BadInput("--bridge runs plain MQTT on loopback; --ca/--cert/--key do not apply")
    if getattr(args, "link", None):
        raise BadInput(f"--bridge and --link {args.link}: not together yet (the link reaches one broker)")
    if find_mosquitto() is None:
        raise BadInput("--bridge needs mosquitto, and no 'mosquitto' executable was found; install it")


def sim_options(args: argparse.Namespace) -> str:
    if args.device != "unix":
        raise BadInput(f"--device {args.device}: sim starts its own Unix-port device; watch a board with monitor")
    name, _bdef, warnings = common(args)
    warn(warnings)
    broker(args)
    return name


def warn(warnings: list[str]) -> None:
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr, flush=True)
