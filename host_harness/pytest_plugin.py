"""pytest plugin: a broker, a device under test and a journey helper.

Options (all prefixed, so they cannot clash with other plugins' --port/--board):
  --lightctl-device unix|URL   the Unix port (default), a board by pyserial URL or labgrid:PLACE;
                               repeat it for several boards: under pytest-xdist (-n N)
                               worker gwK uses device K mod count, else the first
  --lightctl-board NAME        board definition from boards/ (default: unix / esp32-devkitc)
  --lightctl-broker URL        mqtt://user:pass@host:port, or mosquitto / amqtt to start one
  --lightctl-micropython PATH  a Unix-port executable (default: the project's own)
  --lightctl-heapsize SIZE     Unix-port heap (default 80k)
  --lightctl-budget FILE       a latency budget TOML laid over the board's, limit by limit
  --lightctl-timeout SECONDS   wait for each confirmation (default 5)
  --lightctl-taps              tap the command and state at the broker: the ``journey``
                               fixture's MQTT hops are split there (measure.taps)
  --lightctl-deploy            deploy this checkout's firmware to a board running other firmware
                               (its config kept) instead of refusing the run
  --lightctl-log-dir DIR       each test's device log (default: device-logs/ under pytest's basetemp)
  --lightctl-lg-coordinator H:P  labgrid coordinator for labgrid:PLACE (default: labgrid's own
                               --lg-coordinator when its plugin is loaded, else $LG_COORDINATOR);
                               a place is acquired on first use and released when pytest ends

  --lightctl-link NAME         put the Unix-port device behind a packet-level link (root;
                               lan, wifi-near, wifi-wall, wifi-lossy, wifi-powersave);
                               without the privileges its tests are skipped with the reason

A bad board or budget file is one usage error at start-up (exit code 4), and
so is a board running other firmware than this checkout's (without --lightctl-deploy).

Fixtures: ``lightctl`` (the options), ``broker`` (session), ``device``,
``device_factory``, ``mqtt`` (a connected host client), ``journey``, ``lightctl_link``,
``device_clock``, ``latency_budget``, ``assert_budget`` and ``devices`` (a
measure.fleet.Fleet of N devices on one host client).
Markers say what a test needs of the device (see ``caps``): ``needs_process``,
``needs_config``, ``needs_sim_pin``, ``needs_sense``, ``hardware``; a test the
device cannot serve is skipped with the reason. ``unix_only`` is all of the first three.
``devices(n)``: how many devices the ``devices`` fixture holds (default 2).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from host_harness.broker.info import parse_broker_url
from host_harness.broker.running import RunningBroker
from host_harness.broker.start import start_broker
from host_harness.core import budgets
from host_harness.core.assertions import assert_within_budget
from host_harness.core.budgets import Budget, Verdict
from host_harness.core.diagnose import batching
from host_harness.core.hops import ClockMap
from host_harness.core.results import JourneyRun
from host_harness.dut import boards, labgrid_place
from host_harness.dut import caps as dut_caps
from host_harness.dut.device import Device, open_device
from host_harness.dut.fleet import group_name, start_unix_devices
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE
from host_harness.link.mqtt_client import HostMqtt
from host_harness.link.serial_link import SerialLink
from host_harness.measure.clocksync import clock_for
from host_harness.measure.fleet import Fleet
from host_harness.measure.journeys import Journeys
from host_harness.measure.taps import TapPoint, Taps
from host_harness.netfault import attach
from host_harness.netfault.links import Link


@dataclass
class LightctlOptions:
    device: str
    board: str
    broker: str | None
    micropython: str | None
    heapsize: str | None
    timeout: float
    budget: str | None = None
    link: str | None = None
    taps: bool = False
    devices: list[str] = field(default_factory=list)  # every --device given; ``device`` is this worker's
    deploy: bool = False
    log_dir: str | None = None

    @property
    def unix(self) -> bool:
        return self.device == "unix"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("lightctl", "lightctl device under test")
    g.addoption(
        "--lightctl-device",
        action="append",
        default=None,
        help="'unix' (spawn the Unix port, default), a pyserial URL or labgrid:PLACE; repeat for several boards",
    )
    g.addoption(
        "--lightctl-board", default=None, help="board name from boards/ (default: unix, or esp32-devkitc on a URL)"
    )
    g.addoption("--lightctl-broker", default=None, help="mqtt://[user:pass@]host[:port], or mosquitto / amqtt")
    g.addoption("--lightctl-micropython", default=None, help="MicroPython Unix-port executable")
    g.addoption(
        "--lightctl-heapsize", default=DEFAULT_HEAPSIZE, help=f"Unix-port heap size (default {DEFAULT_HEAPSIZE})"
    )
    g.addoption("--lightctl-budget", default=None, help="a latency budget TOML laid over the board's, limit by limit")
    g.addoption("--lightctl-link", default=None, metavar="NAME", help="put the device behind a link profile (root)")
    g.addoption("--lightctl-lg-coordinator", default=None, help=labgrid_place.COORDINATOR_HELP)
    g.addoption("--lightctl-timeout", type=float, default=5.0, help="seconds to wait for each confirmation")
    g.addoption(
        "--lightctl-taps", action="store_true", help="split the MQTT hops at the broker with a tap (journey fixture)"
    )
    g.addoption(
        "--lightctl-deploy",
        action="store_true",
        default=False,
        help="deploy this checkout's firmware to a board running other firmware (else the run is refused)",
    )
    g.addoption("--lightctl-log-dir", default=None, help="folder for each test's device log (default: under basetemp)")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in dut_caps.MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.addinivalue_line("markers", "devices(n): the devices fixture holds n devices (default 2)")
    # ours, else labgrid's own plugin's --lg-coordinator (installed with labgrid), else $LG_COORDINATOR
    coordinator = config.getoption("lightctl_lg_coordinator") or getattr(config.option, "lg_coordinator", None)
    labgrid_place.set_coordinator(coordinator)
    _check_options(config)
    _one_worker_per_board(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    labgrid_place.release_all()  # the places this process acquired (atexit would too, later)


CAPPED_KEY = pytest.StashKey[str]()


def _one_worker_per_board(config: pytest.Config) -> None:
    """Boards are not shared: under pytest-xdist, more workers than boards are cut to one per board."""
    o = _options(config)
    n = getattr(config.option, "numprocesses", None)
    if o.unix or hasattr(config, "workerinput") or not isinstance(n, int) or n <= len(o.devices):
        return
    config.option.numprocesses = len(o.devices)
    config.option.tx = ["popen"] * len(o.devices)  # what xdist made of -n (its cmdline_main ran first)
    config.stash[CAPPED_KEY] = f"-n {n} cut to -n {len(o.devices)}: one xdist worker per board"


def _check_options(config: pytest.Config) -> None:
    """A bad board or budget file is one usage error for the whole run, not an error per test."""
    o = _options(config)
    try:
        bdef = boards.load(o.board)
    except ValueError as e:
        raise pytest.UsageError(f"--lightctl-board {o.board}: {e}") from None
    if o.link is not None:
        try:
            attach.profile(o.link)
        except ValueError as e:
            raise pytest.UsageError(f"--lightctl-link: {e}") from None
    if o.budget is not None:
        try:
            budgets.for_board(bdef, o.budget, link=o.link)
        except ValueError as e:
            raise pytest.UsageError(f"--lightctl-budget {e}") from None


def _pick(devices: list[str]) -> str:
    """This worker's device: gwK takes device K mod count; no xdist: the first."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    k = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return devices[k % len(devices)]


