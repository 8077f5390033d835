"""Where a broker is and how to log in: BrokerInfo and broker URLs (credentials kept out of displays)."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import quote, unquote, urlsplit

KIND_EXTERNAL = "external"
KIND_MOSQUITTO = "mosquitto"
KIND_MOSQUITTO_TUNED = "mosquitto-tuned"
KIND_AMQTT = "amqtt"
#: Values of ``url``/``prefer`` that select a broker started by the harness.
#: ``mosquitto`` runs with Mosquitto's stock settings (what users run);
#: ``mosquitto-tuned`` adds ``set_tcp_nodelay true``.
EMBEDDED_KINDS = (KIND_MOSQUITTO, KIND_MOSQUITTO_TUNED, KIND_AMQTT)
LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}

# --------------------------------------------------------------------------
# BrokerInfo and URL parsing
# --------------------------------------------------------------------------


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _build_url(scheme: str, host: str, port: int, username: str | None, password: str | None, *, redact: bool) -> str:
    userinfo = ""
    if username is not None:
        userinfo = quote(username, safe="")
        if password is not None:
            userinfo += ":" + ("***" if redact else quote(password, safe=""))
        userinfo += "@"
    return f"{scheme}://{userinfo}{_format_host(host)}:{port}"


_RAW_PASSWORD_RE = re.compile(r"^(?P<head>[^:/?#]*://[^@/?#:]*:)[^@]*@")


def _redact_raw(url: str) -> str:
    """Best-effort password redaction for a URL that may not even parse."""
    return _RAW_PASSWORD_RE.sub(r"\g<head>***@", url.strip())


@dataclasses.dataclass(frozen=True, repr=False)
class BrokerInfo:
    """How to reach a broker.

    ``url`` is the normalised connect URL and *includes the password* when
    there is one; ``repr()``/``str()`` and :meth:`redacted_url` never do.
    """

    kind: str
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    url: str

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, e.g. for ``socket.create_connection``."""
        return (self.host, self.port)

    @property
    def embedded(self) -> bool:
        """True when the harness started (and owns) this broker."""
        return self.kind != KIND_EXTERNAL

    def redacted_url(self) -> str:
        """The URL with the password (if any) replaced by ``***``."""
        return _build_url(self.scheme, self.host, self.port, self.username, self.password, redact=True)

    def __str__(self) -> str:
        return self.redacted_url()

    def __repr__(self) -> str:
        password = None if self.password is None else "***"
        return (
            f"BrokerInfo(kind={self.kind!r}, host={self.host!r}, port={self.port!r}, "
            f"username={self.username!r}, password={password!r}, tls={self.tls!r}, "
            f"url={self.redacted_url()!r})"
        )

    @classmethod
    def local(
        cls,
        kind: str,
        port: int,
        host: str = LOOPBACK,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
    ) -> BrokerInfo:
        """Info for a broker started by the harness (anonymous plain TCP unless told)."""
        return cls.with_url(kind, host, port, username, password, tls)

    @classmethod
    def with_url(
        cls, kind: str, host: str, port: int, username: str | None, password: str | None, tls: bool
    ) -> BrokerInfo:
        """Info whose ``url`` is built from the rest."""
        url = _build_url("mqtts" if tls else "mqtt", host, port, username, password, redact=False)
        return cls(kind, host, port, username, password, tls, url)


def parse_broker_url(url: str) -> BrokerInfo:
    """Parse ``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...``.

    The default port is 1883 for ``mqtt`` and 8883 for ``mqtts``.  User name
    and password are percent-decoded (encode ``@ : / # ?`` in them).  A single
    trailing ``/`` is tolerated; any other path, query or fragment is an
    error.  Raises :class:`ValueError` with a message that never contains the
    password.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("broker URL is empty; expected mqtt://[user:pass@]host[:port] or mqtts://...")
    raw = url.strip()
    shown = _redact_raw(raw)
    if "://" not in raw:
        raise ValueError(
            f"invalid broker URL {shown!r}: expected mqtt://[user:pass@]host[:port] or mqtts://... "
            f"(or one of {', '.join(EMBEDDED_KINDS)} to start a local broker)"
        )
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        raise ValueError(f"invalid broker URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {parts.scheme!r} in broker URL {shown!r}: expected mqtt:// or mqtts://")
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {shown!r} has no host name")
    try:
        explicit_port = parts.port
    except ValueError:
        explicit_port = 0
    if explicit_port is None:
        port = DEFAULT_PORTS[scheme]
    elif 1 <= explicit_port <= 65535:
        port = explicit_port
    else:
        port_text = parts.netloc.rpartition(":")[2]
        raise ValueError(f"invalid port {port_text!r} in broker URL {shown!r}: must be an integer 1-65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"broker URL {shown!r} has an unexpected path, query or fragment; "
            "percent-encode '/', '?' and '#' in the user name or password"
        )
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    if password is not None and not username:
        raise ValueError(f"broker URL {shown!r} has a password but no user name")
    return BrokerInfo.with_url(KIND_EXTERNAL, host, port, username, password, tls=scheme == "mqtts")
