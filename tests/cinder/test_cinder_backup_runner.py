"""Backup runs with ``provider.type: openstack-cinder`` against the real Cinder: a backup
followed from pending to completed, a backup that outlives its snapshot, retention over
incremental chains, and what a restore from a backup says here.

Debian's Cinder NFS driver copies only a volume's first snapshot (test_cinder_backups.py
says why), so each run here backs up the volume's only snapshot at that moment, as a
snapshot retention with ``keep_last: 1`` would leave it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots import metrics as m
from disk_snapshots import providers
from disk_snapshots.backups.runner import BackupRunner
from disk_snapshots.catalog import Backup
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.errors import EXIT_USAGE
from disk_snapshots.metrics import Metrics
from disk_snapshots.providers.base import BackupTier
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import backup_tier
from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.services import make_service
from support.cinder import Admin
from support.cinder import CinderLocal
from support.configdocs import snapshotter_doc

pytestmark = pytest.mark.cinder

CONTAINER = "disk-snapshots-runs"


@pytest.fixture
def snapshotter(
    cinder_local: CinderLocal, admin: Admin, deployment: str, tmp_path: Path
) -> Iterator[Snapshotter]:
    """This VM's snapshotter with ``provider.type: openstack-cinder`` and backups into
    CONTAINER (keep_last 1). Without root there is no frozen filesystem here: quiesce.freeze
    is off and the service profile is ``none``, as in the aws-ebs runs."""
    doc = snapshotter_doc()
    doc["spec"]["deployment"] = deployment
    props = doc["properties"]
    props["provider"]["type"] = "openstack-cinder"
    props["provider"]["openstack"] |= {
        "endpoint": cinder_local.endpoint,
        "backup_container": CONTAINER,
    }
    props["service"]["profile"] = "none"
    props["quiesce"]["freeze"] = False
    props["backups"] |= {"cron": "@daily", "retention": {"keep_last": 1}, "deadline": "30m"}
    config = load_snapshotter_config(doc)
    # The write-back before a snapshot needs a directory to sync; nothing is frozen.
    (tmp_path / "store").mkdir()
    disk = Disk(cid=admin.create_volume(deployment), mount=tmp_path / "store", hint={})
    provider = providers.make_provider(config.provider, disk)
    assert isinstance(provider, OpenstackCinderProvider)
    provider.api.poll_interval = 0.1
    provider.api.retry_delays = (0.05, 0.1, 0.2)
    with provider:
        yield Snapshotter(
            config=config,
            disk=disk,
            provider=provider,
            service=make_service(config.service),
            paths=Paths(tmp_path),
        )


def runner(snapshotter: Snapshotter) -> BackupRunner:
    return BackupRunner(snapshotter, Metrics(), poll=0.2)


def followed(snapshotter: Snapshotter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The states the runner saw, from what backup() returned to each get_backup()."""
    provider = snapshotter.provider
    assert isinstance(provider, OpenstackCinderProvider)
    seen: list[str] = []
    start, get = provider.backup, provider.get_backup

    def backup(snapshot_id: str, timeout: float | None = None) -> Backup:
        made = start(snapshot_id, timeout)
        seen.append(made.state)
        return made

    def get_backup(backup_id: str) -> Backup:
        found = get(backup_id)
        seen.append(found.state)
        return found

    monkeypatch.setattr(provider, "backup", backup)
    monkeypatch.setattr(provider, "get_backup", get_backup)
    return seen


def take_only(snapshotter: Snapshotter, admin: Admin) -> str:
    """A clean snapshot, the volume's only one (the NFS driver's limit)."""
    for old in snapshotter.catalog():
        snapshotter.provider.delete(old.id)
        assert admin.gone("snapshot", old.id)
    return snapshotter.take_clean("manual").snapshot.id


def tier(snapshotter: Snapshotter) -> BackupTier:
    found = backup_tier(snapshotter.provider)
    assert found is not None
    return found