def _options(config: pytest.Config) -> LightctlOptions:
    devices = [str(d) for d in (config.getoption("--lightctl-device") or ["unix"])]
    device = _pick(devices)
    return LightctlOptions(
        device=device,
        board=str(config.getoption("--lightctl-board") or ("unix" if device == "unix" else "esp32-devkitc")),
        broker=config.getoption("--lightctl-broker"),
        micropython=config.getoption("--lightctl-micropython"),
        heapsize=config.getoption("--lightctl-heapsize"),
        timeout=float(config.getoption("--lightctl-timeout")),
        budget=config.getoption("--lightctl-budget"),
        link=config.getoption("--lightctl-link"),
        taps=bool(config.getoption("--lightctl-taps")),
        devices=devices,
        deploy=bool(config.getoption("--lightctl-deploy")),
        log_dir=config.getoption("--lightctl-log-dir"),
    )


def pytest_report_header(config: pytest.Config) -> str:
    o = _options(config)
    dev = o.device + (f" (of {', '.join(o.devices)})" if len(o.devices) > 1 else "")
    broker = o.broker or "mosquitto if installed, else amqtt"
    if "://" in broker:
        try:
            broker = parse_broker_url(broker).redacted_url()
        except ValueError:
            broker = "(unparseable URL)"
    return f"lightctl: device {dev}, board {o.board}, broker {broker}" + (f", link {o.link}" if o.link else "")


