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

# util-linux's setpriv: the command gets SIGKILL when the thread that started it dies.
_DIES_WITH_US = ("setpriv", "--pdeathsig", "KILL", "--")


def dies_with_us(argv: Sequence[str]) -> list[str]:
    """``argv`` made to die with this process: a ``cp`` that outlived a killed agent kept
    writing into the disk that the rerun of its restore empties and copies again, and
    held the clone's mount busy so its cleanup failed. The signal is set before the exec
    (no preexec_fn, which is unsafe with threads) and survives it."""
    return [*_DIES_WITH_US, *argv]


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


def _start_ticks(pid: int) -> str:
    """When the process started (clock ticks since boot): with the pid, names one process
    for the life of the machine, where a pid alone is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return ""
    # Fields after "(comm)": state is the 3rd of stat, starttime the 22nd.
    return fields[19] if len(fields) > 19 else ""


def process_token(pid: int | None = None) -> str:
    """``<pid>-<start ticks>`` of this (or ``pid``'s) process, for marking what it owns:
    a temporary resource whose owner's token is no longer alive is a leftover."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_ticks(pid)}"


def token_alive(token: str) -> bool:
    """True while the process a ``process_token`` names still runs (and is not a zombie)."""
    pid, _, ticks = token.partition("-")
    if not pid.isdigit() or not ticks:
        return False
    return alive(int(pid)) and _start_ticks(int(pid)) == ticks
