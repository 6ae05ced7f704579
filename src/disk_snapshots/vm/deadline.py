"""Deadlines for work BOSH would wait on forever (docs/bosh-contracts.md: hooks never time out)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from disk_snapshots.errors import ReleaseError


class DeadlineExceeded(TimeoutError, ReleaseError):
    """The work did not finish in time; cleanup (thaw, unmount) still runs in ``finally``."""


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise DeadlineExceeded in the main thread after ``seconds`` (SIGALRM based)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise DeadlineExceeded(f"{what} did not finish within {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
