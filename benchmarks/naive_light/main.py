# A MicroPython light as most users write it: micropython-lib's umqtt.simple,
# a blocking wait_msg() loop, the state published retained at QoS 0.
# The project's benchmark runs it beside lightctl's firmware as a peer
# (benchmarks/peers.py); it is not part of the firmware. With "one_write" in
# its config, each packet umqtt.simple writes in pieces (fixed header, topic
# length, topic, payload) goes out in one write instead: the benchmark's
# control for what the pieces do.
import json
import sys

from umqtt.simple import MQTTClient

with open(sys.argv[1]) as f:
    cfg = json.loads(f.read())
SET = cfg["base"] + "/set"
STATE = cfg["base"] + "/state"
light = {"state": "OFF", "brightness": 255}


def on_message(topic, msg):
    cmd = json.loads(msg)
    if "state" in cmd:
        light["state"] = cmd["state"]
    if "brightness" in cmd:
        light["brightness"] = cmd["brightness"]
    out = {"state": light["state"], "brightness": light["brightness"], "id": cmd.get("id")}
    client.publish(STATE, json.dumps(out), retain=True)


class OneWrite:
    # umqtt.simple's socket, gathering each packet's pieces into one write.
    def __init__(self, s):
        self.s = s
        self.buf = b""
        self.need = 0

    def write(self, b, n=None):
        if isinstance(b, str):
            b = b.encode()  # umqtt.simple writes the topic as it was given
        b = bytes(b[:n] if n is not None else b)
        if not self.buf:  # a packet starts: its type and remaining length
            i, ln, sh = 1, 0, 0
            while True:
                ln |= (b[i] & 0x7F) << sh
                if not b[i] & 0x80:
                    break
                i += 1
                sh += 7
            self.need = i + 1 + ln
        self.buf += b
        if len(self.buf) >= self.need:
            self.s.write(self.buf)
            self.buf = b""

    def __getattr__(self, name):
        return getattr(self.s, name)


client = MQTTClient(cfg["id"], cfg["host"], cfg["port"])
client.set_callback(on_message)
client.connect()
client.subscribe(SET)
if cfg.get("one_write"):
    client.sock = OneWrite(client.sock)
print("ready")
while True:
    client.wait_msg()
