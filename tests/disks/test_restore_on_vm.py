"""``snapshots restore`` on the VM (restore/single.py), on a real loop disk: the service's
jobs stopped in their order and started in reverse (a recording monit), a clean safety
snapshot, the copy under the journal, and the refusals that touch nothing."""

from __future__ import annotations

import io
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.operations import Operations
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.restore import single
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.member import RestoreMember
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.single import Options
from disk_snapshots.restore.single import SingleRestore
from disk_snapshots.restore.standalone import Standalone
from disk_snapshots.restore.target import Target
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.monit import ServiceJobs
from support.disks import write_config
from support.fakes import FakeMonit

pytestmark = pytest.mark.root

JOBS = ("blobstore_nginx", "postgres")
LATEST = Options(Target("latest"))
OLD_RESTORE = "restore-20261202T180000Z-abcdef"


@dataclass
class Vm:
    here: Standalone
    monit: FakeMonit
    store: Path

    def restore(self, options: Options = LATEST) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = SingleRestore(self.here, out, err).run(options)
        return code, out.getvalue(), err.getvalue()

    def snapshots(self) -> dict[str, str]:
        """Snapshot id → trigger, the whole catalog."""
        return {s.id: s.annotations.trigger for s in self.here.snapshotter.catalog()}


@pytest.fixture
def vm(vm: tuple[Paths, dict[str, Any]]) -> Vm:
    paths, doc = vm
    # The role probe answers, as PostgreSQL's SELECT does once the restored data is served.
    doc["properties"]["service"]["profile"] = "command"
    doc["properties"]["service"]["command"] = {
        "role": ["echo", "standalone"],
        "flush": [],
        "resume": [],
    }
    doc["properties"]["service"]["jobs"] = list(JOBS)
    write_config(paths, doc)
    snapshotter = Snapshotter.load(paths)
    snapshotter.record_role("standalone")
    monit = FakeMonit(dict.fromkeys(JOBS, "running"))
    member = RestoreMember(snapshotter, ServiceJobs(monit, JOBS), Operations())
    return Vm(Standalone(snapshotter, member), monit, snapshotter.disk.mount)


def take(vm: Vm, data: str, trigger: str = "manual") -> str:
    (vm.store / "data").write_text(data)
    return vm.here.snapshotter.take(trigger).snapshot.id


def test_latest_restores_the_newest_snapshot_in_order_and_says_what_it_did(vm: Vm) -> None:
    take(vm, "old")
    chosen = take(vm, "the state to restore")
    (vm.store / "data").write_text("lost")
    (vm.store / "extra").write_text("written after the snapshot")

    code, out, err = vm.restore()

    assert (code, err) == (0, ""), out
    assert (vm.store / "data").read_text() == "the state to restore"
    assert not (vm.store / "extra").exists()
    # Stopped in service.jobs order, started in reverse, each once.
    assert vm.monit.calls == [
        "stop blobstore_nginx",
        "stop postgres",
        "start postgres",
        "start blobstore_nginx",
    ]
    last = Journal.read_last(vm.store)
    assert Journal.read(vm.store) is None and last is not None and last.phase == "done"
    assert last.snapshot_id == chosen
    safety = last.safety_snapshot_id
    assert vm.snapshots()[safety] == "pre-restore"
    assert vm.here.snapshotter.provider.get(safety).annotations.consistency == "clean"
    summary = out.splitlines()[-2]
    assert summary.startswith(f"restore {last.restore_id}: done: redis-leader/0 restored ")
    assert f"snapshot {chosen} (manual, fs, taken " in summary
    assert f"safety snapshot {safety}; command answers as standalone; no restore.verify" in summary
    assert f"snapshots restore --snapshot {safety}" in out.splitlines()[-1]
    # The safety snapshot holds the disk as it was: going back to it works the same way.
    code, out, err = vm.restore(Options(Target("latest"), snapshot_id=safety))
    assert code == 0, err
    assert (vm.store / "extra").read_text() == "written after the snapshot"
    # The plan's hold is released once done.
    assert all(not s.annotations.hold_by for s in vm.here.snapshotter.catalog())


