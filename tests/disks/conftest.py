"""Real ext4 disks on loop devices in a reflink-capable (XFS) pool, like the local deployment's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configdocs import snapshotter_doc
from disk_snapshots.instance import Disk
from disk_snapshots.snapshotter import Paths


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def unmount(target: Path) -> None:
    """Unmount, waiting out writers a thaw just released; lazily as the last resort, since
    a mount left behind breaks pytest's temp-dir cleanup in every later run."""
    for _ in range(25):
        if (
            subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode
            == 0
        ):
            return
        if not os.path.ismount(target):
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(target)], check=False)


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
        unmount(mountpoint)


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


def write_config(paths: Paths, doc: dict[str, Any]) -> None:
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(json.dumps(doc))
