"""The loopback backup tier on real disks: a verified, sparse copy of a snapshot image in a
backup store on another filesystem; a killed backup never lists as complete, and the next
run removes what it left."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest
from test_loopback_quiesce import annotator

from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.providers.base import BackupTier
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import backup_tier
from disk_snapshots.providers.image_copy import checksum_image
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.vm.instance import Disk
from support.release import REPO

pytestmark = pytest.mark.root


def fill(disk: Disk, megabytes: int) -> dict[str, str]:
    """Random files on the disk; their digests by name."""
    digests = {}
    for n in range(megabytes // 8):
        data = os.urandom(8 << 20)
        (disk.mount / f"file-{n}").write_bytes(data)
        digests[f"file-{n}"] = hashlib.sha256(data).hexdigest()
    subprocess.run(["sync", "-f", str(disk.mount)], check=True)
    return digests


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """On the test's own filesystem, not the XFS pool: another filesystem, as advised."""
    return tmp_path / "backups"


def snapshot_of(disk: Disk, store: Path) -> tuple[LoopbackProvider, Snapshot]:
    provider = LoopbackProvider.for_disk("", disk, str(store))
    return provider, provider.snapshot(disk, annotator(disk)("app", "leader", datetime.now(UTC)))


def test_a_backup_is_a_verified_sparse_copy_on_other_storage(disk: Disk, store: Path) -> None:
    digests = fill(disk, 64)
    provider, snapshot = snapshot_of(disk, store)
    assert isinstance(provider, BackupTier) and backup_tier(provider) is provider
    assert store.parent.stat().st_dev != provider.directory.stat().st_dev

    backup = provider.backup(snapshot.id)

    assert backup.state == "completed"
    assert (backup.source_snapshot, backup.annotations) == (snapshot.id, snapshot.annotations)
    assert backup.location == str(store)
    assert backup.started_at is not None and backup.completed_at is not None
    image = store / f"{backup.id}.img"
    source = provider.directory / f"{snapshot.id}.img"
    assert backup.size_bytes == image.stat().st_size == source.stat().st_size
    assert backup.detail == checksum_image(source) == checksum_image(image)
    # Sparse: the 512 MiB disk holds 64 MiB of files; the copy allocates about that.
    assert image.stat().st_blocks * 512 < 160 << 20
    record = json.loads((store / f"{backup.id}.json").read_text())
    assert record["state"] == "completed" and record["checksum"] == backup.detail
    assert sorted(p.name for p in store.iterdir()) == [f"{backup.id}.img", f"{backup.id}.json"]
    assert provider.backups() == [backup]
    assert provider.backups(Query(deployment="other")) == []
    assert provider.get_backup(backup.id) == backup

    provider.delete(snapshot.id)  # the snapshot goes; the backup stays and restores
    with provider.materialize_backup(backup.id) as tree:
        for name, digest in digests.items():
            assert hashlib.sha256((tree / name).read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in store.iterdir()) == [f"{backup.id}.img", f"{backup.id}.json"]


