"""One backup run, the same for the daemon's schedule, ``bin/snapshots backup`` and the
take-snapshot errand: choose the snapshot, start its backup (or find the one already
copying it), wait until the provider reports it completed or ``backups.deadline``
passes, then apply ``backups.retention``. Every run ends in an outcome that says what
happened; a failure or an overrun is never dropped (the caller turns it into a log
line and a metric, or an exit code).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Literal

from disk_snapshots import metrics as m
from disk_snapshots.backups.decisions import NothingToBackUp
from disk_snapshots.backups.decisions import backup_of
from disk_snapshots.backups.decisions import choose_source
from disk_snapshots.backups.decisions import newest_completed
from disk_snapshots.backups.decisions import overdue
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.metrics import Metrics
from disk_snapshots.providers.base import BackupTier
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import require_backup_tier
from disk_snapshots.retention import plan_backup_retention
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import Snapshotter

log = logging.getLogger(__name__)

# "stopped": the daemon is stopping while EBS still copies; not a failure, the next
# start looks at the backup again (BackupRunner.check_pending).
Reason = Literal["", "failed", "deadline", "no-source", "stopped"]
POLL_SECONDS = 15.0


@dataclass(frozen=True)
class BackupOutcome:
    ok: bool
    message: str
    reason: Reason = ""
    backup: Backup | None = None
    seconds: float = 0.0
    deleted: tuple[str, ...] = ()

    def with_deleted(self, deleted: tuple[str, ...], problem: str) -> BackupOutcome:
        message = self.message + (f"; retention: {problem}" if problem else "")
        return BackupOutcome(self.ok, message, self.reason, self.backup, self.seconds, deleted)


def _no_wait(seconds: float) -> bool:
    time.sleep(seconds)
    return False


@dataclass
class BackupRunner:
    snapshotter: Snapshotter
    metrics: Metrics | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Waits between looks at a pending backup; True means stop waiting (daemon stopping).
    wait: Callable[[float], bool] = _no_wait
    poll: float = POLL_SECONDS
    reported: set[str] = field(default_factory=set)  # overdue backups already reported

    @property
    def _mine(self) -> Query:
        spec = self.snapshotter.config.spec
        return Query(deployment=spec.deployment, instance=spec.id)

    def run(self, snapshot_id: str | None = None) -> BackupOutcome:
        """Back up ``snapshot_id``, or the snapshot ``backups.source`` chooses."""
        started = time.monotonic()
        try:
            outcome = self._run(snapshot_id, started)
        except NothingToBackUp as err:
            outcome = BackupOutcome(False, f"nothing to back up: {err}", "no-source")
        except SNAPSHOT_ERRORS as err:
            # A copy made here (loopback) is stopped at the deadline by the provider itself.
            deadline = self.snapshotter.config.backups.deadline.total_seconds()
            late = time.monotonic() - started >= deadline
            outcome = BackupOutcome(
                False, f"backup failed: {err}", "deadline" if late else "failed"
            )
        if outcome.ok:
            outcome = self._prune(outcome)
        self._record(outcome)
        return outcome

    def _run(self, snapshot_id: str | None, started: float) -> BackupOutcome:
        s = self.snapshotter
        tier = require_backup_tier(s.provider)
        config = s.config.backups
        if snapshot_id:
            source = s.provider.get(snapshot_id)
        else:
            source = choose_source(s.catalog(), s.config.spec.id, config.source)
        existing = backup_of(tier.backups(Query(deployment=s.config.spec.deployment)), source.id)
        if existing is not None and existing.state == "completed":
            return BackupOutcome(True, f"{_label(source)} is already backed up: {existing.id}")
        if existing is not None:
            log.info("backup %s of %s is still being copied; waiting", existing.id, source.id)
            backup = existing
        else:
            backup = tier.backup(source.id, timeout=config.deadline.total_seconds())
            log.info("backup %s of %s started in %s", backup.id, source.id, backup.location)
        return self._await(tier, backup, source, started)

    def _await(
        self, tier: BackupTier, backup: Backup, source: Snapshot, started: float
    ) -> BackupOutcome:
        deadline = self.snapshotter.config.backups.deadline
        while backup.state == "pending":
            if overdue(backup, deadline, self.clock()):
                self.reported.add(backup.id)
                return BackupOutcome(
                    False,
                    f"backup {backup.id} of {_label(source)} is still not completed "
                    f"{deadline} after it started ({backup.detail}); backups.deadline passed",
                    "deadline",
                    backup,
                )
            if self.wait(self.poll):
                return BackupOutcome(
                    False, f"stopped waiting for backup {backup.id} ({backup.detail})", "stopped"
                )
            backup = tier.get_backup(backup.id)
        seconds = time.monotonic() - started
        if backup.state != "completed":
            return BackupOutcome(
                False, f"backup {backup.id} of {_label(source)} failed: {backup.detail}", "failed"
            )
        where = backup.location
        text = f"backup {backup.id} of {_label(source)} completed in {where} ({seconds:.1f}s)"
        return BackupOutcome(True, text, backup=backup, seconds=seconds)

    def _prune(self, outcome: BackupOutcome) -> BackupOutcome:
        """backups.retention over this instance's backups; a failure is said, never hidden."""
        s = self.snapshotter
        deleted: list[str] = []
        try:
            tier = require_backup_tier(s.provider)
            plan = plan_backup_retention(
                tier.backups(self._mine),
                s.config.backups.retention,
                self.clock(),
                instance_id=s.config.spec.id,
            )
            for backup in plan.delete:
                log.info("backup retention deletes %s (%s)", backup.id, backup.state)
                tier.delete_backup(backup.id)
                deleted.append(backup.id)
        except (UnknownBackup, *SNAPSHOT_ERRORS) as err:
            log.error("backup retention failed: %s", err)
            return outcome.with_deleted(tuple(deleted), f"failed: {err}")
        return outcome.with_deleted(tuple(deleted), "")

    def _record(self, outcome: BackupOutcome) -> None:
        (log.info if outcome.ok else log.error)("%s", outcome.message)
        metrics = self.metrics
        if metrics is None:
            return
        if outcome.ok and outcome.backup is not None:
            metrics.inc(m.BACKUPS_COMPLETED)
            metrics.set(m.BACKUP_DURATION, _duration(outcome.backup, outcome.seconds))
        elif outcome.reason not in ("", "stopped"):
            metrics.inc(m.BACKUP_FAILURES, reason=outcome.reason)
        if outcome.deleted:
            metrics.inc(m.BACKUP_RETENTION_DELETED, len(outcome.deleted))
        self.refresh()

    def refresh(self) -> None:
        """The newest completed backup's point in time, as the metric says it."""
        tier = self.snapshotter.provider
        if self.metrics is None:
            return
        try:
            newest = newest_completed(
                require_backup_tier(tier).backups(self._mine), self.snapshotter.config.spec.id
            )
        except SNAPSHOT_ERRORS as err:
            log.warning("cannot list backups for the metrics: %s", err)
            return
        if newest is not None:
            self.metrics.set(m.BACKUP_NEWEST, newest.created_at.timestamp())

    def check_pending(self) -> list[BackupOutcome]:
        """Pending backups of this instance past backups.deadline, each reported once."""
        try:
            tier = require_backup_tier(self.snapshotter.provider)
            pending = [b for b in tier.backups(self._mine) if b.state == "pending"]
        except SNAPSHOT_ERRORS as err:
            log.warning("cannot list backups to check the pending ones: %s", err)
            return []
        late: list[BackupOutcome] = []
        deadline = self.snapshotter.config.backups.deadline
        for backup in pending:
            if backup.id in self.reported or not overdue(backup, deadline, self.clock()):
                continue
            self.reported.add(backup.id)
            outcome = BackupOutcome(
                False,
                f"backup {backup.id} of {backup.source_snapshot} is still not completed "
                f"{deadline} after it started ({backup.detail}); backups.deadline passed",
                "deadline",
                backup,
            )
            self._record(outcome)
            late.append(outcome)
        return late


def _label(snapshot: Snapshot) -> str:
    a = snapshot.annotations
    return f"snapshot {snapshot.id} ({a.instance}, {a.trigger}, {a.consistency})"


def _duration(backup: Backup, fallback: float) -> float:
    if backup.started_at and backup.completed_at:
        return max(0.0, (backup.completed_at - backup.started_at).total_seconds())
    return fallback
