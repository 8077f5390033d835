"""Packet-level links: the device in its own network namespace, the real kernel TCP stack.

Topology (``TAG`` is random per link; addresses exist only on these veths)::

    lc-dev-TAG                 lc-mid-TAG (a router)               root namespace
    device eth0 10.231.K.6 --- md 10.231.K.5  |  mr 10.231.K.2 --- lcr-TAG 10.231.K.1 (broker)
                                   TUN "lcdelay" (delay), nft (loss, partition), tbf (rate)

The device talks to the broker's address on ``lcr-TAG``. Everything that
shapes the link lives in the middle namespace, on the far side of the
device's own interface: a lost or partitioned packet vanishes silently, as on
Wi-Fi, instead of failing a send on the device with a local error.

* loss: nft netdev ingress hooks on ``md`` and ``mr`` with ``numgen random``,
  so each direction loses ``loss_pct`` % of its packets;
* rate: ``tbf`` on both veths of the middle namespace;
* partition: an nft rule dropping everything on both ingress hooks;
* delay: netem when the kernel has it, else the project's TUN forwarder
  (``tundelay``) behind policy routing: every packet arriving on ``md`` or
  ``mr`` is routed into the TUN device, and what the forwarder writes back is
  routed on by the main table.

:class:`Link` is a context manager; everything it made (namespaces, veths,
tables, the forwarder) is removed on exit, also after an exception.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from . import packetlog
from .profiles import PROFILES, Profile

__all__ = ["PROFILES", "Link", "LinkError", "Profile", "profile", "unavailable_reason"]

OWNERS = Path("/run/lightctl-links")  # one file per live link: its tag, holding the owner's pid
DELAY_DEV = "lcdelay"
DEV_IF = "eth0"
NFT_TABLE = "lightctl"


class LinkError(RuntimeError):
    """A link could not be made or changed."""


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown link profile {name!r}; choose from {', '.join(PROFILES)}") from None


def unavailable_reason() -> str | None:
    """Why packet-level links cannot be made here (None when they can)."""
    if sys.platform != "linux":
        return "packet-level links need Linux network namespaces"
    if os.geteuid() != 0:
        return (
            "packet-level links need root (network namespaces, veth, nft, tbf, TUN): run as root, or inside "
            "'unshare -r -n -m' with a tmpfs mounted on /run, or without a link"
        )
    for tool, pkg in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"packet-level links need '{tool}' (install {pkg})"
    if not os.path.exists("/dev/net/tun"):
        return "packet-level links need /dev/net/tun (the tun kernel module)"
    return None


def _run(*cmd: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=20)
    if check and p.returncode != 0:
        err = (p.stderr or p.stdout).strip().splitlines()
        raise LinkError(f"{' '.join(cmd)}: {err[-1] if err else f'exit code {p.returncode}'}")
    return p


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """One link at a time picks its subnet and puts its address on: two
    processes making links at once (parallel test workers) could otherwise
    both see K free and both take it."""
    OWNERS.mkdir(parents=True, exist_ok=True)
    with open(OWNERS / ".subnet.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_subnet() -> int:
    """A K for 10.231.K.0/29 that no address or route of this namespace uses
    (called under _subnet_lock)."""
    used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route", "show").stdout
    for _ in range(64):
        k = secrets.randbelow(256)
        if f"10.231.{k}." not in used:
            return k
    raise LinkError("no free 10.231.K.0/29 subnet for a link")


def netem_available(ns: str, dev: str) -> bool:
    """Whether this kernel has netem (tried on a device of our own, then removed)."""
    p = _run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms", check=False)
    if p.returncode == 0:
        _run("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check=False)
        return True
    return False


def _remove_ns(ns: str) -> str:
    """Kill what runs inside ``ns`` (only processes of our own links live there) and delete it."""
    pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:  # SIGKILL has no completion event to wait on
        pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
        time.sleep(0.02)
    p = _run("ip", "netns", "del", ns, check=False)
    return p.stderr.strip() if p.returncode else ""


def sweep_stale() -> list[str]:
    """Remove the links of harness processes that died without tearing theirs down (SIGKILL).

    Each link records its owner's pid under OWNERS; a record whose process is gone
    names namespaces and a veth nobody will remove otherwise. Returns the tags swept.
    """
    swept: list[str] = []
    if not OWNERS.is_dir():
        return swept
    for rec in OWNERS.iterdir():
        if rec.name.startswith("."):
            continue  # the subnet lock, not a link
        try:
            os.kill(int(rec.read_text().strip()), 0)
            continue  # its owner is alive
        except PermissionError:
            continue  # alive, someone else's
        except (ProcessLookupError, ValueError):
            pass  # gone, or an unreadable record
        tag = rec.name
        names = _run("ip", "netns", "list", check=False).stdout
        for ns in (f"lc-dev-{tag}", f"lc-mid-{tag}"):
            if ns in names:
                _remove_ns(ns)
        if _run("ip", "link", "show", f"lcr-{tag}", check=False).returncode == 0:
            _run("ip", "link", "del", f"lcr-{tag}", check=False)
        rec.unlink(missing_ok=True)
        swept.append(tag)
    return swept


@dataclass
class Addresses:
    """Subnet ``10.231.k.0/24``: the broker side's /30 (.1 root, .2 middle) and
    the device side's /30 (.5 middle, .6 device)."""

    k: int
    broker: str = field(init=False)
    mid_root: str = field(init=False)
    mid_dev: str = field(init=False)
    device: str = field(init=False)
    device_net: str = field(init=False)

    def __post_init__(self) -> None:
        self.broker, self.mid_root, self.mid_dev, self.device = (self.ip(last) for last in (1, 2, 5, 6))
        self.device_net = str(ipaddress.ip_network(f"{self.ip(4)}/30"))

    def ip(self, last: int) -> str:
        return f"10.231.{self.k}.{last}"


