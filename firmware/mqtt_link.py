# MQTT transport, following Home Assistant's MQTT light JSON schema:
#   <base>/<device_id>/set           commands {"state","brightness","id"}
#   <base>/<device_id>/state         retained state with the event fields
#   <base>/<device_id>/availability  "online", "offline" via the last will
#   <base>/<device_id>/error         error reports for bad commands
#   <base>/<device_id>/ping          time-sync ping, answered on .../pong
#   <base>/<device_id>/ack           a repeated command id: the original event
#                                    again with "dup":true (not retained, so
#                                    the retained state never rolls back)
#   <discovery prefix>/light/<device_id>/config   Home Assistant discovery
#   <base>/group/<name>/set          a command to every light of group <name>
#                                    (config "groups": [names]): the same
#                                    schema and dedup by id as .../set; each
#                                    light reports on its own .../state
#   <discovery prefix>/status    Home Assistant's birth message: "online"
#                                (HA restarted) gets the discovery config and
#                                the current state published again
# Commands are subscribed at QoS 1 (config "qos", default 1) on a persistent
# session (config "clean_session", default false): the broker delivers a
# command until the device acknowledges it, and the device knows a repeat by
# its id. State and availability go out at QoS 0 (config "state_qos",
# default 0), retained, the PUBACK of the command that caused a report
# written after it on the same stream: a command the broker counts as
# delivered has had its report reach the broker, and a report lost with the
# link brings its command back; the current state is published again on
# every (re)connect. A QoS 1 report would add the broker's PUBACK, a lone
# small segment that a broker with Nagle's algorithm on (Mosquitto's
# default) puts in front of the next command until the device's TCP ACK of
# it has crossed the link: one round trip per command on Wi-Fi.
import asyncio
import gc
import sys

import clock
import protocol
from mqtt import MQTTClient
from protocol import BadInput

PING_FIELDS = ("id", "t")


