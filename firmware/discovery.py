# Home Assistant MQTT discovery: the light's config, published retained on
# <prefix>/light/<device_id>/config at every connect (mqtt.discovery, default
# on; mqtt.discovery_prefix, default "homeassistant"). A JSON schema light with
# brightness 0..255 on the device's own topics; Home Assistant's commands carry
# no "id" (one is generated).
#
# Imported for the connect and dropped again: it costs no RAM in between. The
# payload is written piece by piece, never held whole in RAM, at QoS 0: it is
# sent again on every connect anyway.
import json

from mqtt_proto import _remaining, _str


async def publish(link):
    app = link.app
    did = app.device_id
    parts = [
        '{"name":null,"unique_id":"lightctl-',
        did,
        '","schema":"json","command_topic":"',
        link.t_set,
        '","state_topic":"',
        link.t_state,
        '","availability_topic":"',
        link.t_avail,
        '","brightness":true,"brightness_scale":255,',
        '"supported_color_modes":["brightness"],"qos":%d,' % link.qos,
        '"device":{"identifiers":["lightctl-',
        did,
        '"],"name":',
        json.dumps(app.cfg.get("name") or did),
        ',"model":',
        json.dumps(app.bdef.get("name", "?")),
        ',"manufacturer":"lightctl","sw_version":"%s"}}' % app.VERSION,
    ]
    n = 0
    for i in range(len(parts)):
        if isinstance(parts[i], str):
            parts[i] = parts[i].encode()
        n += len(parts[i])
    # One retained QoS 0 PUBLISH, written piece by piece under the client's
    # lock (no other packet may come between its pieces).
    c = link.client
    async with c._lock:
        w = c._w
        if w is None:
            raise OSError("not connected")
        t = _str(link.t_disc)
        w.write(b"\x31" + _remaining(len(t) + n) + t)  # PUBLISH, retained
        for p in parts:
            w.write(p)
            await w.drain()
