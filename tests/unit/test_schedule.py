"""Schedule timing: cron in a zone, deterministic jitter, at most one catch-up."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from disk_snapshots.config import Retention
from disk_snapshots.config import Schedule
from disk_snapshots.schedule import catch_up
from disk_snapshots.schedule import jitter_offset
from disk_snapshots.schedule import next_run
from disk_snapshots.schedule import previous_run


def schedule(cron: str = "0 * * * *", timezone: str = "UTC", jitter: int = 0) -> Schedule:
    return Schedule("hourly", cron, timezone, jitter, "instance", Retention(keep_last=3))


def test_next_and_previous_without_jitter() -> None:
    now = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
    assert next_run(schedule(), "i", now) == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
    assert previous_run(schedule(), "i", now) == datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    exact = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert previous_run(schedule(), "i", exact) == exact
    assert next_run(schedule(), "i", exact) == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)


def test_timezone_is_honoured_across_dst() -> None:
    nightly = schedule("0 2 * * *", "Europe/Berlin")
    winter = next_run(nightly, "i", datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
    summer = next_run(nightly, "i", datetime(2026, 7, 10, 12, 0, tzinfo=UTC))
    assert (winter.hour, summer.hour) == (1, 0)  # 02:00 CET is 01:00 UTC, CEST 00:00 UTC


def test_seconds_field_for_fast_schedules() -> None:
    fast = schedule("* * * * * */5")
    now = datetime(2026, 11, 29, 10, 0, 1, tzinfo=UTC)
    assert next_run(fast, "i", now) == datetime(2026, 11, 29, 10, 0, 5, tzinfo=UTC)


@given(instance=st.text(min_size=1, max_size=40), jitter=st.integers(0, 3600))
def test_jitter_is_bounded_and_stable(instance: str, jitter: int) -> None:
    s = schedule(jitter=jitter)
    offset = jitter_offset(instance, s)
    assert timedelta(0) <= offset <= timedelta(seconds=jitter)
    assert offset == jitter_offset(instance, s)
    now = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
    run = next_run(s, instance, now)
    assert run > now
    # Without its offset, every run is on the hour, as the cron expression says.
    base = run - offset
    assert (base.minute, base.second, base.microsecond) == (0, 0, 0)


def test_jitter_spreads_instances() -> None:
    offsets = {jitter_offset(f"instance-{n}", schedule(jitter=300)) for n in range(100)}
    assert len(offsets) > 50


def test_catch_up_owes_at_most_one_run() -> None:
    s = schedule()
    now = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
    assert catch_up(s, "i", None, now) is None  # a new instance owes nothing
    assert catch_up(s, "i", datetime(2026, 11, 29, 10, 0, tzinfo=UTC), now) is None
    owed = catch_up(s, "i", datetime(2026, 11, 28, 3, 0, tzinfo=UTC), now)  # down for a day
    assert owed is not None and owed.catch_up
    assert owed.at == datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
