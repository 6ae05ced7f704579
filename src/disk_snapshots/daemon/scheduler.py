"""The scheduler: runs every schedule of this instance at its times, with retention after.

Cron expressions with a time zone and a per-instance jitter (schedule.py), no overlap
(runs that fell due while one was going are skipped and counted), and at most one
catch-up run for what was missed while the daemon was down.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path

from disk_snapshots import metrics as m
from disk_snapshots.config import Schedule
from disk_snapshots.metrics import Metrics
from disk_snapshots.schedule import catch_up
from disk_snapshots.schedule import next_run
from disk_snapshots.sets.coordinator import run_set_schedule
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.triggers import schedule_trigger

log = logging.getLogger("disk_snapshots.daemon")

MAX_SLEEP = 30.0


@dataclass
class Scheduler:
    snapshotter: Snapshotter
    metrics: Metrics
    state_file: Path
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    last_runs: dict[str, datetime] = field(default_factory=dict)

    def load_state(self) -> None:
        try:
            raw = json.loads(self.state_file.read_text())
            self.last_runs = {k: datetime.fromisoformat(v) for k, v in raw.items()}
        except (OSError, ValueError, AttributeError):
            self.last_runs = {}

    def save_state(self) -> None:
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({k: v.isoformat() for k, v in self.last_runs.items()}))
        tmp.replace(self.state_file)

    def run(self, stop: threading.Event) -> None:
        schedules = self.snapshotter.config.schedules
        instance = self.snapshotter.config.spec.id
        self.load_state()
        now = self.clock()
        upcoming: dict[str, datetime] = {}
        for schedule in schedules:
            owed = catch_up(schedule, instance, self.last_runs.get(schedule.name), now)
            upcoming[schedule.name] = owed.at if owed else next_run(schedule, instance, now)
            if owed:
                log.info("schedule %s: catching up the run due at %s", schedule.name, owed.at)
            elif schedule.name not in self.last_runs:
                # A first start owes nothing; remember it so later downtime is noticed.
                self.last_runs[schedule.name] = now
        self.save_state()
        by_name = {s.name: s for s in schedules}
        while not stop.is_set() and upcoming:
            name, at = min(upcoming.items(), key=lambda item: item[1])
            wait = (at - self.clock()).total_seconds()
            if wait > 0:
                stop.wait(min(wait, MAX_SLEEP))
                self.metrics.refresh()
                continue
            self.run_once(by_name[name])
            self.last_runs[name] = at
            self.save_state()
            after = self.clock()
            following = next_run(by_name[name], instance, at)
            skipped = 0
            while following <= after:  # runs that fell due while this one was going
                skipped += 1
                following = next_run(by_name[name], instance, following)
            if skipped:
                log.warning(
                    "schedule %s: skipped %d run(s): the previous run was still going",
                    name,
                    skipped,
                )
                self.metrics.inc(m.SKIPPED_RUNS, skipped, schedule=name)
            upcoming[name] = following

    def run_once(self, schedule: Schedule) -> bool:
        trigger = schedule_trigger(schedule.name)
        if schedule.scope == "set":
            # Only the coordinator acts; the others take part through their agent API.
            return run_set_schedule(self.snapshotter, schedule, self.metrics)
        started = time.monotonic()
        try:
            taken = self.snapshotter.take(trigger)
            plan = self.snapshotter.prune()
        except SNAPSHOT_ERRORS as err:
            log.error("schedule %s: snapshot failed: %s", schedule.name, err)
            self.metrics.inc(m.FAILURES, schedule=schedule.name)
            return False
        for warning in taken.warnings:
            log.warning("schedule %s: %s", schedule.name, warning)
        m.record_snapshot(
            self.metrics,
            started=started,
            frozen_seconds=taken.frozen_seconds,
            schedule=schedule.name,
        )
        self.metrics.inc(m.TAKEN, trigger=trigger)
        if plan.delete:
            self.metrics.inc(m.RETENTION_DELETED, len(plan.delete))
        log.info(
            "schedule %s: snapshot %s (%s, %s); retention deleted %d",
            schedule.name,
            taken.snapshot.id,
            taken.snapshot.annotations.consistency,
            taken.snapshot.annotations.role,
            len(plan.delete),
        )
        return True
