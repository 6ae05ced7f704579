"""The snapshotter hooks against a VM-shaped directory with a real loop-mounted disk."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from disk_snapshots.commands.hooks import drain
from disk_snapshots.commands.hooks import post_stop
from disk_snapshots.commands.hooks import pre_start
from disk_snapshots.errors import EXIT_CONFIG
from disk_snapshots.errors import EXIT_FAILED
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.snapshot.quiesce import one_at_a_time
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.vm.instance import Disk
from support.disks import write_config

pytestmark = pytest.mark.root
DISK = '{"persistent_disk": 512}'


def test_drain_snapshots_and_prints_one_integer(
    vm: tuple[Paths, dict[str, Any]], disk: Disk
) -> None:
    paths, _ = vm
    code, out = drain(
        ["job_changed", "hash_changed", "python3"],
        {"BOSH_JOB_STATE": DISK, "BOSH_JOB_NEXT_STATE": DISK},
        paths,
    )
    assert (code, out) == (0, "0")
    [snapshot] = LoopbackProvider.for_disk("", disk).list()
    a = snapshot.annotations
    assert (a.trigger, a.consistency, a.deployment, a.instance) == (
        "pre-deploy",
        "fs",
        "redis",
        "redis-leader/0",
    )
    code, out = drain(
        ["job_shutdown", "hash_unchanged"],
        {"BOSH_JOB_STATE": DISK, "BOSH_JOB_NEXT_STATE": '{"persistent_disk": 0}'},
        paths,
    )
    assert (code, out) == (0, "0")
    triggers = [s.annotations.trigger for s in LoopbackProvider.for_disk("", disk).list()]
    assert triggers == ["pre-delete", "pre-deploy"]


def test_drain_failure_prints_nothing_or_warns(
    vm: tuple[Paths, dict[str, Any]], disk: Disk
) -> None:
    paths, doc = vm
    doc["properties"]["service"]["profile"] = "command"
    doc["properties"]["service"]["command"] = {
        "role": ["echo", "leader"],
        "flush": ["false"],
        "resume": [],
    }
    write_config(paths, doc)
    env = {"BOSH_JOB_STATE": DISK, "BOSH_JOB_NEXT_STATE": DISK}
    assert drain(["job_changed", "hash_changed"], env, paths) == (1, "")
    doc["properties"]["drain"]["on_failure"] = "warn"
    write_config(paths, doc)
    assert drain(["job_changed", "hash_changed"], env, paths) == (0, "0")
    assert LoopbackProvider.for_disk("", disk).list() == []  # abort: no snapshot claims anything


def test_drain_respects_snapshot_on_and_status(
    vm: tuple[Paths, dict[str, Any]], disk: Disk
) -> None:
    paths, doc = vm
    doc["properties"]["drain"]["snapshot_on"] = ["delete"]
    write_config(paths, doc)
    assert drain(
        ["job_shutdown", "hash_unchanged"],
        {"BOSH_JOB_STATE": DISK, "BOSH_JOB_NEXT_STATE": DISK},
        paths,
    ) == (0, "0")
    assert drain(["job_check_status", "hash_unchanged"], {}, paths) == (0, "0")
    assert LoopbackProvider.for_disk("", disk).list() == []


def test_pre_start_names_bad_properties(
    vm: tuple[Paths, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    paths, doc = vm
    assert pre_start(paths) == 0
    doc["properties"]["schedules"][0]["timezone"] = "Mars/Olympus"  # only Python knows
    write_config(paths, doc)
    assert pre_start(paths) == EXIT_CONFIG
    assert 'snapshotter.schedules[0].timezone: "Mars/Olympus" is not a known time zone' in (
        caplog.text
    )


def test_post_stop_takes_a_clean_snapshot_when_asked(
    vm: tuple[Paths, dict[str, Any]], disk: Disk
) -> None:
    paths, doc = vm
    assert post_stop(paths) == 0
    assert LoopbackProvider.for_disk("", disk).list() == []
    doc["properties"]["post_stop_snapshot"] = True
    write_config(paths, doc)
    assert post_stop(paths) == 0
    [snapshot] = LoopbackProvider.for_disk("", disk).list()
    assert snapshot.annotations.consistency == "clean"


@pytest.mark.parametrize("freeze", [True, False])
def test_a_clean_snapshot_holds_what_was_written_just_before(
    vm: tuple[Paths, dict[str, Any]], disk: Disk, freeze: bool
) -> None:
    # Written and not synced: still in the page cache of the disk's filesystem, not yet
    # in its image. A clean snapshot (post-stop, a restore's safety snapshot) must
    # hold it, with or without quiesce.freeze.
    paths, doc = vm
    doc["properties"]["post_stop_snapshot"] = True
    doc["properties"]["quiesce"]["freeze"] = freeze
    write_config(paths, doc)
    payload = os.urandom(1 << 20)
    (disk.mount / "written-last").write_bytes(payload)
    assert post_stop(paths) == 0
    provider = LoopbackProvider.for_disk("", disk)
    [snapshot] = provider.list()
    with provider.materialize(snapshot.id) as tree:
        assert (tree / "written-last").read_bytes() == payload


def test_drain_waits_for_the_snapshot_in_flight_instead_of_failing(
    vm: tuple[Paths, dict[str, Any]], disk: Disk
) -> None:
    # The daemon's scheduled snapshot holds the disk's turn (quiesce.one_at_a_time) when
    # the deploy's drain comes: drain waits, then takes its own, and the deploy goes on.
    paths, doc = vm
    held, release = threading.Event(), threading.Event()

    def scheduled_snapshot_in_flight() -> None:
        with one_at_a_time(paths.data, disk.mount, 10):
            held.set()
            release.wait(10)

    daemon = threading.Thread(target=scheduled_snapshot_in_flight)
    daemon.start()
    assert held.wait(10)
    threading.Timer(1.0, release.set).start()
    env = {"BOSH_JOB_STATE": DISK, "BOSH_JOB_NEXT_STATE": DISK}
    started = time.monotonic()
    assert drain(["job_changed", "hash_changed"], env, paths) == (0, "0")
    assert time.monotonic() - started >= 0.9  # it waited for the turn
    daemon.join(10)
    [snapshot] = LoopbackProvider.for_disk("", disk).list()
    assert snapshot.annotations.trigger == "pre-deploy"
    # A turn that never comes is bounded by drain.timeout, and fails as drain fails.
    doc["properties"]["drain"]["timeout"] = 1
    write_config(paths, doc)
    with one_at_a_time(paths.data, disk.mount, 10):
        code, out = drain(["job_changed", "hash_changed"], env, paths)
    assert (code, out) == (EXIT_FAILED, "")