class MqttLink:
    name = "mqtt"

    def __init__(self, app, cfg):
        self.app = app
        m = cfg["mqtt"]
        base = "%s/%s/" % (cfg["base_topic"], cfg["device_id"])
        self.t_set = (base + "set").encode()
        self.t_ping = (base + "ping").encode()
        self.t_state = base + "state"
        self.t_avail = base + "availability"
        # .../error, .../pong and .../ack are made from t_state when used
        self.qos = q = 1 if m.get("qos", 1) else 0  # commands
        self.state_qos = sq = 1 if m.get("state_qos", 0) else 0  # reports
        self.t_disc = None
        self.t_groups = tuple(("%s/group/%s/set" % (cfg["base_topic"], g)).encode() for g in cfg.get("groups") or ())
        subs = ((self.t_set, q), (self.t_ping, 0)) + tuple((t, q) for t in self.t_groups)
        if m.get("discovery", True):
            pre = m.get("discovery_prefix") or "homeassistant"
            self.t_disc = "%s/light/%s/config" % (pre, cfg["device_id"])
            subs += (((pre + "/" + "status").encode(), 0),)  # names the firmware has: no new qstr
        tls = m if m.get("tls") else None  # see mqtt_tls.py
        c = MQTTClient(
            self,
            m.get("client_id") or "lightctl-" + cfg["device_id"],
            m.get("host", "127.0.0.1"),
            m.get("port", 8883 if tls else 1883),
            m.get("user"),
            m.get("password"),
            m.get("keepalive", 30),
            tls,
            bool(m.get("clean_session", False)),
            (self.t_avail, "offline", True, sq),
            subs,
        )
        c.ack_with_report = not sq
        if not m.get("quickack", True):
            c.quickack = False  # do without TCP_QUICKACK even on Linux: as on lwIP
        self.client = c
        self.dirty = False  # a state report was lost: the current state goes out again

    def on_status(self, status, detail):
        self.app.serial.status("mqtt", status, detail)

    async def on_connect(self):
        c = self.client
        q = self.state_qos
        await c.publish(self.t_avail, "online", retain=True, qos=q)
        if self.t_disc:
            import discovery  # loaded for the connect, then dropped again

            try:
                await discovery.publish(self)
            finally:
                del sys.modules["discovery"]
        light = self.app.light
        body = light.last or light.state_body()
        await c.publish(self.t_state, b'{%s,"t_tx":%d}' % (body, clock.now()), retain=True, qos=q)
        self.dirty = False

    def post(self, body, ack=False, answers=False):
        # Write the event's PUBLISH now (synchronous) on the retained state
        # topic; ack: a repeated command's original event on the non-retained
        # ack topic (the state never rolls back); answers: the report of the
        # MQTT command being handled (its PUBACK goes along). Returns a packet still to be
        # sent by flush(), or None. Never raises: on MemoryError, collects and
        # tries once more, then reports it (lost).
        c = self.client
        if not c.connected:
            return None  # the current state is published again on (re)connect
        for _ in (0, 1):
            try:
                p = c.put(
                    self.t_state[:-5] + "ack" if ack else self.t_state,
                    b'{%s,"t_tx":%d}' % (body, clock.now()),
                    not ack,
                    0 if ack else self.state_qos,
                    answers,
                )
                if not ack:
                    self.dirty = False  # this is the current state
                return p
            except MemoryError:
                gc.collect()
            except Exception:
                return None  # the reader notices the dead link; the state goes out on reconnect
        self.lost()

    def lost(self):
        # A report hit MemoryError: the console hears of it, and the current
        # state is published again at the next tick (or on reconnect).
        self.dirty = True
        gc.collect()
        self.app.serial.write('{"ev":"error","code":"internal","msg":"MemoryError: report lost","src":"mqtt"}')

    def flush(self, p=None):
        # An awaitable that sends what post() could not and drains the
        # stream; it never raises. With nothing left to send (as a rule),
        # asyncio's yield, allocated once: no coroutine made per report.
        if p is None and self.client.idle():
            return asyncio.sleep_ms(0)
        return self._drain(p)

    async def _drain(self, p):
        try:
            await self.client.flush(p)
        except MemoryError:
            self.lost()
        except Exception:
            pass  # a dead link: the reader notices it; the state goes out again on reconnect

    async def report(self, body, ack=False, answers=False):
        await self.flush(self.post(body, ack, answers))

    async def on_tick(self):
        if self.dirty:
            light = self.app.light
            await self.report(light.last or light.state_body())

    async def error(self, e):
        s = protocol.error_json(e)
        self.app.serial.write(s[:-1] + ',"src":"mqtt"}')
        # As post(): on MemoryError, collected and tried once more (what the
        # failed try held is garbage by then), then reported (lost). Only the
        # packet's making is tried again: once written, it is not written twice.
        for _ in (0, 1):
            try:
                p = self.client.put(self.t_state[:-5] + "error", s)
            except MemoryError:
                gc.collect()
                continue
            except Exception:
                return  # a dead link: the reader notices it and reconnects
            await self.flush(p)
            return
        self.lost()

    async def on_message(self, topic, buf, off, n, retained):
        t_rx = self.client.t_packet
        if topic is not self.t_set and topic is not self.t_ping and topic not in self.t_groups:
            # <discovery prefix>/status: Home Assistant (re)started, and asks
            # for the discovery config and the state again. A retained
            # "online" comes at every connect, which publishes them anyway.
            if topic and not retained and n == 6 and buf.find(b"online", off, off + 6) == off:
                await self.on_connect()
            return
        cmd_id = None
        try:
            if n > protocol.MAX_LEN:
                raise BadInput("too_long", "payload longer than %d bytes" % protocol.MAX_LEN)
            obj = protocol.decode(buf, n, off)
            cmd_id = protocol.command_id(obj)
            if topic == self.t_ping:
                protocol.unknown_fields(obj, PING_FIELDS, cmd_id)
                await self.client.publish(
                    self.t_state[:-5] + "pong",
                    '{"id":"%s","t_rx":%d,"ticks":%d}' % (cmd_id or "", t_rx, clock.now()),
                )
            elif topic == self.t_set or topic in self.t_groups:
                if retained:
                    raise BadInput("retained_command", "retained commands are ignored", cmd_id)
                state, bri = protocol.state_fields(obj, protocol.STATE_FIELDS, cmd_id)
                await self.app.command(self, "mqtt", cmd_id, state, bri, t_rx)
        except BadInput as e:
            if e.cmd_id is None:
                e.cmd_id = cmd_id
            await self.error(e)
        except Exception as e:
            if isinstance(e, OSError):
                raise
            await self.error(BadInput("internal", type(e).__name__, cmd_id))