CAPS_KEY = pytest.StashKey[dut_caps.Caps]()


def _xdist_controller(config: pytest.Config) -> bool:
    return getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    """A board is asked what it is once: its firmware's build id must be this checkout's.

    Under pytest-xdist the controller checks (and deploys to) every board, so a refusal
    is one usage error; each worker then asks its own board what it offers.
    """
    config = session.config
    if CAPPED_KEY in config.stash:
        _say(config)(f"lightctl: {config.stash[CAPPED_KEY]}")
    _warn_path_taken_for_rootdir(config)
    o = _options(config)
    say = _say(config)
    try:
        if _xdist_controller(config):
            for spec in dict.fromkeys(o.devices):
                if spec != "unix":
                    dut_caps.check_firmware(spec, o.board, o.deploy, say)
            return
        if o.unix:
            config.stash[CAPS_KEY] = dut_caps.UNIX
            return
        if hasattr(config, "workerinput"):
            info = dut_caps.ask_info(o.device, o.board)  # checked by the controller
        else:
            info = dut_caps.check_firmware(o.device, o.board, o.deploy, say)
    except dut_caps.BoardError as e:
        raise pytest.UsageError(str(e)) from None
    caps = dut_caps.for_board(o.device, boards.load(o.board), info)
    config.stash[CAPS_KEY] = caps
    say(f"lightctl: {caps.describe()}")


def _warn_path_taken_for_rootdir(config: pytest.Config) -> None:
    """pytest picks its rootdir before plugins load, so ``--lightctl-device /dev/ttyUSB0``
    looks like a test path to it: its folder becomes the rootdir, and the project's
    ini file (markers, addopts, testpaths) is not read. ``--lightctl-device=/dev/ttyUSB0`` is not."""
    if config.inipath is not None or hasattr(config, "workerinput"):
        return
    o = _options(config)
    for opt, value in [*(("--lightctl-device", d) for d in o.devices), ("--lightctl-log-dir", o.log_dir)]:
        if value and os.path.exists(value) and os.path.dirname(os.path.abspath(value)).startswith(str(config.rootpath)):
            _say(config)(
                f"lightctl: warning: pytest took {opt} {value} for a test path (rootdir {config.rootpath}, "
                f"no ini file read); write {opt}={value}"
            )
            return


def _say(config: pytest.Config) -> Callable[[str], None]:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    return tr.write_line if tr is not None else print


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    caps = config.stash.get(CAPS_KEY, None)
    if caps is None:
        return
    for item in items:
        why = caps.missing([m.name for m in item.iter_markers()])
        if why:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def lightctl(pytestconfig: pytest.Config) -> LightctlOptions:
    return _options(pytestconfig)


@pytest.fixture(scope="session")
def lightctl_link(lightctl: LightctlOptions) -> Iterator[Link | None]:
    """The packet-level link the device sits behind (``--lightctl-link``), or None."""
    if not lightctl.link:
        yield None
        return
    reason = attach.unavailable_reason()
    if reason:
        pytest.skip(f"--lightctl-link {lightctl.link}: {reason}")
    with attach.open_link(lightctl.link, log=True) as link:  # its packet record: see assert_budget
        yield link


