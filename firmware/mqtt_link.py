# MQTT transport, following Home Assistant's MQTT light JSON schema:
#   <base>/<device_id>/set           commands {"state","brightness","id"}
#   <base>/<device_id>/state         retained state with the event fields
#   <base>/<device_id>/availability  "online", "offline" via the last will
#   <base>/<device_id>/error         error reports for bad commands
#   <base>/<device_id>/ping          time-sync ping, answered on .../pong
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
        c = MQTTClient(
            m.get("client_id") or "lightctl-" + cfg["device_id"],
            m.get("host", "127.0.0.1"),
            m.get("port", 1883),
            m.get("user"),
            m.get("password"),
            m.get("keepalive", 30),
        )
        c.set_last_will(self.t_avail, "offline", retain=True, qos=1)
        c.subscribe(self.t_set, 1)
        c.subscribe(self.t_ping, 0)
        c.on_message = self.on_message
        c.on_connect = self.on_connect
        c.on_status = self.on_status
        self.client = c
        self.errors = 0

    def status(self):
        return "connected" if self.client.connected else "disconnected"

    def on_status(self, status, detail):
        self.app.serial.status("mqtt", status, detail)

    async def on_connect(self):
        c = self.client
        await c.publish(self.t_avail, "online", retain=True, qos=1)
        light = self.app.light
        body = light.last or light.state_body()
        await c.publish(self.t_state, '{%s,"t_tx":%d}' % (body, clock.now()), retain=True)

    async def report(self, body):
        c = self.client
        if not c.connected:
            return  # the current state is published again on (re)connect
        try:
            await c.publish(self.t_state, '{%s,"t_tx":%d}' % (body, clock.now()), retain=True)
        except Exception:
            pass  # the reader notices the dead link and reconnects

    async def error(self, e):
        self.errors += 1
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
