"""role → flush → freeze → (snapshot) → thaw → resume, with a thaw that cannot be skipped.

``quiesced`` is the one sequence: a single snapshot (``take_quiesced``) and a set
member (sets/member.py, which holds the freeze across requests) both run it. The
filesystem is thawed in ``finally`` and, independently, by a watchdog process
(commands/watchdog.py) that thaws at the lease deadline even if this process is
SIGKILLed. A snapshot whose freeze did not hold until its point in time was fixed is
deleted, never recorded as consistent. A failed flush aborts the snapshot unless
``quiesce.on_failure`` is ``crash-consistent``; the recorded consistency says what
really happened either way (docs/catalog.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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

from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import Consistency
from disk_snapshots.annotations import Role
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import QuiesceConfig
from disk_snapshots.errors import ReleaseError
from disk_snapshots.providers.base import Provider
from disk_snapshots.snapshot import lease
from disk_snapshots.vm import fsops
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.processes import alive
from disk_snapshots.vm.services import Service
from disk_snapshots.vm.services import ServiceError

log = logging.getLogger(__name__)

WATCHDOG_READY_SECONDS = 10.0
WATCHDOG = "disk_snapshots.commands.watchdog"
# How long a snapshot waits for another one of the same disk to finish: drain, the
# schedule, a set member, the API may all want one at the same moment.
TURN_WAIT_SECONDS = 120.0
TURN_POLL_SECONDS = 0.05


class QuiesceError(ReleaseError, RuntimeError):
    """The snapshot was not taken (or was deleted); the message says why."""


class FlushRefused(QuiesceError):
    """The flush failed and ``quiesce.on_failure`` is ``abort``: nothing was frozen."""

    def __init__(self, cause: ServiceError) -> None:
        self.cause = cause
        super().__init__(
            f"no snapshot taken: {cause} (quiesce.on_failure is abort; set it to "
            "crash-consistent to snapshot anyway, recorded as such)"
        )


@dataclass
class FreezeOutcome:
    lease: Path
    frozen_seconds: float = 0.0

    def held(self) -> bool:
        """True while the watchdog has not claimed the lease (the freeze still holds)."""
        return self.lease.exists() and not lease.expired_path(self.lease).exists()


def _start_watchdog(path: Path, log_path: Path | None) -> subprocess.Popen[bytes]:
    stderr = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        # Its own session: a SIGKILL of our process group must not take the watchdog along.
        # stdout is a pipe of ours, never drain's stdout, which the agent waits on.
        watchdog = subprocess.Popen(
            [sys.executable, "-m", WATCHDOG, str(path)],
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
    path = lease_dir / f"freeze-{hashlib.sha256(str(mount).encode()).hexdigest()[:12]}.lease"
    lease.expired_path(path).unlink(missing_ok=True)
    if path.exists():
        holder = lease.holder(path)
        if holder and alive(holder):
            raise QuiesceError(f"{mount} is already being frozen by process {holder}")
    lease.write(path, lease.Lease(str(mount), time.time() + timeout, os.getpid()))
    outcome = FreezeOutcome(lease=path)
    try:
        watchdog = _start_watchdog(path, log_path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    started = time.monotonic()
    try:
        try:
            fsops.freeze(mount)
        except OSError as err:
            raise QuiesceError(f"freezing {mount} failed: {err}") from None
        yield outcome
    finally:
        _thaw(mount, outcome, started)
        path.unlink(missing_ok=True)
        try:
            watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


@contextlib.contextmanager
def one_at_a_time(lock_dir: Path, mount: Path, wait: float) -> Iterator[None]:
    """Hold this disk's snapshot turn: the others wait (at most ``wait`` seconds) instead
    of failing on a freeze in progress. A flock, so a killed holder frees it at once."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    # Named by the filesystem, not the path: a bind mount of the same disk (what a test
    # or another job sees) shares the turn, as it would share the freeze.
    try:
        name = f"dev-{mount.stat().st_dev}"
    except OSError:
        name = hashlib.sha256(str(mount).encode()).hexdigest()[:12]
    path = lock_dir / f"snapshot-{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if time.monotonic() >= deadline:
                    raise QuiesceError(
                        f"another snapshot of {mount} (process {holder}) did not finish "
                        f"within {wait:.0f}s; no snapshot taken"
                    ) from None
                if not said:
                    log.info("waiting for the snapshot process %s is taking of %s", holder, mount)
                    said = True
                time.sleep(TURN_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _thaw(mount: Path, outcome: FreezeOutcome, started: float) -> None:
    try:
        thawed = fsops.thaw(mount)
    except OSError as err:
        thawed = False
        log.error("thawing %s failed: %s; the watchdog thaws it at the lease deadline", mount, err)
    outcome.frozen_seconds = time.monotonic() - started
    if not thawed and outcome.held():
        log.warning("%s was not frozen any more when the snapshot was done", mount)


def consistency_of(flushed: bool, froze: bool) -> Consistency:
    if flushed and froze:
        return "app"
    if froze:
        return "fs"
    return "crash"


@dataclass
class Quiesced:
    """What ``quiesced`` achieved: the snapshot taken inside records exactly this."""

    role: Role = "unknown"
    flushed: bool = False
    # None when quiesce.freeze is false: the disk takes writes throughout.
    freeze: FreezeOutcome | None = None
    # time.monotonic() when writes stopped (or would have): the lease counts from here.
    since: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def consistency(self) -> Consistency:
        return consistency_of(self.flushed, self.freeze is not None)


@dataclass(frozen=True)
class Freezer:
    """Where and for how long ``quiesced`` may freeze this instance's disk."""

    disk: Disk
    provider: Provider
    service: Service
    quiesce: QuiesceConfig
    lease_dir: Path
    log_path: Path | None = None
    wait_seconds: float = TURN_WAIT_SECONDS  # for another snapshot of the disk to finish


@contextlib.contextmanager
def quiesced(freezer: Freezer, lease_seconds: int) -> Iterator[Quiesced]:
    """Role, flush, freeze (for at most ``lease_seconds``); thaw and resume on the way out;
    each in its turn: a second snapshot of the disk waits for the first (one_at_a_time).

    Raises FlushRefused before anything is frozen when the flush fails and
    quiesce.on_failure is abort; a flush that fails otherwise is a warning, and the
    consistency says the snapshot is not application-consistent.
    """
    turn = one_at_a_time(freezer.lease_dir, freezer.disk.mount, freezer.wait_seconds)
    with turn, _quiesced(freezer, lease_seconds) as state:
        yield state


@contextlib.contextmanager
def _quiesced(freezer: Freezer, lease_seconds: int) -> Iterator[Quiesced]:
    state = Quiesced()
    try:
        state.role = freezer.service.role()
    except ServiceError as err:
        state.warnings.append(f"role unknown: {err}")
    try:
        state.flushed = freezer.service.flush()
    except ServiceError as err:
        if freezer.quiesce.on_failure == "abort":
            raise FlushRefused(err) from None
        state.warnings.append(f"flush failed, snapshot is not application-consistent: {err}")
    try:
        # What the filesystem still holds in memory goes to the disk first: without a
        # freeze this is all that puts it in the snapshot; with one, the writes the
        # provider would otherwise flush inside the freeze (loopback: the image's dirty
        # pages) go out now, while the disk still takes writes.
        fsops.syncfs(freezer.disk.mount)
        freezer.provider.prepare(freezer.disk)
        if not freezer.quiesce.freeze:
            state.since = time.monotonic()
            yield state
            return
        # The lease bounds the freeze, not the flush before it.
        state.since = time.monotonic()
        with frozen(freezer.disk.mount, lease_seconds, freezer.lease_dir, freezer.log_path) as fr:
            state.freeze = fr
            yield state
    finally:
        if state.flushed:
            try:
                freezer.service.resume()
            except ServiceError as err:
                state.warnings.append(f"resume after the snapshot failed: {err}")


@dataclass
class Taken:
    snapshot: Snapshot
    frozen_seconds: float
    warnings: list[str] = field(default_factory=list)


def snapshot_quiesced(
    freezer: Freezer, annotate: Callable[[Consistency, Role, datetime], Annotations]
) -> Taken:
    """Flush, freeze, snapshot, thaw, resume; the annotation says what really happened."""
    disk, provider, timeout = freezer.disk, freezer.provider, freezer.quiesce.freeze_timeout
    with quiesced(freezer, timeout) as state:
        moment = datetime.now(UTC)
        snapshot = provider.snapshot(disk, annotate(state.consistency, state.role, moment))
        if state.freeze is not None and not state.freeze.held():
            provider.delete(snapshot.id)
            raise QuiesceError(
                f"the freeze of {disk.mount} was released by the watchdog before the snapshot "
                f"was fixed (quiesce.freeze_timeout {timeout}s); snapshot {snapshot.id} deleted"
            )
    frozen_seconds = state.freeze.frozen_seconds if state.freeze is not None else 0.0
    return Taken(snapshot, frozen_seconds, state.warnings)
