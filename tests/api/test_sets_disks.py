"""Snapshot sets across three VM-shaped roots, each with a real loop disk and its own
snapshotter daemon process serving the agent API on 127.0.0.2, .3 and .4."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from disk_snapshots.api.client import AgentClient
from disk_snapshots.catalog import Snapshot
from disk_snapshots.commands.errands import take_snapshot
from disk_snapshots.config import Retention
from disk_snapshots.config import Schedule
from disk_snapshots.config import TlsConfig
from disk_snapshots.daemon.scheduler import Scheduler
from disk_snapshots.errors import EXIT_PARTIAL
from disk_snapshots.metrics import Metrics
from disk_snapshots.sets.coordinator import run_set
from disk_snapshots.sets.decisions import decision_window
from disk_snapshots.snapshot.snapshotter import Snapshotter
from support.cluster import MEMBERS
from support.cluster import Vm
from support.cluster import start_daemon
from support.disks import temporary_resources

pytestmark = pytest.mark.root
LEASE = 3  # quiesce.freeze_timeout in support.cluster.member_doc


def catalog(vm: Vm) -> list[Snapshot]:
    return Snapshotter.load(vm.paths).catalog()


def writable_within(store: Path, seconds: float) -> float:
    """Seconds until a synced write to ``store`` completes (a frozen disk blocks it)."""
    started = time.monotonic()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={store}/probe", "bs=4k", "count=1", "conv=fsync"],
        capture_output=True,
        check=True,
        timeout=seconds,
    )
    return time.monotonic() - started


def test_a_three_member_set_is_complete(
    cluster: list[Vm], tls: TlsConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert take_snapshot(cluster[1].paths) == 0
    assert "coordinated by redis-leader/0" in capsys.readouterr().out
    assert take_snapshot(cluster[0].paths) == 0
    out = capsys.readouterr().out
    assert "complete: 3 snapshots" in out, out
    snapshots = catalog(cluster[0])
    assert len(snapshots) == 3
    a = [s.annotations for s in snapshots]
    assert len({x.set_id for x in a}) == 1
    assert {(x.set_size, x.set_state, x.trigger, x.consistency) for x in a} == {
        (3, "complete", "set:manual", "app")
    }
    assert sorted((x.instance, x.role) for x in a) == [
        ("redis-data/0", "follower"),
        ("redis-data/1", "follower"),
        ("redis-leader/0", "leader"),
    ]
    status = AgentClient.connect("127.0.0.3", cluster[1].port, tls).status()
    assert status["role"] == "follower"
    last = status["last_snapshots"]
    assert isinstance(last, list) and last[0]["set_state"] == "complete"
    for vm in cluster:
        assert writable_within(vm.store, 2) < 1


COORDINATOR = """
import sys, time
from pathlib import Path
from disk_snapshots.sets.coordinator import run_set
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter

def on_phase(name, set_id):
    if name == sys.argv[2]:
        print(name, set_id, flush=True)
        time.sleep(3600)

