"""Real ext4 disks on loop devices in a reflink-capable (XFS) pool, like the local deployment's."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.vm.instance import Disk
from support.configdocs import snapshotter_doc
from support.disks import require_root
from support.disks import sh
from support.disks import unmount
from support.disks import write_config
from support.disks import xfs_pool


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_root()
    with xfs_pool(tmp_path_factory.mktemp("pool"), size="8G") as mountpoint:
        yield mountpoint


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
        unmount(store)
        subprocess.run(["losetup", "-d", device], check=False)
        image.unlink(missing_ok=True)
        shutil.rmtree(pool / "snapshots", ignore_errors=True)


@pytest.fixture
def vm(disk: Disk, tmp_path: Path) -> Iterator[tuple[Paths, dict[str, Any]]]:
    """/var/vcap under tmp_path/vm, with the disk bind-mounted at var/vcap/store."""
    root = tmp_path / "vm"
    store = root / "var/vcap/store"
    store.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(disk.mount), str(store)], check=True)
    bosh = root / "var/vcap/bosh"
    bosh.mkdir(parents=True)
    (bosh / "managed_disk_settings.json").write_text(disk.cid)
    (bosh / "settings.json").write_text(
        json.dumps({"disks": {"persistent": {disk.cid: {"path": str(disk.image)}}}})
    )
    doc = snapshotter_doc()
    doc["properties"]["service"]["profile"] = "none"
    doc["properties"]["service"]["jobs"] = []
    paths = Paths(root=root)
    write_config(paths, doc)
    try:
        yield paths, doc
    finally:
        unmount(store)
