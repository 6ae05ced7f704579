"""Copying a snapshot onto a disk: everything preserved, extras removed, journaled, resumable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.commands.hooks import pre_start
from disk_snapshots.restore.copy import RestoreCopyError
from disk_snapshots.restore.copy import copy_tree
from disk_snapshots.restore.journal import Journal
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.vm.instance import Disk
from support.disks import sh
from support.disks import unmount
from support.disks import write_config

pytestmark = pytest.mark.root


def build_tree(root: Path) -> None:
    data = root / "redis"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"REDIS0011" + os.urandom(4096))
    os.chown(data / "dump.rdb", 1234, 5678)
    (data / "dump.rdb").chmod(0o640)
    os.link(data / "dump.rdb", data / "hardlink.rdb")
    with (data / "sparse.img").open("wb") as handle:
        handle.seek(256 * 1024 * 1024)
        handle.write(b"end")
    sh("setfattr", "-n", "user.origin", "-v", "snapshot", str(data / "dump.rdb"))
    sh("setfacl", "-m", "u:4321:r", str(data / "dump.rdb"))
    (data / "latest").symlink_to("dump.rdb")


def journal() -> Journal:
    return Journal("restore-1", "snap-0123456789abcdef0", "snap-fedcba98765432100", "planned")


def test_copy_preserves_everything_and_removes_extras(disk: Disk, tmp_path: Path) -> None:
    source = tmp_path / "snapshot"
    source.mkdir()
    build_tree(source)
    (disk.mount / "stale.txt").write_text("not in the snapshot")
    (disk.mount / "redis").mkdir()
    (disk.mount / "redis" / "dump.rdb").write_text("newer data that the restore replaces")
    copy_tree(source, disk.mount, journal())
    copied = disk.mount / "redis" / "dump.rdb"
    assert copied.read_bytes() == (source / "redis" / "dump.rdb").read_bytes()
    assert not (disk.mount / "stale.txt").exists()
    st = copied.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777, st.st_nlink) == (1234, 5678, 0o640, 2)
    assert copied.samefile(disk.mount / "redis" / "hardlink.rdb")
    assert "snapshot" in sh("getfattr", "-n", "user.origin", str(copied))
    assert "user:4321:r--" in sh("getfacl", "-p", str(copied))
    assert (disk.mount / "redis" / "latest").readlink() == Path("dump.rdb")
    sparse = (disk.mount / "redis" / "sparse.img").stat()
    assert sparse.st_blocks * 512 < 1024 * 1024  # 256 MiB apparent, almost nothing allocated
    assert Journal.read(disk.mount).phase == "copied"  # type: ignore[union-attr]


def test_a_full_disk_fails_and_pre_start_refuses(
    disk: Disk, tmp_path: Path, vm: tuple[Paths, dict[str, Any]]
) -> None:
    paths, _ = vm
    source = tmp_path / "snapshot"
    source.mkdir()
    with (source / "big.bin").open("wb") as handle:
        for _ in range(40):
            handle.write(os.urandom(16 * 1024 * 1024))  # 640 MiB onto a 512 MiB disk
    with pytest.raises(RestoreCopyError) as caught:
        copy_tree(source, disk.mount, journal())
    assert "No space left on device" in str(caught.value)
    assert "safety snapshot snap-fedcba98765432100" in str(caught.value)
    recorded = Journal.read(disk.mount)
    assert recorded is not None and recorded.phase == "failed" and recorded.blocks_start
    assert pre_start(paths) == 1
    # Rerunning with a snapshot that fits completes the copy and lets the service start.
    (source / "big.bin").unlink()
    (source / "small.bin").write_bytes(b"fits")
    copy_tree(source, disk.mount, journal())
    assert pre_start(paths) == 0
    assert (disk.mount / "small.bin").read_bytes() == b"fits"
    assert not (disk.mount / "big.bin").exists()


def test_a_snapshot_bigger_than_the_disk_is_refused_before_anything_is_written(
    disk: Disk, pool: Path, tmp_path: Path
) -> None:
    # The materialized snapshot is the 512 MiB disk holding 200 MiB; the disk to restore
    # is 128 MiB, as after a persistent_disk shrink.
    with (disk.mount / "data.bin").open("wb") as handle:
        for _ in range(25):
            handle.write(os.urandom(8 * 1024 * 1024))
    image = pool / f"small-{tmp_path.name}.img"[:60]
    sh("truncate", "-s", "128M", str(image))
    sh("mkfs.ext4", "-q", "-F", str(image))
    small = tmp_path / "small"
    small.mkdir()
    device = sh("losetup", "--find", "--show", str(image)).strip()
    try:
        sh("mount", device, str(small))
        try:
            (small / "current.txt").write_text("the data before the restore")
            with pytest.raises(RestoreCopyError, match="No space left on device for it") as caught:
                copy_tree(disk.mount, small, journal())
            assert "nothing on the disk was changed" in str(caught.value)
            assert (small / "current.txt").read_text() == "the data before the restore"
            recorded = Journal.read(small)
            assert recorded is not None and recorded.phase == "failed" and recorded.blocks_start
        finally:
            unmount(small)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
        image.unlink(missing_ok=True)


def test_finish_keeps_the_record(disk: Disk) -> None:
    j = journal()
    j.write(disk.mount, "copied")
    j.finish(disk.mount)
    assert Journal.read(disk.mount) is None
    assert (disk.mount / ".disk-snapshots" / "restore-last.json").exists()


def test_unreadable_journal_blocks(disk: Disk, vm: tuple[Paths, dict[str, Any]]) -> None:
    paths, doc = vm
    write_config(paths, doc)
    Journal.path(disk.mount).parent.mkdir()
    Journal.path(disk.mount).write_text("{half")
    found = Journal.read(disk.mount)
    assert found is not None and found.blocks_start
    assert pre_start(paths) == 1