def test_a_run_follows_the_backup_from_pending_to_completed(
    snapshotter: Snapshotter, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = take_only(snapshotter, admin)
    seen = followed(snapshotter, monkeypatch)
    r = runner(snapshotter)

    outcome = r.run()

    assert outcome.ok, outcome.message
    backup = outcome.backup
    assert backup is not None
    # backup() returned at once; the runner kept asking until Cinder said available.
    assert seen[0] == "pending" and seen[-1] == "completed"
    assert set(seen) == {"pending", "completed"}
    assert (backup.state, backup.source_snapshot, backup.location) == (
        "completed",
        taken,
        CONTAINER,
    )
    assert backup.started_at is not None and backup.completed_at is not None
    assert backup.completed_at >= backup.started_at
    assert backup.size_bytes == 1 << 30
    assert f"completed in {CONTAINER}" in outcome.message
    assert r.metrics is not None and r.metrics.get(m.BACKUPS_COMPLETED) == 1
    raw = admin.backup(backup.id)
    assert (raw["status"], raw["container"], raw["snapshot_id"]) == ("available", CONTAINER, taken)
    assert "disk-snapshots:backup_completed_at" in raw["metadata"]

    # Listed with its snapshot's annotations, and in the catalog's backup tier.
    snapshot = snapshotter.provider.get(taken)
    assert snapshotter.backups() == [backup]
    assert backup.annotations == snapshot.annotations
    assert backup.annotations.instance_id == snapshotter.config.spec.id
    # Nothing new: no second backup of the same snapshot.
    again = r.run()
    assert again.ok and "already backed up" in again.message
    assert len(snapshotter.backups()) == 1

    # The snapshot goes; its backup stays, naming it.
    snapshotter.provider.delete(taken)
    assert admin.gone("snapshot", taken)
    assert taken not in {s.id for s in snapshotter.catalog()}
    [left] = snapshotter.backups()
    assert (left.id, left.source_snapshot, left.state) == (backup.id, taken, "completed")
    assert left.annotations == snapshot.annotations


def test_retention_lets_the_older_backup_go_across_incremental_chains(
    snapshotter: Snapshotter, admin: Admin
) -> None:
    r = runner(snapshotter)
    take_only(snapshotter, admin)
    first = r.run()
    assert first.ok and first.backup is not None, first.message
    b1 = first.backup.id

    take_only(snapshotter, admin)
    second = r.run()
    assert second.ok and second.backup is not None, second.message
    b2 = second.backup.id
    assert admin.backup(b2)["is_incremental"] is True
    # keep_last 1: the first goes from the catalog. Cinder keeps it while the second
    # (incremental) depends on it, released.
    assert second.deleted == (b1,)
    assert [b.id for b in snapshotter.backups()] == [b2]
    assert admin.backup(b1)["metadata"]["disk-snapshots:released"] == "true"
    assert r.metrics is not None and r.metrics.get(m.BACKUP_RETENTION_DELETED) == 1

    take_only(snapshotter, admin)
    third = r.run()
    assert third.ok and third.backup is not None, third.message
    b3 = third.backup.id
    # Its chain lost a backup to retention: a new full one, so the old chain can go.
    assert admin.backup(b3)["is_incremental"] is False
    assert third.deleted == (b2,)
    assert admin.gone("backup", b2, timeout=120)
    assert [b.id for b in snapshotter.backups()] == [b3]
    # Nothing depends on the first any more: a sweep deletes it (this run's, if the
    # second was gone by then, else the next delete's or the cleanup's).
    assert isinstance(snapshotter.provider, OpenstackCinderProvider)
    snapshotter.provider.cleanup_leftovers()
    assert admin.gone("backup", b1, timeout=120)
    assert snapshotter.provider.leftovers() == []


def test_a_failed_backup_says_why_and_retention_deletes_it(
    snapshotter: Snapshotter,
    admin: Admin,
    cinder_local: CinderLocal,
    deployment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A file where the POSIX driver wants the container's directory: Cinder's backup fails.
    blocked = f"blocked-{deployment}"
    (cinder_local.backup_dir / blocked).write_text("not a directory\n")
    monkeypatch.setattr(snapshotter.provider, "backup_container", blocked)
    r = runner(snapshotter)
    taken = take_only(snapshotter, admin)

    failed = r.run()

    assert not failed.ok and failed.reason == "failed", failed.message
    [broken] = snapshotter.backups()
    assert (broken.state, broken.source_snapshot, broken.location) == ("error", taken, blocked)
    assert broken.detail == admin.backup(broken.id)["fail_reason"]
    assert broken.detail and broken.detail in failed.message
    assert r.metrics is not None and r.metrics.get(m.BACKUP_FAILURES, reason="failed") == 1

    # The next run into a usable container makes a full backup (Cinder would refuse to
    # chain one to the failed backup) and deletes the failed one.
    monkeypatch.setattr(snapshotter.provider, "backup_container", CONTAINER)
    done = r.run()
    assert done.ok and done.backup is not None, done.message
    assert admin.backup(done.backup.id)["is_incremental"] is False
    assert done.deleted == (broken.id,)
    assert [b.id for b in snapshotter.backups()] == [done.backup.id]


def test_a_backup_cinder_never_finishes_is_reported_at_the_deadline(
    snapshotter: Snapshotter, admin: Admin
) -> None:
    take_only(snapshotter, admin)
    # A second snapshot while the first exists is a qcow2 overlay the NFS driver cannot
    # hand to the backup service: Debian's Cinder 21 leaves that backup `creating` for good.
    stuck = snapshotter.take_clean("manual").snapshot.id
    later = datetime.now(UTC) + timedelta(minutes=31)
    r = BackupRunner(snapshotter, Metrics(), poll=0.2, clock=lambda: later)

    outcome = r.run(stuck)

    assert not outcome.ok and outcome.reason == "deadline", outcome.message
    assert "backups.deadline passed" in outcome.message
    assert outcome.backup is not None and outcome.backup.state == "pending"
    assert admin.backup(outcome.backup.id)["status"] == "creating"
    assert r.metrics is not None and r.metrics.get(m.BACKUP_FAILURES, reason="deadline") == 1
    # Kept (it may still finish), and not reported twice by the daemon's look.
    assert r.check_pending() == []
    assert [b.id for b in snapshotter.backups()] == [outcome.backup.id]


def test_a_backup_is_not_restored_by_copying_here(snapshotter: Snapshotter, admin: Admin) -> None:
    take_only(snapshotter, admin)
    outcome = runner(snapshotter).run()
    assert outcome.backup is not None, outcome.message
    with pytest.raises(ProviderError, match="disk-snapshots restore --method replace") as caught:
        tier(snapshotter).materialize_backup(outcome.backup.id, "nova")
    assert "bosh attach-disk" in str(caught.value)


@pytest.mark.parametrize(
    ("backup_id", "problem"),
    [
        ("00000000-0000-4000-8000-000000000000", "does not exist in this project"),
        ("../../os-services", "is not a Cinder backup id"),
        ("0000000-0000-4000-8000-000000000000", "is not a Cinder backup id"),
    ],
)
def test_an_unknown_backup_is_a_bad_argument(
    snapshotter: Snapshotter, backup_id: str, problem: str
) -> None:
    with pytest.raises(UnknownBackup, match=problem) as caught:
        tier(snapshotter).get_backup(backup_id)
    assert caught.value.exit_code == EXIT_USAGE
    with pytest.raises(UnknownBackup, match=problem):
        tier(snapshotter).delete_backup(backup_id)


def test_backups_are_off_without_a_container(
    snapshotter: Snapshotter, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider: Any = snapshotter.provider
    monkeypatch.setattr(provider, "backup_container", "")
    assert backup_tier(provider) is None
    outcome = runner(snapshotter).run()
    assert not outcome.ok
    assert "provider.openstack.backup_container is empty" in outcome.message
