# Command validation shared by the serial link and MQTT. A command is a JSON
# object; anything wrong with it raises BadInput and changes nothing. The JSON
# is read by MicroPython's json, which also takes some non-standard forms (a
# trailing comma, a missing separator, a key without a value) as it reads them:
# a strict check would cost the hot path more than json.loads itself.
import json

MAX_LEN = 512  # bytes of one serial line or one MQTT payload
MAX_ID = 64
MAX_BRACKETS = 8  # a command is one flat object; deeper input is refused unparsed

STATE_FIELDS = ("state", "brightness", "id")

try:
    json.loads(memoryview(b"0"))  # pyright: ignore[reportArgumentType]  # MicroPython's json reads any buffer
    _IN_PLACE = True  # json parses any buffer (MicroPython 1.20 and later)
except Exception:
    _IN_PLACE = False


class BadInput(Exception):
    def __init__(self, code, msg, cmd_id=None):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.cmd_id = cmd_id


_ID_PUNCT = b"-_.:"
_BLANK = b" \t\r\n"


def _id_ok(s):
    # The id's bytes are checked, not its characters: iterating a str makes a
    # one-character string of each character, interned for good, so ids of
    # ever new characters would leak the heap away.
    if not isinstance(s, str) or not 0 < len(s) <= MAX_ID:
        return False
    for c in s.encode():
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in _ID_PUNCT):
            return False
    return True


def _utf8_ok(view, n):
    # Checked a piece at a time, each cut before a character's first byte:
    # a small string per piece, never one as long as the input.
    i = 0
    while i < n:
        j = i + 64
        if j >= n:
            j = n
        else:
            k = j - 3
            while j > k and view[j] & 0xC0 == 0x80:
                j -= 1
        try:
            str(view[i:j], "utf-8")
        except UnicodeError:
            return False
        i = j
    return True


def decode(data, n=-1, off=0):
    """The n bytes of data (bytes or bytearray; all of it by default) from
    off -> dict, or BadInput. The input is parsed where it lies: no copy of it
    is made, so a long line needs no long free block in a fragmented heap."""
    if isinstance(data, str):
        data = data.encode()
    if n < 0:
        n = len(data) - off
    if n > MAX_LEN:
        raise BadInput("too_long", "input longer than %d bytes" % MAX_LEN)
    view = memoryview(data)[off : off + n]
    if n and max(view) > 127 and not _utf8_ok(view, n):  # ASCII is UTF-8 as it is
        raise BadInput("bad_utf8", "input is not UTF-8")
    # Parsing nested input costs heap per level (a 512-byte line of brackets
    # takes some 18 kB): refuse it before parsing, whatever memory is free.
    if data.count(b"[", off, off + n) + data.count(b"{", off, off + n) > MAX_BRACKETS:
        raise BadInput("bad_json", "input nested too deeply")
    # A command is an object, so it ends with "}". MicroPython's json does not
    # hold the input to that: 1.24/1.25 take an object cut short before its
    # closing brace, later ones ignore a NUL after it. A line cut off by a lost
    # byte must never be applied, whatever json.loads makes of it.
    k = n - 1
    while k >= 0 and view[k] in _BLANK:
        k -= 1
    if k < 0 or view[k] != 125:  # "}"
        raise BadInput("bad_json", "a command must end with }")
    try:
        obj = json.loads(view if _IN_PLACE else bytes(view))  # pyright: ignore[reportArgumentType]  # see _IN_PLACE
    except ValueError:  # not MemoryError: that is no fault of the input
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
