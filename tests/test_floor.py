"""The floors a journey is measured against: the self floor and the echo floor (the journey's route
with a paho responder in the device's place)."""

from __future__ import annotations

import os

import pytest

from host_harness.broker.info import parse_broker_url
from host_harness.broker.running import RunningBroker
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.floor import echo_across, floor_ms


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pids_of(cmd_part: str) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if cmd_part.encode() in f.read():
                        out.add(int(d))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("rate", [None, 50.0])
def test_every_message_comes_back_through_the_responder_once(broker: RunningBroker, rate: float | None) -> None:
    mq = HostMqtt(broker.info, "echo-test").connect()
    topic = f"bench/echo-test-{rate}"
    try:
        watch = HostMqtt(broker.info, "echo-watch").connect()
        watch.subscribe(f"{topic}/#")
        try:
            with echo_across([], broker.info, topic) as echo:
                (pid,) = _pids_of(topic)
                ms = floor_ms(mq, 20, progress=False, rate=rate, echo=echo)
                assert len(ms) == 20 and min(ms) > 0
                # the watcher is another client: it may hear the last answer after mq did
                watch.log.wait_for(lambda e: e.topic == f"{topic}/out" and e.get("n") == 19, 10, "the last answer")
                seen = [(e.topic.rsplit("/", 1)[1], e.get("n")) for e in watch.log.events()]
            assert not _alive(pid), "the responder outlived its block"
        finally:
            watch.close()
    finally:
        mq.close()
    # each message once on the way in, once back, and back only after it went in
    for n in range(20):
        assert seen.count(("in", n)) == 1 and seen.count(("out", n)) == 1
        assert seen.index(("in", n)) < seen.index(("out", n))


def test_a_responder_that_cannot_reach_its_broker_is_a_clear_error() -> None:
    gone = parse_broker_url("mqtt://127.0.0.1:1")  # nothing listens there
    with pytest.raises(RuntimeError, match="echo responder"), echo_across([], gone, "bench/none", timeout=10):
        pass
    assert not _pids_of("bench/none")
