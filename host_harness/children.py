"""Child processes that end when lightctl ends, by any signal, SIGKILL included.

Every process the harness starts (Unix-port devices, virtual boards,
mosquitto, esptool, mpremote, mpy-cross) is spawned through :func:`spawn`
(or :func:`run`). On Linux the child asks the kernel for SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``), so nothing is left behind even when
lightctl itself is killed with SIGKILL, which no handler can see.

The kernel ties the death signal to the *thread* that forked the child, not
to the process: a child spawned from a thread that ends is killed right then.
So spawn long-lived children from the main thread or from a thread that lives
as long as they do (a virtual board respawns from its supervisor thread,
which outlives every process it starts).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    fn: Callable[..., int] = libc.prctl
    return fn


# Looked up once, before any fork: the child only calls it.
_PRCTL = _libc_prctl()

#: True where children die with lightctl (Linux); elsewhere they are only ended by cleanup code.
DIES_WITH_PARENT = _PRCTL is not None


def _die_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child, between fork and exec
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(cmd, **kwargs)`` whose child dies with this process (and thread)."""
    if "preexec_fn" in kwargs:
        raise TypeError("spawn() sets preexec_fn itself")
    return subprocess.Popen(cmd, preexec_fn=_die_with(os.getpid()), **kwargs)


def run(
    cmd: list[str], *, timeout: float, capture_output: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` through :func:`spawn`: the child is killed on timeout, interruption or our death."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with spawn(cmd, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:  # TimeoutExpired, KeyboardInterrupt: do not leave it running
            proc.kill()
            proc.wait()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def end(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode
