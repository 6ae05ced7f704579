"""One snapshot of a disk at a time: the second waits for the first instead of failing.

A drain that coincides with a scheduled snapshot used to fail the deploy with "already
being frozen". Now every taker (drain, the schedule, a set member, the API, a clean
snapshot) waits for the snapshot in flight, within its own bound. Ordered with events,
not by luck of timing.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from disk_snapshots.annotations import Annotations
from disk_snapshots.config import QuiesceConfig
from disk_snapshots.snapshot.quiesce import Freezer
from disk_snapshots.snapshot.quiesce import QuiesceError
from disk_snapshots.snapshot.quiesce import one_at_a_time
from disk_snapshots.snapshot.quiesce import quiesced
from disk_snapshots.snapshot.quiesce import snapshot_quiesced
from disk_snapshots.vm.instance import Disk
from support.fakes import FakeProvider
from support.fakes import FakeService

NO_FREEZE = QuiesceConfig(freeze=False, freeze_timeout=5, on_failure="abort")


def freezer(tmp_path: Path, service: FakeService, wait: float = 10.0) -> Freezer:
    # Even without a freeze the snapshot writes the disk's filesystem back (syncfs): the
    # mount point must exist.
    (tmp_path / "store").mkdir(exist_ok=True)
    disk = Disk(cid="disk-1", mount=tmp_path / "store", hint={})
    return Freezer(
        disk=disk,
        provider=FakeProvider(),
        service=service,
        quiesce=NO_FREEZE,
        lease_dir=tmp_path / "data",
        wait_seconds=wait,
    )


def annotate(consistency: str, role: str, moment: datetime) -> Annotations:
    return Annotations(
        deployment="redis",
        instance_group="redis",
        instance_id="id-0",
        index=0,
        az="z1",
        disk_cid="disk-1",
        job="redis",
        created_at=moment,
        trigger="pre-deploy",
        consistency=consistency,  # type: ignore[arg-type]
        role=role,  # type: ignore[arg-type]
        release_version="0.1.0",
    )


def test_a_second_snapshot_waits_for_the_one_in_flight(tmp_path: Path) -> None:
    scheduled, drained = FakeService(), FakeService()
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def scheduled_snapshot() -> None:
        with quiesced(freezer(tmp_path, scheduled), 5):
            order.append("schedule in")
            inside.set()
            release.wait(10)
            order.append("schedule out")

    first = threading.Thread(target=scheduled_snapshot)
    first.start()
    assert inside.wait(10)
    result: list[object] = []
    second = threading.Thread(
        target=lambda: result.append(snapshot_quiesced(freezer(tmp_path, drained), annotate))
    )
    second.start()
    time.sleep(0.3)  # it would have flushed and snapshotted by now, were it not waiting
    assert drained.flushes == 0 and result == []
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["schedule in", "schedule out"]
    assert drained.flushes == 1 and len(result) == 1


def test_a_turn_not_given_in_time_names_the_holder(tmp_path: Path) -> None:
    service = FakeService()
    (tmp_path / "store").mkdir()  # the turn is named by the disk's filesystem
    with one_at_a_time(tmp_path / "data", tmp_path / "store", 1.0):
        holder = threading.current_thread()
        failed: list[BaseException] = []

        def other() -> None:
            try:
                with quiesced(freezer(tmp_path, service, wait=0.2), 5):
                    pass
            except QuiesceError as err:
                failed.append(err)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert holder.is_alive()
    [err] = failed
    assert "did not finish within 0s; no snapshot taken" in str(err)
    assert f"(process {os.getpid()})" in str(err)
    assert service.flushes == 0  # nothing was flushed for a snapshot not taken


def test_the_turn_is_free_again_after_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), quiesced(freezer(tmp_path, FakeService()), 5):
        raise RuntimeError("snapshot failed")
    with quiesced(freezer(tmp_path, FakeService(), wait=0.1), 5):
        pass
