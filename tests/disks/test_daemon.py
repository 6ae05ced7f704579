"""The scheduler on a real disk: fast schedules snapshot, prune to keep_last, catch up once."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

from disk_snapshots.daemon.scheduler import Scheduler
from disk_snapshots.metrics import Metrics
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.instance import Disk
from support.disks import write_config

pytestmark = pytest.mark.root


def scheduler(paths: Paths, clock: Any = None) -> Scheduler:
    metrics = Metrics(labels={"deployment": "redis"}, textfile=paths.data / "metrics.prom")
    paths.data.mkdir(parents=True, exist_ok=True)
    kwargs = {"clock": clock} if clock else {}
    return Scheduler(Snapshotter.load(paths), metrics, paths.data / "schedules.json", **kwargs)


def test_fast_schedule_snapshots_and_prunes(vm: tuple[Paths, dict[str, Any]], disk: Disk) -> None:
    paths, doc = vm
    doc["properties"]["schedules"] = [
        {"name": "fast", "cron": "* * * * * *", "retention": {"keep_last": 2}}
    ]
    write_config(paths, doc)
    s = scheduler(paths)
    stop = threading.Event()
    worker = threading.Thread(target=s.run, args=(stop,))
    worker.start()
    time.sleep(4.5)
    stop.set()
    worker.join(timeout=30)
    assert not worker.is_alive()
    snapshots = Snapshotter.load(paths).catalog()
    assert [x.annotations.trigger for x in snapshots] == ["schedule:fast"] * 2
    taken = s.metrics.get("disk_snapshots_taken_total", trigger="schedule:fast")
    assert taken is not None and taken >= 3
    assert s.metrics.get("disk_snapshots_retention_deleted_total") == taken - 2
    text = (paths.data / "metrics.prom").read_text()
    assert (
        'disk_snapshots_last_success_timestamp_seconds{deployment="redis",schedule="fast"}' in text
    )


def test_downtime_is_caught_up_once(vm: tuple[Paths, dict[str, Any]], disk: Disk) -> None:
    paths, doc = vm
    doc["properties"]["schedules"] = [{"name": "hourly", "cron": "0 * * * *"}]
    write_config(paths, doc)
    now = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
    paths.data.mkdir(parents=True, exist_ok=True)
    (paths.data / "schedules.json").write_text(
        json.dumps({"hourly": (now - timedelta(days=2)).isoformat()})
    )
    s = scheduler(paths, clock=lambda: now)
    stop = threading.Event()
    s.metrics.textfile = None
    original = s.run_once

    def once_then_stop(schedule: Any) -> bool:
        ok = original(schedule)
        stop.set()
        return ok

    s.run_once = once_then_stop  # type: ignore[method-assign]
    s.run(stop)
    assert len(Snapshotter.load(paths).catalog()) == 1
    assert s.last_runs["hourly"] == datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def test_scope_set_is_refused_not_faked(vm: tuple[Paths, dict[str, Any]], disk: Disk) -> None:
    paths, doc = vm
    doc["properties"]["schedules"] = [{"name": "cut", "cron": "* * * * * *", "scope": "set"}]
    write_config(paths, doc)
    s = scheduler(paths)
    assert s.run_once(s.snapshotter.config.schedules[0]) is False
    assert s.metrics.get("disk_snapshots_failures_total", schedule="cut") == 1
    assert Snapshotter.load(paths).catalog() == []