run_set(Snapshotter.load(Paths(root=Path(sys.argv[1]))), "manual", on_phase=on_phase)
"""


def kill_coordinator_after(cluster: list[Vm], phase: str) -> tuple[str, float]:
    """Run the real coordinator, SIGKILL it once ``phase`` is done: the set id and when."""
    coordinator = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR, str(cluster[0].paths.root), phase],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert coordinator.stdout is not None
        line = coordinator.stdout.readline().split()
        assert line[:1] == [phase], line
        os.kill(coordinator.pid, signal.SIGKILL)
        return line[1], time.monotonic()
    finally:
        coordinator.kill()
        coordinator.wait()
        if coordinator.stdout is not None:
            coordinator.stdout.close()


def test_sigkill_of_the_coordinator_while_every_member_is_frozen(
    cluster: list[Vm], tls: TlsConfig
) -> None:
    set_id, killed = kill_coordinator_after(cluster, "quiesced")
    statuses = [AgentClient.connect(vm.spec.address, vm.port, tls).status() for vm in cluster]
    assert [s["set"]["set_id"] for s in statuses] == [set_id] * 3  # type: ignore[index]
    for vm in cluster:
        writable_within(vm.store, LEASE + 5)
    # The leases started before the kill: every disk is writable before one is over.
    assert time.monotonic() - killed < LEASE + 0.5
    # Nobody took a snapshot, so nothing can claim to be part of this set.
    assert [s for s in catalog(cluster[0]) if s.annotations.set_id == set_id] == []
    for vm in cluster:
        status = AgentClient.connect(vm.spec.address, vm.port, tls).status()
        assert status["set"] is None
    assert "expired without a thaw" in (cluster[1].log.read_text())


def test_sigkill_of_the_coordinator_before_its_verdict(cluster: list[Vm]) -> None:
    set_id, killed = kill_coordinator_after(cluster, "snapshotted")
    for vm in cluster:
        assert writable_within(vm.store, 2) < 1  # each thawed right after its snapshot
    window = decision_window(LEASE)
    deadline = killed + window + 5
    while time.monotonic() < deadline:
        if {s.annotations.set_state for s in catalog(cluster[0])} == {"incomplete"}:
            break
        time.sleep(0.2)
    snapshots = catalog(cluster[0])
    assert len(snapshots) == 3
    for s in snapshots:
        a = s.annotations
        assert (a.set_id, a.set_size, a.set_state) == (set_id, 3, "incomplete")
        assert a.set_reason == (
            f"the coordinator redis-leader/0 ({MEMBERS[0].id}) did not report the set's "
            f"outcome to {a.instance} within {window:.0f}s of the thaw"
        )


def test_a_member_with_its_service_down_makes_the_set_incomplete(
    cluster: list[Vm], capsys: pytest.CaptureFixture[str]
) -> None:
    (cluster[2].paths.root / "service-down").touch()
    assert take_snapshot(cluster[0].paths) == EXIT_PARTIAL
    out = capsys.readouterr().out
    why = "redis-data/1: quiesce failed: flush failed: flush command"
    assert "INCOMPLETE" in out and why in out, out
    snapshots = catalog(cluster[0])
    assert sorted(s.annotations.instance for s in snapshots) == ["redis-data/0", "redis-leader/0"]
    for s in snapshots:
        assert s.annotations.set_state == "incomplete"
        assert why in s.annotations.set_reason
        assert "redis is not running" in s.annotations.set_reason
    for vm in cluster:
        assert writable_within(vm.store, 2) < 1


def test_a_set_schedule_runs_on_the_coordinator_only(
    cluster: list[Vm], caplog: pytest.LogCaptureFixture
) -> None:
    schedule = Schedule("nightly-set", "30 2 * * *", "UTC", 0, "set", Retention(keep_last=2))

    def scheduler(vm: Vm) -> Scheduler:
        return Scheduler(Snapshotter.load(vm.paths), Metrics(), vm.paths.data / "s.json")

    follower = scheduler(cluster[2])
    with caplog.at_level(logging.INFO):
        assert follower.run_once(schedule)
    assert "the set is coordinated by redis-leader/0" in caplog.text
    assert catalog(cluster[0]) == []
    leader = scheduler(cluster[0])
    assert leader.run_once(schedule)
    a = [s.annotations for s in catalog(cluster[0])]
    assert [(x.trigger, x.set_size, x.set_state) for x in a] == [
        ("set:nightly-set", 3, "complete")
    ] * 3
    assert leader.metrics.get("disk_snapshots_last_freeze_seconds", schedule="nightly-set")


def test_sigkill_of_a_frozen_member_leaves_nothing_once_it_is_back(
    cluster: list[Vm], pool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a member holds during a set: a frozen disk and its lease (then a partial image
    # while it clones, killed at that step in tests/disks/test_leftovers.py).
    member = cluster[2]

    def kill_member(phase: str, set_id: str) -> None:
        if phase == "quiesced" and member.process is not None:
            member.process.kill()
            member.process.wait()

    snapshotter = Snapshotter.load(cluster[0].paths)
    outcome = run_set(snapshotter, "manual", on_phase=kill_member)
    assert outcome.state == "incomplete"
    assert writable_within(member.store, LEASE + 5) < LEASE + 5  # the watchdog thawed it
    member.process = start_daemon(member)
    assert take_snapshot(cluster[0].paths) == 0, capsys.readouterr().out
    assert temporary_resources(pool) == []
    leases = sorted(p.name for p in member.paths.data.glob("freeze-*"))
    assert leases == [], leases
