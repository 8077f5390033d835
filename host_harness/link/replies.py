"""What answers what on the device's console: the one table the host keeps of it.

Every line the host sends is answered with exactly one line: the reply its op
names here, or an ``error``. A ``change`` also goes out for a change made by
MQTT or the button, so it is a reply only as the answer to a ``set``; the
other replies are written only to answer a line.
"""

from __future__ import annotations

REPLY_KIND: dict[str, str] = {
    "set": "change",
    "get": "state",
    "ping": "pong",
    "info": "info",
    "press": "ack",
    "heap": "heap",
}
ANSWERS = frozenset({*REPLY_KIND.values(), "error"})  # the kinds of line that answer a command
ONLY_REPLIES = frozenset(REPLY_KIND.values()) - {"change"}  # kinds written only to answer a line
