"""Write a MicroPython image to an ESP32-family board with esptool.

The flash offset comes from the image itself: its header names the chip it
was built for (ESP32 and ESP32-S2 images go to 0x1000, most newer chips to
0x0), and esptool's own chip definitions say where that chip's bootloader
lives. esptool runs as ``python -m esptool``; its progress passes through.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from host_harness import children
from host_harness.image.ports import DeployError, check_port_exists, check_port_free

ESP_IMAGE_MAGIC = 0xE9


class FlashError(RuntimeError):
    """Flashing failed; the message says why and what to try."""


@dataclass
class Image:
    path: Path
    size: int
    chip: str | None  # esptool's chip name ("esp32s3"), from the image header
    chip_name: str | None  # "ESP32-S3"


def chip_defs() -> dict[str, Any]:
    try:
        from esptool.targets import CHIP_DEFS
    except ImportError as e:
        raise FlashError("esptool is not installed: pip install esptool") from e
    return dict(CHIP_DEFS)


def inspect_image(path: str | Path) -> Image:
    """Check that ``path`` is an ESP firmware image; which chip it is for."""
    p = Path(path)
    if not p.exists():
        raise FlashError(f"firmware image {p} does not exist (download one from https://micropython.org/download/)")
    if not p.is_file():
        raise FlashError(f"firmware image {p} is not a file")
    head = p.read_bytes()[:24]
    if not head:
        raise FlashError(f"firmware image {p} is empty")
    if head[0] != ESP_IMAGE_MAGIC:
        raise FlashError(
            f"{p} is not an ESP firmware image (first byte 0x{head[0]:02x}, expected 0x{ESP_IMAGE_MAGIC:02x}); "
            "use the .bin from micropython.org/download, not a .uf2/.elf/.hex"
        )
    chip = name = None
    # Extended header (ESP32 and later): chip id at 12, reserved bytes 19..22 zero.
    if len(head) >= 24 and head[19:23] == b"\0\0\0\0" and head[23] in (0, 1):
        cid = int.from_bytes(head[12:14], "little")
        for key, d in chip_defs().items():
            if getattr(d, "IMAGE_CHIP_ID", None) == cid:
                chip, name = key, str(d.CHIP_NAME)
                break
    return Image(p, p.stat().st_size, chip, name)


def flash_offset(image: Image, chip: str = "auto", addr: str | None = None) -> int:
    """Where the image goes: ``addr`` if given, else the chip's bootloader offset."""
    defs = chip_defs()
    if chip != "auto":
        if chip not in defs:
            raise FlashError(f"unknown chip {chip!r}; esptool knows {', '.join(sorted(defs))}")
        if image.chip and image.chip != chip:
            raise FlashError(f"{image.path} is built for {image.chip_name}, not {defs[chip].CHIP_NAME}")
    if addr is not None:
        try:
            return int(addr, 0)
        except ValueError:
            raise FlashError(f"--addr {addr!r} is not a number (e.g. 0x1000)") from None
    key = image.chip or (chip if chip != "auto" else None)
    if key is None:
        raise FlashError(f"cannot tell from {image.path} which chip it is for: pass --chip (or --addr)")
    return int(defs[key].BOOTLOADER_FLASH_OFFSET)


def esptool_command(
    port: str,
    image: Image,
    offset: int,
    chip: str = "auto",
    baud: int = 460800,
    erase: bool = False,
    connect_attempts: int = 7,
) -> list[str]:
    try:
        major = int(metadata.version("esptool").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        major = 5
    write = "write-flash" if major >= 5 else "write_flash"
    cmd = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud)]
    cmd += ["--connect-attempts", str(connect_attempts), write]
    if erase:
        cmd.append("--erase-all")
    return [*cmd, hex(offset), str(image.path)]


def _pump(proc: subprocess.Popen[bytes], echo: BinaryIO, timeout: float) -> bytes:
    """Pass esptool's output (progress included) through; keep its tail."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    tail = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            proc.wait()
            raise FlashError(f"esptool did not finish within {timeout:g} s; output ended with:\n{tail[-400:].decode()}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            proc.wait()
            return bytes(tail)
        echo.write(chunk)
        echo.flush()
        tail += chunk
        del tail[:-8192]


def explain(port: str, output: str) -> str:
    """esptool's failure, in one sentence with what to try."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    fatal = next((ln for ln in reversed(lines) if "fatal error" in ln.lower() or ln.startswith("ERROR")), None)
    msg = (fatal or (lines[-1] if lines else "no output")).split("occurred: ", 1)[-1]
    if "Could not open" in msg or "doesn't exist" in msg:
        return f"cannot open serial port {port}: {msg}"
    if "Failed to connect" in msg or "No serial data received" in msg:
        return (
            f"no ESP bootloader answered on {port}: {msg}. Check the port and the cable (data, not charge-only); "
            "if the board does not enter the bootloader by itself, hold BOOT and tap EN/RST"
        )
    if "chip" in msg.lower():
        return f"the chip on {port} does not fit: {msg}"
    return f"esptool failed on {port}: {msg}"


def flash(
    port: str,
    firmware: str | Path,
    chip: str = "auto",
    erase: bool = False,
    baud: int = 460800,
    addr: str | None = None,
    connect_attempts: int = 7,
    timeout: float = 600.0,
    echo: BinaryIO | None = None,
) -> int:
    """Flash the image; returns the offset it was written at."""
    image = inspect_image(firmware)
    offset = flash_offset(image, chip, addr)
    try:
        check_port_exists(port)
        check_port_free(port)
    except DeployError as e:
        raise FlashError(str(e)) from None
    cmd = esptool_command(port, image, offset, chip, baud, erase, connect_attempts)
    out = echo or sys.stdout.buffer
    what = f"{image.path.name} ({image.size / 1024:.0f} kB, {image.chip_name or 'chip unknown'})"
    out.write(f"flash: {what} at 0x{offset:x} on {port}{', erasing first' if erase else ''}\n".encode())
    out.flush()
    try:
        proc = children.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise FlashError(f"cannot run esptool: {e}") from e
    tail = _pump(proc, out, timeout).decode("utf-8", "replace")
    if proc.returncode != 0:
        raise FlashError(explain(port, tail))
    return offset
