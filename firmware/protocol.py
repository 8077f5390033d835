# Command validation shared by the serial link and MQTT. A command is a JSON
# object; anything wrong with it raises BadInput and changes nothing.
import json

MAX_LEN = 512  # bytes of one serial line or one MQTT payload
MAX_ID = 64

STATE_FIELDS = ("state", "brightness", "id")


class BadInput(Exception):
    def __init__(self, code, msg, cmd_id=None):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.cmd_id = cmd_id


def _id_ok(s):
    if not isinstance(s, str) or not 0 < len(s) <= MAX_ID:
        return False
    for c in s:
        if not (c.isalpha() or c.isdigit() or c in "-_.:"):
            return False
        if ord(c) > 126:
            return False
    return True


def decode(data):
    """bytes -> dict, or BadInput."""
    if len(data) > MAX_LEN:
        raise BadInput("too_long", "input longer than %d bytes" % MAX_LEN)
    try:
        s = data.decode("utf-8") if not isinstance(data, str) else data
    except Exception:
        raise BadInput("bad_utf8", "input is not UTF-8")
    try:
        obj = json.loads(s)
    except Exception:
        raise BadInput("bad_json", "input is not valid JSON")
    if not isinstance(obj, dict):
        raise BadInput("bad_json", "a command must be a JSON object")
    return obj


def command_id(obj):
    """The command's id, or None when absent. Raises BadInput if malformed."""
    i = obj.get("id")
    if i is None:
        return None
    if not _id_ok(i):
        raise BadInput("bad_id", "id must be 1-%d chars of [A-Za-z0-9-_.:]" % MAX_ID)
    return i


def state_fields(obj, allowed, cmd_id):
    """Validate a set command. Returns (state, brightness): state True/False/None,
    brightness 0..255 or None."""
    unknown_fields(obj, allowed, cmd_id)
    state = None
    if "state" in obj:
        s = obj["state"]
        if s == "ON":
            state = True
        elif s == "OFF":
            state = False
        else:
            raise BadInput("bad_state", "state must be ON or OFF", cmd_id)
    bri = None
    if "brightness" in obj:
        b = obj["brightness"]
        if not isinstance(b, int) or isinstance(b, bool):
            raise BadInput("bad_brightness", "brightness must be an integer", cmd_id)
        if not 0 <= b <= 255:
            raise BadInput("bad_brightness", "brightness must be 0..255", cmd_id)
        bri = b
    if state is None and bri is None:
        raise BadInput("empty_command", "give state and/or brightness", cmd_id)
    return state, bri


def error_json(e):
    msg = json.dumps(e.msg)
    if e.cmd_id:
        return '{"ev":"error","code":"%s","msg":%s,"id":"%s"}' % (e.code, msg, e.cmd_id)
    return '{"ev":"error","code":"%s","msg":%s}' % (e.code, msg)


def unknown_fields(obj, allowed, cmd_id):
    for k in obj:
        if k not in allowed:
            raise BadInput("unknown_field", "unknown field: %s" % str(k)[:32], cmd_id)