@pytest.fixture(scope="session")
def broker(
    lightctl: LightctlOptions, lightctl_link: Link | None, pytestconfig: pytest.Config
) -> Iterator[RunningBroker]:
    b = start_broker(lightctl.broker, **attach.broker_options(lightctl_link, lightctl.broker))
    tr = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"lightctl broker: {b.describe()}")
    try:
        yield b
    finally:
        b.stop()


DeviceFactory = Callable[..., Device]


def _log_path(lightctl: LightctlOptions, request: pytest.FixtureRequest, tmp: pytest.TempPathFactory) -> str:
    root = os.path.abspath(lightctl.log_dir) if lightctl.log_dir else str(tmp.getbasetemp() / "device-logs")
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", request.node.nodeid).strip("_")[:200]
    os.makedirs(root, exist_ok=True)
    return os.path.join(root, f"{name}.log")


class DeviceLog:
    """Every serial line of a test's devices, each way, with the host's wall-clock time of its arrival."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed by the fixture)
        self._ns0, self._wall0 = time.monotonic_ns(), time.time()

    def _stamp(self, ns: int) -> str:
        t = self._wall0 + (ns - self._ns0) / 1e9
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1e6) % 1000000:06d}"

    def attach(self, link: SerialLink, label: str) -> None:
        """Log the link's lines from now on (before the device's boot is waited for)."""

        def got(ns: int, noise: str, data: dict[str, Any] | None) -> None:
            text = noise + (json.dumps(data, separators=(",", ":")) if data is not None else "")
            self.file.write(f"{self._stamp(ns)} {label} < {text}\n")

        def sent(ns: int, data: bytes) -> None:
            text = data.decode("utf-8", "replace").rstrip("\n")
            self.file.write(f"{self._stamp(ns)} {label} > {text if text.isprintable() else repr(data)}\n")

        link.line_listeners.append(got)
        link.sent_listeners.append(sent)
        self.file.write(f"{self._stamp(time.monotonic_ns())} {label} = {link.url}\n")

    def close(self) -> None:
        self.file.close()


@pytest.fixture
def device_factory(
    lightctl: LightctlOptions,
    broker: RunningBroker,
    lightctl_link: Link | None,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DeviceFactory]:
    """Start more devices (Unix port), e.g. with another broker or keepalive; on a board, attach to it.

    Every device's serial lines go to the test's device log (a ``device_log``
    JUnit property names the file).
    """
    made: list[Device] = []
    dlog: DeviceLog | None = None

    def make(**kw: Any) -> Device:
        nonlocal dlog
        spec = kw.pop("spec", lightctl.device)
        kw.setdefault("board", lightctl.board)
        if spec == "unix":
            if lightctl_link is not None and "broker" not in kw:
                kw["broker"] = attach.device_broker(lightctl_link, broker)
                kw.setdefault("prefix", lightctl_link.prefix())
            kw.setdefault("broker", broker.info)
            kw.setdefault("micropython", lightctl.micropython)
            kw.setdefault("heapsize", lightctl.heapsize)
        if dlog is None:
            dlog = DeviceLog(_log_path(lightctl, request, tmp_path_factory))
            request.node.user_properties.append(("device_log", dlog.path))
        label = f"dev{len(made) + 1}"
        log = dlog
        # a board refuses what it cannot honour (config, device id ...); the boot's lines are logged too
        d = open_device(spec, on_link=lambda link: log.attach(link, label), **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
    if dlog is not None:
        dlog.close()


@pytest.fixture
def device(device_factory: DeviceFactory) -> Device:
    """The device under test, booted and answering on its serial link."""
    return device_factory()


@pytest.fixture
def mqtt(broker: RunningBroker) -> Iterator[HostMqtt]:
    c = HostMqtt(broker.info, "test").connect()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def latency_budget(lightctl: LightctlOptions) -> Budget:
    """The board's latency budget (boards/*.budget.toml), or --lightctl-budget FILE over it."""
    return budgets.for_board(boards.load(lightctl.board), lightctl.budget, link=lightctl.link)


