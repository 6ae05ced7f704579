"""The backup schedule, the take-snapshot errand's backup and the guards, on real disks with
the loopback provider: each new snapshot is backed up, retention keeps the newest, a
killed backup is cleaned up at the daemon's start, and a snapshot being copied is kept."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_loopback_backups import kill
from test_loopback_backups import start_hanging_backup

from disk_snapshots import metrics as m
from disk_snapshots.backups.runner import BackupRunner
from disk_snapshots.commands.errands import take_snapshot
from disk_snapshots.daemon.backups import BackupScheduler
from disk_snapshots.metrics import Metrics
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.instance import Disk
from support.configdocs import spec_defaults
from support.disks import write_config

pytestmark = pytest.mark.root


def configure(paths: Paths, doc: dict[str, Any], store: Path, **backups: Any) -> Snapshotter:
    doc["properties"]["schedules"] = []
    doc["properties"]["provider"]["loopback"]["backup_store"] = str(store)
    doc["properties"]["backups"] |= {"jitter": 0, **backups}
    write_config(paths, doc)
    return Snapshotter.load(paths)


def scheduler(snapshotter: Snapshotter, **kwargs: Any) -> BackupScheduler:
    metrics = Metrics(textfile=snapshotter.paths.data / "metrics.prom")
    snapshotter.paths.data.mkdir(parents=True, exist_ok=True)
    runner = BackupRunner(snapshotter, metrics, poll=0.1)
    return BackupScheduler(runner, snapshotter.paths.data / "backups.json", **kwargs)


@contextlib.contextmanager
def running(s: BackupScheduler) -> Iterator[None]:
    stop = threading.Event()
    worker = threading.Thread(target=s.run, args=(stop,))
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=60)
        assert not worker.is_alive()


def wait_for(what: str, predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_schedule_backs_up_each_new_snapshot_and_retention_keeps_the_last_two(
    vm: tuple[Paths, dict[str, Any]], disk: Disk, tmp_path: Path
) -> None:
    paths, doc = vm
    snapshotter = configure(
        paths, doc, tmp_path / "backups", cron="* * * * * *", retention={"keep_last": 2}
    )
    s = scheduler(snapshotter, look_seconds=0.5)
    taken = []
    with running(s):
        for n in range(3):
            (disk.mount / f"file-{n}").write_bytes(b"x" * 2**20)
            taken.append(snapshotter.take_clean("manual").snapshot)
            wait_for(
                f"the backup of snapshot {n}",
                lambda t=taken[-1]: any(
                    b.source_snapshot == t.id and b.state == "completed"
                    for b in snapshotter.backups()
                ),
            )
        time.sleep(1.5)  # runs with nothing new: nothing copied twice
    backups = snapshotter.backups()
    assert [b.source_snapshot for b in backups] == [t.id for t in taken[:0:-1]]
    assert {b.state for b in backups} == {"completed"}
    metrics = s.runner.metrics
    assert metrics is not None
    assert metrics.get(m.BACKUPS_COMPLETED) == 3
    assert metrics.get(m.BACKUP_RETENTION_DELETED) == 1
    assert metrics.get(m.BACKUP_NEWEST) == taken[-1].created_at.timestamp()
    assert metrics.get(m.BACKUP_FAILURES, reason="failed") is None
    text = (paths.data / "metrics.prom").read_text()
    assert f"{m.BACKUP_NEWEST} {taken[-1].created_at.timestamp():g}" in text
    assert json.loads((paths.data / "backups.json").read_text())["last_run"]


def test_a_schedule_without_snapshots_counts_a_failure_and_says_why(
    vm: tuple[Paths, dict[str, Any]], disk: Disk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths, doc = vm
    s = scheduler(configure(paths, doc, tmp_path / "backups", cron="* * * * * *"))
    outcome = s.run_once()
    assert not outcome.ok and outcome.reason == "no-source"
    assert s.runner.metrics is not None
    assert s.runner.metrics.get(m.BACKUP_FAILURES, reason="no-source") == 1
    assert "nothing to back up: this instance has 0 snapshot(s)" in caplog.text


def test_downtime_is_caught_up_once(
    vm: tuple[Paths, dict[str, Any]], disk: Disk, tmp_path: Path
) -> None:
    paths, doc = vm
    snapshotter = configure(paths, doc, tmp_path / "backups", cron="0 3 * * *")
    snapshotter.take_clean("manual")
    now = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
    s = scheduler(snapshotter, clock=lambda: now)
    s.save(now - timedelta(days=2))
    stop = threading.Event()
    runs = []
    original = s.run_once

    def once_then_stop() -> Any:
        runs.append(original())
        stop.set()
        return runs[-1]

    s.run_once = once_then_stop  # type: ignore[method-assign]
    s.run(stop)
    assert [o.ok for o in runs] == [True]
    assert s.last_run() == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def test_the_daemons_start_removes_what_a_killed_backup_left(
    vm: tuple[Paths, dict[str, Any]], disk: Disk, tmp_path: Path
) -> None:
    paths, doc = vm
    store = tmp_path / "backups"
    snapshotter = configure(paths, doc, store)
    snapshot = snapshotter.take_clean("manual").snapshot
    assert isinstance(snapshotter.provider, LoopbackProvider)
    kill(start_hanging_backup(snapshotter.provider, snapshot.id))
    assert [b.state for b in snapshotter.backups()] == ["error"]

    scheduler(snapshotter).start()

    assert snapshotter.backups() == []
    assert list(store.iterdir()) == []


def test_snapshot_retention_keeps_a_snapshot_while_it_is_being_copied(
    vm: tuple[Paths, dict[str, Any]], disk: Disk, tmp_path: Path
) -> None:
    paths, doc = vm
    doc["properties"]["retention"] = {"manual": {"keep_last": 1}}
    snapshotter = configure(paths, doc, tmp_path / "backups")
    first = snapshotter.take_clean("manual").snapshot
    second = snapshotter.take_clean("manual").snapshot
    assert isinstance(snapshotter.provider, LoopbackProvider)
    proc = start_hanging_backup(snapshotter.provider, first.id)
    try:
        plan = snapshotter.prune()
        assert plan.delete == ()
        assert "a backup in progress depends on it" in plan.explain(first.id)
    finally:
        kill(proc)
    assert [s.id for s in snapshotter.prune().delete] == [first.id]
    assert [s.id for s in snapshotter.catalog()] == [second.id]


def test_take_snapshot_with_backup_waits_for_the_backup_and_fails_when_it_fails(
    vm: tuple[Paths, dict[str, Any]],
    disk: Disk,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths, doc = vm
    store = tmp_path / "backups"
    snapshotter = configure(paths, doc, store)
    errand = {"job": "take-snapshot", "properties": spec_defaults("take-snapshot")}
    errand["properties"]["take_snapshot"]["backup"] = True
    paths.job_config("take-snapshot").parent.mkdir(parents=True, exist_ok=True)
    paths.job_config("take-snapshot").write_text(json.dumps(errand))

    assert take_snapshot(paths) == 0
    out = capsys.readouterr().out
    (backup,) = snapshotter.backups()
    assert backup.state == "completed"
    assert f"take-snapshot: backup {backup.id} of snapshot {backup.source_snapshot}" in out

    # The store becomes unusable (a file where the directory was): the errand says so.
    for path in store.iterdir():
        path.unlink()
    store.rmdir()
    store.write_text("not a directory")
    assert take_snapshot(paths) == 1
    out = capsys.readouterr().out
    assert "take-snapshot: backup FAILED: backup failed: the backup store" in out
    assert "(provider.loopback.backup_store) cannot be written" in out
