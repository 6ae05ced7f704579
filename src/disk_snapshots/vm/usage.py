"""What this process and the persistent disk use now (psutil): for metrics and for the
restore's check that a snapshot fits."""

from __future__ import annotations

from pathlib import Path

import psutil


def own_usage() -> tuple[int, float]:
    """This process's resident memory in bytes and its CPU time (user + system) in seconds."""
    me = psutil.Process()
    times = me.cpu_times()
    return me.memory_info().rss, times.user + times.system


def space(mount: Path) -> tuple[int, int, int]:
    """(total, used, free) bytes of the filesystem at ``mount``; free counts what an
    unprivileged writer may still use."""
    usage = psutil.disk_usage(str(mount))
    return usage.total, usage.used, usage.free
