"""Long agent API operations: started by one request, polled by others.

A snapshot can take longer than a caller wants to hold a connection open (an EBS
snapshot, a slow flush). The request returns an id at once and the work runs in a
thread; ``GET /operations/<id>`` tells how it went. Finished operations are kept
for a while (the newest ``keep``), in memory only: after a daemon restart the
catalog, not this registry, is the record of what was taken.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Literal

from disk_snapshots.member_errors import Conflict

log = logging.getLogger(__name__)

OperationState = Literal["running", "succeeded", "failed"]


class Busy(Conflict):
    """An operation of the same kind is still running."""


@dataclass
class Operation:
    id: str
    kind: str
    started_at: float
    state: OperationState = "running"
    finished_at: float | None = None
    result: dict[str, object] = field(default_factory=dict)
    error: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
        }


@dataclass
class Operations:
    keep: int = 100
    _operations: dict[str, Operation] = field(default_factory=dict)
    _threads: dict[str, threading.Thread] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(
        self,
        kind: str,
        work: Callable[[], dict[str, object]],
        errors: tuple[type[BaseException], ...] = (Exception,),
    ) -> Operation:
        """Run ``work`` in a thread; one operation of a ``kind`` at a time (Busy otherwise).

        Exceptions in ``errors`` mark the operation failed with their message; anything
        else is a bug, logged with its traceback, and fails the operation too.
        """
        with self._lock:
            for other in self._operations.values():
                if other.kind == kind and other.state == "running":
                    raise Busy(f"operation {other.id} ({kind}) is still running")
            operation = Operation(
                id="op-" + secrets.token_hex(8), kind=kind, started_at=time.time()
            )
            self._operations[operation.id] = operation

            def run() -> None:
                try:
                    result = work()
                except errors as err:
                    operation.error, operation.state = str(err), "failed"
                except Exception as err:  # a bug: keep the daemon up, say so loudly
                    log.exception("operation %s (%s) crashed", operation.id, kind)
                    operation.error, operation.state = f"internal error: {err}", "failed"
                else:
                    operation.result, operation.state = result, "succeeded"
                finally:
                    operation.finished_at = time.time()

            thread = threading.Thread(target=run, name=f"operation-{operation.id}")
            self._threads[operation.id] = thread
            self._forget_old()
        thread.start()
        return operation

    def get(self, operation_id: str) -> Operation | None:
        with self._lock:
            return self._operations.get(operation_id)

    def _forget_old(self) -> None:
        finished = [o for o in self._operations.values() if o.state != "running"]
        finished.sort(key=lambda o: o.finished_at or 0.0)
        for old in finished[: max(0, len(self._operations) - self.keep)]:
            del self._operations[old.id]
            thread = self._threads.pop(old.id, None)
            if thread is not None:
                thread.join()

    def close(self, timeout: float = 60.0) -> list[str]:
        """Wait for running operations; the ids of those still running at the deadline."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.items())
        late = []
        for operation_id, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                late.append(operation_id)
        return late
