"""Step-by-step progress with elapsed times, as the operator's command prints it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from typing import TextIO


@dataclass
class Progress:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        """A line stamped with the time since the command started."""
        with self._lock:
            print(f"[{self.elapsed():7.1f}s] {text}", file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A line that belongs to the one above it."""
        with self._lock:
            print(f"{'':11}{text}", file=self.out, flush=True)

    def plain(self, text: str = "") -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        """``text ...`` now, then ``done in N s`` (or ``FAILED after N s``) when it ends."""
        self.say(f"{text} ...")
        began = time.monotonic()
        try:
            yield
        except BaseException:
            self.note(f"FAILED after {time.monotonic() - began:.1f}s")
            raise
        self.note(f"done in {time.monotonic() - began:.1f}s")