class Link:
    """A device namespace joined to the root namespace through a shaping router."""

    def __init__(self, prof: Profile | str, seed: int | None = None, delay: str = "tun", log: bool = False) -> None:
        """``delay``: "tun" (the forwarder: the profile's quantiles exactly, order kept per flow)
        or "netem" (the kernel's, when it has it: a paretonormal fit of the median and p90).
        ``log``: the forwarder records each packet carrying data (read through ``packets``)."""
        if delay not in ("tun", "netem"):
            raise ValueError(f"delay must be 'tun' or 'netem', not {delay!r}")
        self.delay = delay
        self.profile = profile(prof) if isinstance(prof, str) else prof
        self.tag = secrets.token_hex(2)
        self.dev_ns = f"lc-dev-{self.tag}"
        self.mid_ns = f"lc-mid-{self.tag}"
        self.root_if = f"lcr-{self.tag}"
        self.addr = Addresses(0)
        self.seed = seed if seed is not None else secrets.randbelow(2**31)
        self.delay_by = "none"
        self.loss_pct = 0.0
        self.partitioned = False
        self._forwarder: subprocess.Popen[str] | None = None
        self._made: list[str] = []
        self.broker_port = 0  # a listener on broker_ip, when one was added (see attach)
        self.log = log and delay == "tun"
        self.packets: packetlog.Reader | None = None  # with log and a profile that delays: what the forwarder did

    # -- facts ------------------------------------------------------------------
    @property
    def broker_ip(self) -> str:
        return self.addr.broker

    @property
    def device_ip(self) -> str:
        return self.addr.device

    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the device's namespace."""
        return ["ip", "netns", "exec", self.dev_ns]

    def describe(self) -> str:
        p = self.profile
        parts = [f"link {p.name} ({p.description})", f"device {self.device_ip} in {self.dev_ns}"]
        parts.append(f"broker side {self.broker_ip}")
        if p.rtt_ms or p.wake_ms:
            parts.append(f"delay by {self.delay_by}")
        return ", ".join(parts)

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> Self:
        if not self._made:  # open_link() hands over a link already up
            self.up()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.down()

    def up(self) -> Self:
        reason = unavailable_reason()
        if reason:
            raise LinkError(reason)
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        sweep_stale()
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / self.tag).write_text(str(os.getpid()))
        dev, mid = self.dev_ns, self.mid_ns
        for ns in (dev, mid):
            _run("ip", "netns", "add", ns)
            self._made.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", "mr", "netns", mid)
        self._made.append(self.root_if)
        _run("ip", "-n", mid, "link", "add", "md", "type", "veth", "peer", "name", DEV_IF, "netns", dev)
        with _subnet_lock():
            self.addr = a = Addresses(_free_subnet())
            _run("ip", "addr", "add", f"{a.broker}/30", "dev", self.root_if)
        _run("ip", "link", "set", self.root_if, "up")
        _run("ip", "route", "add", a.device_net, "via", a.mid_root, "dev", self.root_if)
        _run("ip", "-n", mid, "addr", "add", f"{a.mid_root}/30", "dev", "mr")
        _run("ip", "-n", mid, "addr", "add", f"{a.mid_dev}/30", "dev", "md")
        _run("ip", "-n", dev, "addr", "add", f"{a.device}/30", "dev", DEV_IF)
        for ns, ifs in ((mid, ("mr", "md")), (dev, (DEV_IF,))):
            for i in ifs:
                _run("ip", "-n", ns, "link", "set", i, "up")
        _run("ip", "-n", dev, "route", "add", "default", "via", a.mid_dev)
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.all.rp_filter=0"):
            _run("ip", "netns", "exec", mid, "sysctl", "-qw", key)
        _run("ip", "netns", "exec", mid, "nft", "-f", "-", stdin=self._nft_ruleset())
        p = self.profile
        if p.loss_pct:
            self.set_loss(p.loss_pct)
        if p.rate_kbit:
            for i in ("md", "mr"):
                burst = max(1600, p.rate_kbit * 1000 // 8 // 100)  # 10 ms worth, at least one frame
                _run("tc", "-n", mid, "qdisc", "add", "dev", i, "root", "tbf", "rate", f"{p.rate_kbit}kbit",
                     "burst", str(burst), "latency", "200ms")  # fmt: skip
        if p.rtt_ms or p.wake_ms:
            self._delay()

    def _nft_ruleset(self) -> str:
        chains = []
        for i in ("md", "mr"):
            chains.append(
                f'  chain in_{i} {{\n    type filter hook ingress device "{i}" priority 0; policy accept;\n'
                f"    jump shape\n  }}"
            )
        return f"table netdev {NFT_TABLE} {{\n  chain shape {{\n  }}\n" + "\n".join(chains) + "\n}\n"

    def _shape_rules(self) -> None:
        rules = []
        if self.partitioned:
            rules.append("drop")
        elif self.loss_pct > 0:
            # numgen's modulus in parts per 10 000, so fractional percentages work.
            rules.append(f"numgen random mod 10000 < {round(self.loss_pct * 100)} drop")
        text = f"flush chain netdev {NFT_TABLE} shape\n" + "".join(
            f"add rule netdev {NFT_TABLE} shape {r}\n" for r in rules
        )
        _run("ip", "netns", "exec", self.mid_ns, "nft", "-f", "-", stdin=text)

    def set_loss(self, pct: float) -> None:
        """Lose ``pct`` % of the packets in each direction, at random, on the far side."""
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"loss must be 0..100 %, not {pct}")
        self.loss_pct = pct
        self._shape_rules()

    def partition(self) -> None:
        """Drop every packet both ways, silently (the device's own interface stays up)."""
        self.partitioned = True
        self._shape_rules()

    def heal(self) -> None:
        self.partitioned = False
        self._shape_rules()

    def _delay(self) -> None:
        p, mid = self.profile, self.mid_ns
        if self.delay == "netem":
            if p.wake_ms is not None or p.rtt_ms is None or not netem_available(mid, "md"):
                raise LinkError(f"netem cannot give link {p.name}: this kernel has no netem, or the profile sleeps")
            self._netem()
            return
        _run("ip", "-n", mid, "tuntap", "add", "dev", DELAY_DEV, "mode", "tun")
        _run("ip", "-n", mid, "link", "set", DELAY_DEV, "up")
        config = {
            "dev": DELAY_DEV,
            "device_net": self.addr.device_net,
            "rtt": p.rtt_ms,
            "wake_ms": p.wake_ms,
            "seed": self.seed,
            "parent": os.getpid(),
        }
        if self.log:
            fd, path = tempfile.mkstemp(prefix="lightctl-link-", suffix=".packets")
            os.close(fd)
            config["log"] = path
            self.packets = packetlog.Reader(Path(path))
        self._forwarder = subprocess.Popen(
            [*["ip", "netns", "exec", mid], sys.executable, "-m", "host_harness.netfault.tundelay", json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._wait_ready(10.0)
        # Policy routing: whatever arrives on either veth goes through the forwarder.
        _run("ip", "-n", mid, "route", "add", "default", "dev", DELAY_DEV, "table", "100")
        for i in ("md", "mr"):
            _run("ip", "-n", mid, "rule", "add", "iif", i, "lookup", "100", "priority", "100")
        self.delay_by = "TUN forwarder (no netem in this kernel)" if p.wake_ms is None else "TUN forwarder"

    def _netem(self) -> None:
        """netem's own delay (half the round trip each way, with jitter)."""
        p = self.profile
        assert p.rtt_ms is not None
        med = dict(p.rtt_ms)[0.5] / 2.0
        jitter = max(0.1, (dict(p.rtt_ms)[0.9] - dict(p.rtt_ms)[0.5]) / 2.0)
        for i in ("md", "mr"):
            _run("tc", "-n", self.mid_ns, "qdisc", "add", "dev", i, "root", "netem", "delay", f"{med:.2f}ms",
                 f"{jitter:.2f}ms", "distribution", "paretonormal")  # fmt: skip
        self.delay_by = "netem"

    def _wait_ready(self, timeout: float) -> None:
        proc = self._forwarder
        assert proc is not None and proc.stdout is not None
        r, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if r else ""
        if line.strip() != "ready":
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise LinkError(f"the TUN delay forwarder did not report ready within {timeout:g} s: {line!r} {err[-300:]}")

    def down(self) -> None:
        """Remove everything this link made; stray processes in its namespaces are killed."""
        errors: list[str] = []
        if self._forwarder is not None:
            self._forwarder.terminate()
            try:
                self._forwarder.wait(5)
            except subprocess.TimeoutExpired:
                self._forwarder.kill()
                self._forwarder.wait(5)
            for f in (self._forwarder.stdout, self._forwarder.stderr):
                if f:
                    f.close()
            self._forwarder = None
        for ns in (self.dev_ns, self.mid_ns):
            if ns in self._made and (err := _remove_ns(ns)):
                errors.append(err)
        # Deleting the middle namespace took the veth's peer, and so the veth, with it; else:
        if self.root_if in self._made and _run("ip", "link", "show", self.root_if, check=False).returncode == 0:
            _run("ip", "link", "del", self.root_if, check=False)
        self._made.clear()
        if self.packets is not None:
            self.packets.path.unlink(missing_ok=True)
            self.packets = None
        (OWNERS / self.tag).unlink(missing_ok=True)
        if errors:
            raise LinkError("; ".join(errors))
