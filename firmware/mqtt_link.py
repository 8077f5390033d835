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
# State and availability go out at QoS 1 (config "qos", default 1) on a
# persistent session (config "clean_session", default false).
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
        self.t_error = base + "error"
        self.t_pong = base + "pong"
        self.qos = q = 1 if m.get("qos", 1) else 0
        self.t_disc = None
        if m.get("discovery", True):
            self.t_disc = "%s/light/%s/config" % (m.get("discovery_prefix") or "homeassistant", cfg["device_id"])
        tls = m if m.get("tls") else None  # see mqtt_tls.py
        c = MQTTClient(
            m.get("client_id") or "lightctl-" + cfg["device_id"],
            m.get("host", "127.0.0.1"),
            m.get("port", 8883 if tls else 1883),
            m.get("user"),
            m.get("password"),
            m.get("keepalive", 30),
            tls,
            bool(m.get("clean_session", False)),
        )
        c.will = (self.t_avail, "offline", True, q)
        c.subs = [(self.t_set, q), (self.t_ping, 0)]
        c.on_message = self.on_message
        c.on_connect = self.on_connect
        c.on_status = self.on_status
        self.client = c

    def on_status(self, status, detail):
        self.app.serial.status("mqtt", status, detail)

    async def on_connect(self):
        c = self.client
        q = self.qos
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

    async def report(self, body, ack=False):
        """The event on the retained state topic; ack: a repeated command's
        original event on the non-retained ack topic (the state never rolls back)."""
        c = self.client
        if not c.connected:
            return  # the current state is published again on (re)connect
        try:
            await c.publish(
                self.t_pong[:-4] + "ack" if ack else self.t_state,
                b'{%s,"t_tx":%d}' % (body, clock.now()),
                not ack,
                0 if ack else self.qos,
            )
        except Exception:
            pass  # the reader notices the dead link and reconnects

    async def error(self, e):
        self.app.serial.write(protocol.error_json(e)[:-1] + ',"src":"mqtt"}')
        try:
            await self.client.publish(self.t_error, protocol.error_json(e))
        except Exception:
            pass

    async def on_message(self, topic, payload, retained):
        t_rx = self.client.t_packet
        cmd_id = None
        try:
            if payload is None:
                raise BadInput("too_long", "payload longer than %d bytes" % protocol.MAX_LEN)
            obj = protocol.decode(payload)
            cmd_id = protocol.command_id(obj)
            if topic == self.t_ping:
                protocol.unknown_fields(obj, PING_FIELDS, cmd_id)
                await self.client.publish(
                    self.t_pong,
                    '{"id":"%s","t_rx":%d,"ticks":%d}' % (cmd_id or "", t_rx, clock.now()),
                )
            elif topic == self.t_set:
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