def test_with_its_snapshots_gone_it_restores_from_the_backup_saying_so(
    vm: Vm, tmp_path: Path
) -> None:
    store = tmp_path / "backup-store"
    store.mkdir()
    s = vm.here.snapshotter
    # The same pool, now with a backup store (as provider.loopback.backup_store gives).
    provider = s.provider
    assert isinstance(provider, LoopbackProvider)
    backed = LoopbackProvider(provider.pool, backup_store=store)
    vm.here.snapshotter.provider = backed
    chosen = take(vm, "only the backup keeps this")
    backup = backed.backup(chosen)
    assert backup.state == "completed"
    for snapshot in s.catalog():  # the snapshot pool is lost
        backed.delete(snapshot.id)
    (vm.store / "data").write_text("lost")

    code, out, err = vm.restore(Options(Target("latest"), source="auto"))

    assert (code, err) == (0, ""), out
    assert (vm.store / "data").read_text() == "only the backup keeps this"
    assert f"copied backup {backup.id} of {chosen} onto the disk" in out
    assert f"restored snapshot {chosen}" in out and f"from its backup {backup.id}" in out
    last = Journal.read_last(vm.store)
    assert last is not None and (last.phase, last.backup_id) == ("done", backup.id)
    # Only the backup tier: refused before anything stops when the backup is named away.
    code, out, err = vm.restore(Options(Target("latest"), source="snapshot"))
    assert code == 1 and "no eligible snapshot" in err, (out, err)


def test_a_dry_run_prints_the_plan_and_touches_nothing(vm: Vm) -> None:
    chosen = take(vm, "kept")
    (vm.store / "data").write_text("now")
    before = vm.snapshots()
    code, out, err = vm.restore(replace(LATEST, dry_run=True))
    assert (code, err) == (0, "")
    assert f"1. redis-leader/0 (leader): copy {chosen}" in out
    assert "Order: stop blobstore_nginx, postgres, each stopped before the next" in out
    assert "start postgres, blobstore_nginx" in out
    assert out.splitlines()[-1] == "restore: dry run: nothing was stopped, snapshotted or written"
    assert vm.monit.calls == []
    assert (vm.store / "data").read_text() == "now"
    assert Journal.read(vm.store) is None and vm.snapshots() == before
    # Held until the real run, so retention does not take it meanwhile.
    assert vm.here.snapshotter.provider.get(chosen).annotations.hold_by.startswith("restore-")


def unchanged(vm: Vm, before: dict[str, str], data: str) -> None:
    assert vm.monit.calls == [], "nothing was stopped"
    assert (vm.store / "data").read_text() == data
    assert vm.snapshots().keys() == before.keys(), "no snapshot was taken"


def test_another_deployments_snapshot_is_refused_naming_it(vm: Vm) -> None:
    taken = take(vm, "theirs")
    provider = vm.here.snapshotter.provider
    foreign = provider.update(taken, replace(provider.get(taken).annotations, deployment="other"))
    (vm.store / "data").write_text("mine")
    before = {s.id: "" for s in provider.list()}
    code, _, err = vm.restore(Options(Target("latest"), snapshot_id=foreign.id))
    assert code == 1
    assert err == (
        f"snapshots restore: --snapshot redis-leader/0: snapshot {foreign.id} belongs to "
        "deployment other, not redis; nothing was stopped, snapshotted or written\n"
    )
    assert vm.monit.calls == [] and (vm.store / "data").read_text() == "mine"
    assert {s.id: "" for s in provider.list()} == before and Journal.read(vm.store) is None


def test_an_unknown_snapshot_and_an_empty_catalog_are_refused(vm: Vm) -> None:
    (vm.store / "data").write_text("mine")
    code, _, err = vm.restore(Options(Target("latest"), snapshot_id="snap-nope"))
    assert code == 1
    assert "snapshot snap-nope does not exist; nothing was stopped" in err
    code, _, err = vm.restore()
    assert code == 1
    assert "no eligible snapshot taken as leader for the newest state in redis" in err
    unchanged(vm, {}, "mine")


