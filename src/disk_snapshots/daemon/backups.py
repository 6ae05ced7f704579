"""The backup schedule in the daemon: its own thread, so that a backup copying for an hour
never delays a snapshot schedule.

At start it removes what killed backups left (the provider's cleanup_leftovers), says
which pending backups are past ``backups.deadline``, and sets the newest-backup metric.
Then it runs ``backups.cron`` (time zone, per-instance jitter, at most one catch-up after
downtime, as snapshot schedules do), each run through backups/runner.py, and looks at the
pending backups and the metric again every few minutes. A run that outlasts the interval
skips the runs it overlapped and counts them, as the snapshot scheduler does.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path

from disk_snapshots import metrics as m
from disk_snapshots.backups.runner import BackupOutcome
from disk_snapshots.backups.runner import BackupRunner
from disk_snapshots.providers.base import LeavesDebris
from disk_snapshots.providers.base import backup_tier
from disk_snapshots.schedule import catch_up
from disk_snapshots.schedule import next_run
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS

log = logging.getLogger("disk_snapshots.daemon")

LOOK_SECONDS = 300.0  # how often pending backups and the metric are looked at again
SCHEDULE = "backup"  # the schedule label of the skipped-runs metric


@dataclass
class BackupScheduler:
    runner: BackupRunner
    state_file: Path
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    look_seconds: float = LOOK_SECONDS

    def last_run(self) -> datetime | None:
        try:
            return datetime.fromisoformat(json.loads(self.state_file.read_text())["last_run"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, at: datetime) -> None:
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"last_run": at.isoformat()}))
        tmp.replace(self.state_file)

    def start(self) -> None:
        """Leftovers, overdue backups and the metric, before the first run."""
        provider = self.runner.snapshotter.provider
        if isinstance(provider, LeavesDebris):
            try:
                removed = provider.cleanup_leftovers()
            except SNAPSHOT_ERRORS as err:
                log.error("removing what killed backups left behind failed: %s", err)
            else:
                for name in removed:
                    log.warning("removed %s, left behind by a killed backup or restore", name)
        self.runner.refresh()
        self.runner.check_pending()

    def run(self, stop: threading.Event) -> None:
        if backup_tier(self.runner.snapshotter.provider) is None:
            return
        self.runner.wait = stop.wait
        self.start()
        config = self.runner.snapshotter.config
        if not config.backups.cron:
            log.info("backups: no backups.cron; backups are made by bin/snapshots backup only")
            self._look_until(stop, None)
            return
        schedule = config.backups.schedule()
        instance = config.spec.id
        now = self.clock()
        last = self.last_run()
        owed = catch_up(schedule, instance, last, now)
        if last is None:
            self.save(now)  # a first start owes nothing; later downtime is noticed
        at = owed.at if owed else next_run(schedule, instance, now)
        while not stop.is_set():
            if not self._look_until(stop, at):
                return
            self.run_once()
            self.save(at)
            at = self._following(at)

    def run_once(self) -> BackupOutcome:
        """One scheduled run; the runner logs and counts how it went."""
        return self.runner.run()

    def _look_until(self, stop: threading.Event, at: datetime | None) -> bool:
        """Wait until ``at`` (forever when None), looking at pending backups on the way;
        False when the daemon stops first."""
        while at is None or self.clock() < at:
            left = self.look_seconds if at is None else (at - self.clock()).total_seconds()
            if stop.wait(max(0.0, min(left, self.look_seconds))):
                return False
            self.runner.refresh()
            self.runner.check_pending()
        return True

    def _following(self, at: datetime) -> datetime:
        """The next run after ``at``; the ones this run outlasted are skipped and counted."""
        schedule = self.runner.snapshotter.config.backups.schedule()
        instance = self.runner.snapshotter.config.spec.id
        after = self.clock()
        following = next_run(schedule, instance, at)
        skipped = 0
        while following <= after:
            skipped += 1
            following = next_run(schedule, instance, following)
        if skipped:
            log.warning(
                "backup schedule: skipped %d run(s): the previous one was still going", skipped
            )
            if self.runner.metrics is not None:
                self.runner.metrics.inc(m.SKIPPED_RUNS, skipped, schedule=SCHEDULE)
        return following
