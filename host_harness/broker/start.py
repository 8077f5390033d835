"""start_broker: an external broker by URL, or mosquitto, or amqtt."""

from __future__ import annotations

from typing import Any

from host_harness.broker.amqtt import AmqttBroker
from host_harness.broker.info import EMBEDDED_KINDS, KIND_AMQTT, KIND_MOSQUITTO, KIND_MOSQUITTO_TUNED, parse_broker_url
from host_harness.broker.mosquitto import MOSQUITTO_EXTRA_DIRS, MosquittoBroker, find_mosquitto
from host_harness.broker.running import ExternalBroker, RunningBroker


def start_broker(
    url: str | None = None,
    *,
    prefer: str | None = None,
    mosquitto_path: str | None = None,
    **mosquitto_options: Any,
) -> RunningBroker:
    """Give the harness a broker.

    * ``url`` = ``mqtt://...`` / ``mqtts://...``: use that external broker
      (nothing is started; ``stop()`` does nothing).
    * ``url`` (or ``prefer``) = ``"mosquitto"`` / ``"mosquitto-tuned"`` /
      ``"amqtt"``: start that kind. ``mosquitto`` runs with Mosquitto's stock
      settings, as users run it; ``mosquitto-tuned`` adds ``set_tcp_nodelay true``.
    * otherwise: stock mosquitto if it can be found (``mosquitto_path`` or the
      ``PATH``/sbin directories), else the embedded amqtt broker.

    ``mosquitto_options`` (``extra_config``, ``tls``, ``username``,
    ``password``, ``allow_anonymous``; see :class:`MosquittoBroker`) need
    mosquitto: a broker with TLS, a password file or an ACL.

    Raises ValueError for bad arguments, RuntimeError if a broker cannot be
    started (or a forced mosquitto cannot be found).
    """
    if mosquitto_options:
        chosen = (prefer or url or KIND_MOSQUITTO).strip().lower()
        if chosen not in (KIND_MOSQUITTO, KIND_MOSQUITTO_TUNED):
            raise ValueError(f"{', '.join(sorted(mosquitto_options))} need a mosquitto broker started by the harness")
        prefer, url = chosen, None
    wanted: str | None = None
    if prefer is not None:
        wanted = prefer.strip().lower()
        if wanted not in EMBEDDED_KINDS:
            raise ValueError(f"prefer must be one of {', '.join(EMBEDDED_KINDS)}, not {prefer!r}")
    if url is not None:
        keyword = url.strip().lower()
        if keyword in EMBEDDED_KINDS:
            if wanted is not None and wanted != keyword:
                raise ValueError(f"conflicting broker choices: url={url!r} but prefer={prefer!r}")
            wanted = keyword
        else:
            info = parse_broker_url(url)
            if wanted is not None:
                raise ValueError(
                    f"prefer={prefer!r} makes no sense with an external broker URL ({info.redacted_url()})"
                )
            return ExternalBroker(info)

    executable = find_mosquitto(mosquitto_path) if wanted != KIND_AMQTT else None
    if mosquitto_path is not None and executable is None and wanted != KIND_AMQTT:
        raise RuntimeError(f"mosquitto executable {mosquitto_path!r} not found or not executable")
    if wanted in (KIND_MOSQUITTO, KIND_MOSQUITTO_TUNED) and executable is None:
        raise RuntimeError(
            "mosquitto was requested but no 'mosquitto' executable was found on PATH or in "
            f"{', '.join(MOSQUITTO_EXTRA_DIRS)}; install it or pass its path"
        )
    if executable is not None:
        return MosquittoBroker(executable, tuned=wanted == KIND_MOSQUITTO_TUNED, **mosquitto_options).start()
    return AmqttBroker().start()
