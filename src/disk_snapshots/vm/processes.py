"""Processes on this VM: running a command with a deadline, and whether a process lives.

Every command runs as an argv list, never a shell string built from values. A process
is alive when it exists and is not a zombie: a zombie (killed, not yet reaped) will
never thaw a disk or answer a signal, so a lease or pidfile that names one is stale.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from collections.abc import Sequence

import psutil

DEFAULT_TIMEOUT = 30.0


def run_argv(
    argv: Sequence[str],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    *,
    error: type[Exception],
) -> str:
    """Run a command with a deadline and return its stdout; ``error`` names what went
    wrong, with the command and its output."""
    try:
        proc = subprocess.run(
            list(argv),
            env={**os.environ, **env} if env else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise error(f"{what}: {argv[0]} does not exist") from None
    except subprocess.TimeoutExpired:
        raise error(f"{what}: {' '.join(argv)} did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-500:]
        raise error(f"{what}: {' '.join(argv)} exited {proc.returncode}: {detail}")
    return proc.stdout


def own_usage() -> tuple[int, float]:
    """This process's resident memory in bytes and its CPU time (user + system) in seconds."""
    me = psutil.Process()
    times = me.cpu_times()
    return me.memory_info().rss, times.user + times.system


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
