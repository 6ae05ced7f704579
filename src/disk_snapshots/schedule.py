"""When schedules fire: pure functions of the cron expression, the zone, the instance and now.

Jitter is deterministic per instance and schedule: a hundred instances of one schedule
spread over ``jitter`` seconds instead of calling the IaaS API in the same second, and
each instance keeps its own offset across restarts (so its spacing stays regular).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from disk_snapshots.config import Schedule


def jitter_offset(instance_id: str, schedule: Schedule) -> timedelta:
    if schedule.jitter <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{instance_id}/{schedule.name}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % (schedule.jitter + 1))


def _cron(schedule: Schedule, start: datetime) -> croniter:
    return croniter(schedule.cron, start.astimezone(ZoneInfo(schedule.timezone)))


def next_run(schedule: Schedule, instance_id: str, after: datetime) -> datetime:
    """The first run strictly after ``after`` (UTC), jitter included."""
    offset = jitter_offset(instance_id, schedule)
    fire: datetime = _cron(schedule, after - offset).get_next(datetime)
    return fire.astimezone(UTC) + offset


def previous_run(schedule: Schedule, instance_id: str, before: datetime) -> datetime:
    """The last run at or before ``before`` (UTC), jitter included."""
    offset = jitter_offset(instance_id, schedule)
    # croniter's get_prev is strict; nudge so that a run exactly at ``before`` counts.
    fire: datetime = _cron(schedule, before - offset + timedelta(microseconds=1)).get_prev(datetime)
    return fire.astimezone(UTC) + offset


@dataclass(frozen=True)
class Due:
    schedule: Schedule
    at: datetime
    catch_up: bool = False


def catch_up(
    schedule: Schedule, instance_id: str, last_run: datetime | None, now: datetime
) -> Due | None:
    """At most one run for everything missed while the daemon was down.

    With no record of a last run (a new instance) nothing is owed: the schedule simply
    starts. Otherwise, if a run was due since the last one, one run is due now.
    """
    if last_run is None:
        return None
    missed = previous_run(schedule, instance_id, now)
    if missed > last_run:
        return Due(schedule, missed, catch_up=True)
    return None
