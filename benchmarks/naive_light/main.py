# A MicroPython light as most users write it: micropython-lib's umqtt.simple,
# a blocking wait_msg() loop, the state published retained at QoS 0.
# The project's benchmark runs it beside lightctl's firmware as a peer
# (benchmarks/peers.py); it is not part of the firmware.
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


client = MQTTClient(cfg["id"], cfg["host"], cfg["port"])
client.set_callback(on_message)
client.connect()
client.subscribe(SET)
print("ready")
while True:
    client.wait_msg()
