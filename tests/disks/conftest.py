"""Real ext4 disks on loop devices in a reflink-capable (XFS) pool, like the local deployment's."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from disk_snapshots.instance import Disk


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices, mounts and fsfreeze")
    for tool in ("mkfs.xfs", "mkfs.ext4", "losetup", "fsfreeze"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/bootstrap installs it")
    base = tmp_path_factory.mktemp("pool")
    image = base / "pool.img"
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    sh("truncate", "-s", "8G", str(image))
    sh("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
    sh("mount", "-o", "loop", str(image), str(mountpoint))
    try:
        yield mountpoint
    finally:
        # A lazy unmount as the last resort: a busy pool must not outlive the session,
        # or pytest's temp-dir cleanup trips over it in later runs.
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def disk(pool: Path, tmp_path: Path) -> Iterator[Disk]:
    """A 512 MiB ext4 disk image in the pool, loop-mounted at tmp_path/store."""
    name = f"disk-{tmp_path.name}"[:60]
    image = pool / f"{name}.img"
    sh("truncate", "-s", "512M", str(image))
    sh("mkfs.ext4", "-q", "-F", str(image))
    store = tmp_path / "store"
    store.mkdir()
    device = sh("losetup", "--find", "--show", str(image)).strip()
    sh("mount", device, str(store))
    try:
        yield Disk(cid=name, mount=store, hint={"path": str(image)})
    finally:
        subprocess.run(["fsfreeze", "-u", str(store)], capture_output=True, check=False)
        subprocess.run(["umount", str(store)], check=False)
        subprocess.run(["losetup", "-d", device], check=False)
        image.unlink(missing_ok=True)
        shutil.rmtree(pool / "snapshots", ignore_errors=True)