def half_copied(vm: Vm, chosen: str, safety: str, plan: list[PlanEntry] | None = None) -> None:
    """What a restore killed in the middle of its copy leaves on the disk."""
    spec = vm.here.snapshotter.config.spec
    mine = PlanEntry(f"{spec.name}/{spec.index}", spec.id, "leader", "copy", chosen)
    journal = Journal(OLD_RESTORE, chosen, safety, "planned", plan=plan or [mine])
    journal.write(vm.store, "copying", "copying files")
    (vm.store / "data").write_text("half")


def test_a_half_copied_disk_is_resumed_with_its_journals_snapshot_saying_so(vm: Vm) -> None:
    chosen = take(vm, "the journal's snapshot")
    safety = take(vm, "before the killed restore", trigger="pre-restore")
    newer = take(vm, "newer than the journal's")
    half_copied(vm, chosen, safety)
    before = vm.snapshots()

    code, out, err = vm.restore(replace(LATEST, dry_run=True))
    assert (code, err) == (0, "")
    said = out.splitlines()[0]
    assert said == (
        f"restore: {OLD_RESTORE} did not finish on this disk (journal "
        f"{Journal.path(vm.store)}: phase copying, snapshot {chosen}, safety snapshot "
        f"{safety}): resuming it with the snapshot its journal names, not a new choice. "
        f"To go back instead: snapshots restore --snapshot {safety}"
    )
    unchanged(vm, before, "half")
    assert Journal.read(vm.store).phase == "copying"  # type: ignore[union-attr]

    code, out, err = vm.restore()
    assert code == 0, err
    assert (vm.store / "data").read_text() == "the journal's snapshot", f"not {newer}"
    assert f"safety snapshot {safety} (taken by the earlier run)" in out
    assert vm.snapshots().keys() == before.keys(), "no second safety snapshot of a half disk"
    last = Journal.read_last(vm.store)
    assert last is not None and (last.restore_id, last.phase) == (OLD_RESTORE, "done")


def test_a_half_copied_disk_of_a_deployment_wide_restore_is_refused(vm: Vm) -> None:
    chosen = take(vm, "a")
    safety = take(vm, "b", trigger="pre-restore")
    spec = vm.here.snapshotter.config.spec
    plan = [
        PlanEntry(f"{spec.name}/{spec.index}", spec.id, "leader", "copy", chosen),
        PlanEntry("redis-data/0", "id-d0", "follower", "resync"),
    ]
    half_copied(vm, chosen, safety, plan)
    before = vm.snapshots()
    code, _, err = vm.restore()
    assert code == 1
    assert err == (
        f"snapshots restore: the journal on this disk ({Journal.path(vm.store)}) is of "
        f"{OLD_RESTORE}, a restore of redis-data/0 as well: finish it the way it was started "
        "(the restore errand or disk-snapshots); nothing was stopped, snapshotted or written\n"
    )
    unchanged(vm, before, "half")
    # An unreadable journal is an unfinished restore too: never guessed at.
    Journal.path(vm.store).write_text("{not json")
    code, _, err = vm.restore()
    assert code == 1
    assert f"the restore journal {Journal.path(vm.store)} cannot be read (unreadable journal" in err
    unchanged(vm, before, "half")


def test_a_stop_that_times_out_starts_the_service_again(
    vm: Vm, monkeypatch: pytest.MonkeyPatch
) -> None:
    take(vm, "kept")
    (vm.store / "data").write_text("now")
    monkeypatch.setattr(single, "SERVICE_SECONDS", 1)
    vm.monit.stuck = True
    code, _, err = vm.restore()
    assert code == 1
    lines = err.splitlines()
    assert lines[0].endswith(
        "FAILED while stopping the service: not not monitored within 1s: "
        "blobstore_nginx: running; not asked yet: postgres"
    )
    assert lines[1] == "  nothing was overwritten; the service was started again"
    assert lines[2] == ("  now: service blobstore_nginx: running, postgres: running; journal none")
    assert (vm.store / "data").read_text() == "now" and Journal.read(vm.store) is None
