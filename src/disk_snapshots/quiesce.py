"""flush → freeze → snapshot → thaw → resume, with a thaw that cannot be skipped.

The filesystem is thawed in ``finally`` and, independently, by a watchdog process
(disk_snapshots.watchdog) that thaws at the lease deadline even if this process is
SIGKILLed. A snapshot whose freeze did not hold until its point in time was fixed
is deleted, never recorded as consistent. A failed flush aborts the snapshot unless
``quiesce.on_failure`` is ``crash-consistent``; the recorded consistency says what
really happened either way (DESIGN §5, §12).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path

from disk_snapshots import fsops
from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import Consistency
from disk_snapshots.annotations import Role
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import QuiesceConfig
from disk_snapshots.instance import Disk
from disk_snapshots.providers.base import Provider
from disk_snapshots.services import Service
from disk_snapshots.services import ServiceError
from disk_snapshots.watchdog import expired_path

log = logging.getLogger(__name__)

WATCHDOG_READY_SECONDS = 10.0


class QuiesceError(RuntimeError):
    """The snapshot was not taken (or was deleted); the message says why."""


@dataclass
class FreezeOutcome:
    lease: Path
    frozen_seconds: float = 0.0

    def held(self) -> bool:
        """True while the watchdog has not claimed the lease (the freeze still holds)."""
        return self.lease.exists() and not expired_path(self.lease).exists()


def _start_watchdog(lease: Path, log_path: Path | None) -> subprocess.Popen[bytes]:
    stderr = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        # Its own session: a SIGKILL of our process group must not take the watchdog along.
        # stdout is a pipe of ours, never drain's stdout, which the agent waits on.
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "disk_snapshots.watchdog", str(lease)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        if log_path and not isinstance(stderr, int):
            stderr.close()
    pipe = watchdog.stdout
    if pipe is None:  # Popen always makes it with stdout=PIPE; this narrows the type.
        raise QuiesceError("the freeze watchdog has no stdout pipe")
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        ready = selector.select(timeout=WATCHDOG_READY_SECONDS)
    line = pipe.readline() if ready else b""
    pipe.close()
    if line.strip() != b"ready":
        watchdog.kill()
        watchdog.wait()
        raise QuiesceError("the freeze watchdog did not start; not freezing without it")
    return watchdog


@contextlib.contextmanager
def frozen(
    mount: Path, timeout: int, lease_dir: Path, log_path: Path | None = None
) -> Iterator[FreezeOutcome]:
    """Freeze ``mount`` for at most ``timeout`` seconds, guarded by the watchdog."""
    lease_dir.mkdir(parents=True, exist_ok=True)
    lease = lease_dir / f"freeze-{hashlib.sha256(str(mount).encode()).hexdigest()[:12]}.lease"
    expired_path(lease).unlink(missing_ok=True)
    if lease.exists():
        holder = json.loads(lease.read_text()).get("pid", 0)
        if holder and Path(f"/proc/{holder}").exists():
            raise QuiesceError(f"{mount} is already being frozen by process {holder}")
    record = {"mount": str(mount), "deadline": time.time() + timeout, "pid": os.getpid()}
    tmp = lease.with_name(lease.name + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(lease)
    outcome = FreezeOutcome(lease=lease)
    try:
        watchdog = _start_watchdog(lease, log_path)
    except BaseException:
        lease.unlink(missing_ok=True)
        raise
    started = time.monotonic()
    try:
        try:
            fsops.freeze(mount)
        except OSError as err:
            raise QuiesceError(f"freezing {mount} failed: {err}") from None
        yield outcome
    finally:
        try:
            thawed = fsops.thaw(mount)
        except OSError as err:
            thawed = False
            log.error(
                "thawing %s failed: %s; the watchdog thaws it at the lease deadline", mount, err
            )
        outcome.frozen_seconds = time.monotonic() - started
        if not thawed and outcome.held():
            log.warning("%s was not frozen any more when the snapshot was done", mount)
        lease.unlink(missing_ok=True)
        try:
            watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


@dataclass
class Taken:
    snapshot: Snapshot
    frozen_seconds: float
    warnings: list[str] = field(default_factory=list)


def consistency_of(flushed: bool, froze: bool) -> Consistency:
    if flushed and froze:
        return "app"
    if froze:
        return "fs"
    return "crash"


def take_quiesced(
    *,
    disk: Disk,
    provider: Provider,
    service: Service,
    quiesce: QuiesceConfig,
    annotate: Callable[[Consistency, Role, datetime], Annotations],
    lease_dir: Path,
    log_path: Path | None = None,
) -> Taken:
    """Flush, freeze, snapshot, thaw, resume; the annotation says what really happened."""
    warnings: list[str] = []
    try:
        role: Role = service.role()
    except ServiceError as err:
        role = "unknown"
        warnings.append(f"role unknown: {err}")
    flushed = False
    try:
        flushed = service.flush()
    except ServiceError as err:
        if quiesce.on_failure == "abort":
            raise QuiesceError(
                f"no snapshot taken: {err} (quiesce.on_failure is abort; set it to "
                "crash-consistent to snapshot anyway, recorded as such)"
            ) from None
        warnings.append(f"flush failed, snapshot is not application-consistent: {err}")
    try:
        if not quiesce.freeze:
            moment = datetime.now(UTC)
            snapshot = provider.snapshot(
                disk, annotate(consistency_of(flushed, False), role, moment)
            )
            return Taken(snapshot, 0.0, warnings)
        fsops.syncfs(disk.mount)
        provider.prepare(disk)
        with frozen(disk.mount, quiesce.freeze_timeout, lease_dir, log_path) as outcome:
            moment = datetime.now(UTC)
            snapshot = provider.snapshot(
                disk, annotate(consistency_of(flushed, True), role, moment)
            )
            if not outcome.held():
                provider.delete(snapshot.id)
                raise QuiesceError(
                    f"the freeze of {disk.mount} was released by the watchdog before the snapshot "
                    f"was fixed (quiesce.freeze_timeout {quiesce.freeze_timeout}s); "
                    f"snapshot {snapshot.id} deleted"
                )
        return Taken(snapshot, outcome.frozen_seconds, warnings)
    finally:
        if flushed:
            try:
                service.resume()
            except ServiceError as err:
                warnings.append(f"resume after the snapshot failed: {err}")