@pytest.fixture
def device_clock(device: Device, mqtt: HostMqtt) -> ClockMap:
    """Maps the device's ticks onto the host clock (clock sync, or the Unix port's truth)."""
    return clock_for(device, mqtt)[0]


@pytest.fixture
def assert_budget(
    latency_budget: Budget, request: pytest.FixtureRequest, lightctl_link: Link | None
) -> Callable[..., Verdict]:
    """``assert_budget(run)``: fails with a waterfall naming the hop; records figures as JUnit properties.

    The failure shows the waterfall, not the harness's frames (AssertionError, so
    ``pytest.raises(AssertionError)`` still catches it). Figures go to the test's
    ``user_properties``: the ``<properties>`` of its ``<testcase>`` in ``--junitxml``
    (what ``record_property`` does, without its warning under the default xunit2).
    Behind a link (``--lightctl-link``) the link's packet record is read too: commands the
    broker sent together are a property (``mqtt.sent_together``) and, in a broken budget,
    a diagnosis with its fix.
    """

    def record(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    def check(run: JourneyRun, budget: Budget | None = None) -> Verdict:
        __tracebackhide__ = True
        also: list[str] = []
        t = attach.together(lightctl_link, [run]) if lightctl_link is not None else None
        if t is not None:
            record(f"{run.kind}.sent_together", t.shared)
            d = batching(*t)
            if d is not None:
                also.append(d.line())
        return assert_within_budget(run, budget or latency_budget, record, also)

    return check


@pytest.fixture
def journey(
    device: Device, mqtt: HostMqtt, lightctl: LightctlOptions, lightctl_link: Link | None, broker: RunningBroker
) -> Iterator[Journeys]:
    """Journeys against ``device``: ``via_mqtt``, ``via_serial``, ``button``; with ``--lightctl-taps``
    their MQTT hops are split at the broker."""
    device.wait_mqtt()
    if lightctl_link is not None:
        attach.wait_across(device, mqtt)
    js = Journeys(device, mqtt, timeout=lightctl.timeout)
    if not lightctl.taps:
        yield js
        return
    js.taps = Taps([TapPoint("broker", broker.info)], lambda info, name: HostMqtt(info, name)).connect()
    try:
        js.taps.on(device.base)
        yield js
    finally:
        js.taps.close()


@pytest.fixture
def devices(request: pytest.FixtureRequest, lightctl: LightctlOptions, broker: RunningBroker) -> Iterator[Fleet]:
    """N devices and one host MQTT client serving them all (a measure.fleet.Fleet).

    N comes from ``@pytest.mark.devices(n)`` (default 2). On the Unix port, N
    fresh devices in a group of their own; against boards, N of this worker's
    ``--lightctl-device`` values (under xdist worker K of W takes every W-th,
    from the K-th), deployed with ``"groups": ["lightctl-test"]``; a test
    needing more than the worker has is skipped.
    """
    m = request.node.get_closest_marker("devices")
    n = int(m.args[0]) if m and m.args else 2
    if lightctl.unix:
        group = group_name()
        devs = start_unix_devices(
            n, broker.info, lightctl.board, group, lightctl.micropython, lightctl.heapsize, progress=False
        )
    else:
        mine = _worker_set(lightctl.devices)
        if len(mine) < n:
            pytest.skip(f"needs {n} devices; this worker has {len(mine)} ({', '.join(mine)})")
        group = BOARD_GROUP
        devs = []
        try:
            for url in mine[:n]:
                devs.append(open_device(url, lightctl.board))  # a board runs the config deployed to it
        except BaseException:
            for d in devs:
                d.close()
            raise
    try:
        fleet = Fleet(devs, broker.info, group=group, timeout=lightctl.timeout)
    except BaseException:
        for d in devs:
            d.close()
        raise
    try:
        yield fleet
    finally:
        fleet.close()
        for d in devs:
            d.close()


BOARD_GROUP = "lightctl-test"  # the group boards are deployed into for the devices fixture


def _worker_set(devices: list[str]) -> list[str]:
    """This worker's devices: worker K of W takes devices K, K+W, K+2W...; no xdist: all."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    k = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return devices[k % max(1, count) :: max(1, count)]