def test_a_damaged_backup_is_refused_before_it_is_mounted(disk: Disk, store: Path) -> None:
    fill(disk, 16)
    provider, snapshot = snapshot_of(disk, store)
    backup = provider.backup(snapshot.id)
    image = store / f"{backup.id}.img"
    with image.open("r+b") as handle:  # one flipped byte in the middle of the data
        handle.seek(image.stat().st_size // 2 - 4096)
        handle.seek(os.lseek(handle.fileno(), handle.tell(), os.SEEK_DATA))
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with (
        pytest.raises(ProviderError, match=rf"backup {backup.id} is damaged"),
        provider.materialize_backup(backup.id),
    ):
        pytest.fail("a damaged backup must not be mounted")
    assert sorted(p.name for p in store.iterdir()) == [f"{backup.id}.img", f"{backup.id}.json"]


HANG = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from disk_snapshots.providers import image_copy
    from disk_snapshots.providers.loopback import LoopbackProvider

    pool, store, snapshot_id, after = sys.argv[1:5]
    original, calls = image_copy._read, [0]

    def read(*args):
        calls[0] += 1
        if calls[0] > int(after):  # a copy that stops making progress, then gets killed
            print("hanging", flush=True)
            time.sleep(3600)
        return original(*args)

    image_copy._read = read
    LoopbackProvider(Path(pool), backup_store=Path(store)).backup(snapshot_id)
    """
)


def start_hanging_backup(provider: LoopbackProvider, snapshot_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests'}"}
    argv = [sys.executable, "-c", HANG, str(provider.pool), provider.backup_location]
    proc = subprocess.Popen([*argv, snapshot_id, "5"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "hanging"
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_a_killed_backup_never_lists_as_complete_and_the_next_run_cleans_it_up(
    disk: Disk, store: Path
) -> None:
    fill(disk, 32)
    provider, snapshot = snapshot_of(disk, store)
    proc = start_hanging_backup(provider, snapshot.id)
    try:
        (running,) = provider.backups()
        assert running.state == "pending" and f"pid {proc.pid}" in running.detail
        assert provider.cleanup_leftovers() == []  # a live backup is not a leftover
        with pytest.raises(ProviderError, match="still being copied"):
            provider.delete_backup(running.id)
    finally:
        kill(proc)

    (killed,) = provider.backups()
    assert killed.state == "error" and "interrupted" in killed.detail
    assert not (store / f"{killed.id}.img").exists()
    assert (store / f".{killed.id}.partial").exists()

    done = provider.backup(snapshot.id)  # the next run removes what the killed one left

    assert [(b.id, b.state) for b in provider.backups()] == [(done.id, "completed")]
    assert sorted(p.name for p in store.iterdir()) == [f"{done.id}.img", f"{done.id}.json"]


def test_cleanup_removes_a_killed_backup_too(disk: Disk, store: Path) -> None:
    fill(disk, 16)
    provider, snapshot = snapshot_of(disk, store)
    kill(start_hanging_backup(provider, snapshot.id))
    (killed,) = provider.backups()
    assert [x.describe() for x in provider.leftovers()] == [
        f"backup leftover {killed.id} (in {store})"
    ]
    assert [x.id for x in provider.cleanup_leftovers()] == [killed.id]
    assert provider.backups() == [] and list(store.iterdir()) == []


def test_a_backup_past_its_deadline_fails_and_says_why(disk: Disk, store: Path) -> None:
    fill(disk, 64)
    provider, snapshot = snapshot_of(disk, store)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="still copying at the deadline"):
        provider.backup(snapshot.id, timeout=0.0)
    assert time.monotonic() - started < 30
    (failed,) = provider.backups()
    assert failed.state == "error" and "deadline" in failed.detail
    assert sorted(p.name for p in store.iterdir()) == [f"{failed.id}.json"]
    provider.delete_backup(failed.id)
    assert list(store.iterdir()) == []


def test_ids_are_checked_before_any_path_is_built(disk: Disk, store: Path) -> None:
    provider, _ = snapshot_of(disk, store)
    for bad in ("../etc/passwd", "bkp-", "bkp-0123456789abcdef0/x", "snap-0123456789abcdef0"):
        with pytest.raises(UnknownBackup, match="not a loopback backup id"):
            provider.get_backup(bad)
        with pytest.raises(UnknownBackup, match="not a loopback backup id"):
            provider.delete_backup(bad)
    with pytest.raises(UnknownBackup, match="does not exist"):
        provider.get_backup("bkp-0123456789abcdef0")


def test_without_a_backup_store_backups_are_off(disk: Disk) -> None:
    provider = LoopbackProvider.for_disk("", disk)
    snapshot = provider.snapshot(disk, annotator(disk)("app", "leader", datetime.now(UTC)))
    assert backup_tier(provider) is None
    assert provider.backups() == []
    with pytest.raises(ProviderError, match=r"provider\.loopback\.backup_store is empty"):
        provider.backup(snapshot.id)
