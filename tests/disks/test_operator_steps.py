"""The steps ``bin/snapshots`` runs for the operator's command, on a real loop disk.

Copy under the journal (the errand's member code, in the foreground), a new disk made
from a snapshot (a reflink clone in the pool, where the local Director attaches it),
adopting a replaced disk, and plan holds that retention honours.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.member_errors import Conflict
from disk_snapshots.member_errors import Invalid
from disk_snapshots.operations import Operations
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.member import RestoreMember
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.standalone import Standalone
from disk_snapshots.retention import holds
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.snapshot.snapshotter import pending_import_marker
from disk_snapshots.vm.monit import ServiceJobs
from support.disks import sh
from support.disks import unmount
from support.fakes import FakeMonit

pytestmark = pytest.mark.root

RESTORE = "restore-20261202T180000Z-abcdef"


@pytest.fixture
def here(vm: tuple[Paths, dict[str, Any]]) -> tuple[Standalone, FakeMonit]:
    paths, _ = vm
    snapshotter = Snapshotter.load(paths)
    monit = FakeMonit({"redis": "running"})
    member = RestoreMember(snapshotter, ServiceJobs(monit, ("redis",)), Operations())
    return Standalone(snapshotter, member), monit


def entry(here: Standalone, action: str = "copy", snapshot_id: str = "") -> PlanEntry:
    spec = here.snapshotter.config.spec
    return PlanEntry(f"{spec.name}/{spec.index}", spec.id, "leader", action, snapshot_id)  # type: ignore[arg-type]


def test_status_copy_and_finish_as_the_operator_runs_them(
    here: tuple[Standalone, FakeMonit],
) -> None:
    standalone, monit = here
    store = standalone.snapshotter.disk.mount
    (store / "data").write_text("before")
    chosen = standalone.snapshotter.take_clean("manual").snapshot
    (store / "data").write_text("after the loss")
    status = standalone.status()
    assert status["disk"]["size_bytes"] == 512 * 2**20  # type: ignore[index]
    assert status["provider"] == {"type": "loopback", "creates_disks": True, "copy_refusal": ""}
    assert status["service"]["stopped"] is False  # type: ignore[index]
    plan = [entry(standalone, "copy", chosen.id)]
    with pytest.raises(Conflict, match="must be stopped"):
        standalone.safety(RESTORE, plan, replace=False)
    monit.stop("redis")
    safety = standalone.safety(RESTORE, plan, replace=False)
    assert Journal.read(store).phase == "planned"  # type: ignore[union-attr]
    copied = standalone.copy(RESTORE)
    assert copied["copied"] is True and (store / "data").read_text() == "before"
    assert pending_import_marker(store).exists()
    standalone.finish(RESTORE)
    last = Journal.read_last(store)
    assert last is not None and last.phase == "done"
    assert last.safety_snapshot_id == safety["safety_snapshot_id"]


def test_a_new_disk_is_the_snapshot_in_the_pool_and_adopting_it_journals_it(
    here: tuple[Standalone, FakeMonit], tmp_path: Path
) -> None:
    standalone, monit = here
    store = standalone.snapshotter.disk.mount
    (store / "data").write_text("snapshotted")
    chosen = standalone.snapshotter.take_clean("manual").snapshot
    made = standalone.create_disk(chosen.id, RESTORE)
    image = Path(str(standalone.snapshotter.disk.image)).parent / f"{made['disk_cid']}.img"
    meta = json.loads(image.with_suffix(".json").read_text())
    assert (meta["cid"], meta["size_mib"]) == (made["disk_cid"], 512)
    assert meta["labels"]["disk-snapshots:restore_id"] == RESTORE
    mountpoint = tmp_path / "new"
    mountpoint.mkdir()
    device = sh("losetup", "--find", "--show", "--read-only", str(image)).strip()
    try:
        sh("mount", "-o", "ro,noload", device, str(mountpoint))
        assert (mountpoint / "data").read_text() == "snapshotted"
    finally:
        unmount(mountpoint)
        subprocess.run(["losetup", "-d", device], check=False)
        image.unlink()
        image.with_suffix(".json").unlink()
    monit.stop("redis")
    safety = standalone.safety(RESTORE, [entry(standalone)], replace=True)
    assert safety["journal"] is None and Journal.read(store) is None
    # The attached disk carries the journal of an unfinished restore its source disk had
    # when it was snapshotted: that belongs to the old disk's past and is replaced.
    old = "restore-20261101T000000Z-000000"
    Journal(old, "snap-x", "snap-y", "copying").write(store, "copying")
    with pytest.raises(Conflict, match=f"{old} on this disk is unfinished"):
        standalone.safety(RESTORE, [entry(standalone)], replace=True)
    adopted = standalone.adopt(
        RESTORE, [entry(standalone, "copy", chosen.id)], "snap-0123456789abcdef0"
    )
    assert adopted["dropped_journal"] == "restore-20261101T000000Z-000000"
    journal = Journal.read(store)
    assert journal is not None and journal.phase == "copied" and not journal.blocks_start
    assert pending_import_marker(store).exists()


def test_another_deployments_snapshot_makes_no_disk(here: tuple[Standalone, FakeMonit]) -> None:
    standalone, _ = here
    snapshotter = standalone.snapshotter
    taken = snapshotter.take_clean("manual").snapshot
    foreign = snapshotter.provider.update(
        taken.id,
        taken.annotations.__class__(**{**taken.annotations.__dict__, "deployment": "other"}),
    )
    with pytest.raises(Invalid, match=f"{foreign.id} belongs to deployment other, not"):
        standalone.create_disk(foreign.id, RESTORE)


def test_a_hold_keeps_the_snapshot_from_retention_until_released(
    here: tuple[Standalone, FakeMonit],
) -> None:
    standalone, _ = here
    snapshotter = standalone.snapshotter
    chosen = snapshotter.take_clean("manual").snapshot
    until = datetime.now(UTC) + timedelta(hours=1)
    assert standalone.hold([chosen.id], RESTORE, until)["held"] == [chosen.id]
    catalog = snapshotter.catalog()
    assert chosen.id in holds(catalog, datetime.now(UTC))
    assert chosen.id not in holds(catalog, until + timedelta(seconds=1))
    assert standalone.release(RESTORE)["released"] == [chosen.id]
    assert holds(snapshotter.catalog(), datetime.now(UTC)) == {}
