"""Processes on this VM: running a command with a deadline, and whether a process lives.

Every command runs as an argv list, never a shell string built from values. A process
is alive when it exists and is not a zombie: a zombie (killed, not yet reaped) will
never thaw a disk or answer a signal, so a lease or pidfile that names one is stale.
The freeze watchdog, the freeze lease and the daemon's pidfile all ask ``alive``.

This module stays free of psutil on purpose: the watchdog imports it, and a set
member's disk stays frozen while the other members' watchdogs start; importing
psutil there added 50-100 ms to the longest freeze of a set (scripts/bench-sets).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

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


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists; someone else's
    try:
        # /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces and parentheses.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False  # gone since the signal check
    return state not in ("Z", "X")
