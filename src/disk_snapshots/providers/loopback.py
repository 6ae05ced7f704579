"""The ``loopback`` provider: the local stand-in for an IaaS (docs/catalog.md).

A persistent disk is an ext4 image attached through a loop device. A snapshot is a
reflink clone of that image taken while the filesystem is frozen: copy-on-write, a
few milliseconds whatever the size, and a block-level point in time like an EBS
snapshot. Where the pool cannot reflink, a sparse full copy is made instead, and
both the log and the snapshot's metadata say so.

Layout: ``<pool>/snapshots/<id>.img`` and ``<id>.json`` (the tags). A snapshot
exists exactly when its JSON exists; both are written under temporary names and
renamed, so a crash leaves no half snapshot that lists as whole.

Backups (``provider.loopback.backup_store``) are full, verified copies of snapshot
images in another directory, ideally on other storage: loopback_backups.py.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextlib import contextmanager
from pathlib import Path

from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import select
from disk_snapshots.providers.base import Leftover
from disk_snapshots.providers.base import NewDisk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.loop_images import clone
from disk_snapshots.providers.loop_images import mounted_clone
from disk_snapshots.providers.loop_images import write_atomically
from disk_snapshots.providers.loop_images import write_synced
from disk_snapshots.providers.loopback_backups import LoopbackBackups
from disk_snapshots.providers.loopback_leftovers import MATERIALIZE_PREFIX
from disk_snapshots.providers.loopback_leftovers import OWNER
from disk_snapshots.providers.loopback_leftovers import PoolDebris
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.processes import process_token

log = logging.getLogger(__name__)

# Shaped like EC2 ids so that catalogs, tables and docs read the same on both.
_ID = re.compile(r"^snap-[0-9a-f]{17}$")
COPY_KEY = "disk-snapshots:copy"  # "reflink" or "full": how the image was cloned


def check_id(snapshot_id: str) -> str:
    """Refuse any id that is not ours before it gets near a path."""
    if not isinstance(snapshot_id, str) or not _ID.match(snapshot_id):
        raise UnknownSnapshot(
            f"{snapshot_id!r} is not a loopback snapshot id (expected snap- and 17 hex digits)"
        )
    return snapshot_id


class LoopbackProvider:
    name = "loopback"
    backup_property = "provider.loopback.backup_store"

    def __init__(self, pool: Path, disk_cid: str = "", backup_store: Path | None = None) -> None:
        self.pool = pool
        self.directory = pool / "snapshots"
        # The disk this provider works for: its materialize clones are its own to release.
        self.debris = PoolDebris(self.directory, disk_cid)
        self.backups_store = LoopbackBackups(backup_store) if backup_store else None

    @classmethod
    def for_disk(
        cls, configured_pool: str, disk: Disk | None, backup_store: str = ""
    ) -> LoopbackProvider:
        """The pool the property names, else the directory of this instance's disk image."""
        cid = disk.cid if disk is not None else ""
        store = Path(backup_store) if backup_store else None
        if configured_pool:
            return cls(Path(configured_pool), cid, store)
        if disk is not None and disk.image is not None:
            return cls(disk.image.parent, cid, store)
        raise ProviderError(
            "provider.loopback.pool is empty and this instance has no loopback disk image "
            "to find the pool from"
        )

    def prepare(self, disk: Disk) -> None:
        """Write the image's dirty pages (the loop device's writes) to the pool now, so the
        clone, which must flush them first, does not do it while the disk is frozen; and
        release what a killed snapshot or materialize left in the pool."""
        self._release_leftovers()
        if disk.image is not None:
            fd = os.open(disk.image, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        if disk.image is None or not disk.image.is_file():
            raise ProviderError(
                f"disk {disk.cid} has no image file in the agent settings (path hint "
                f"{disk.hint.get('path')!r}): is this instance on the loopback provider?"
            )
        directory = self._checked_directory()
        directory.mkdir(parents=True, exist_ok=True)
        snapshot_id = "snap-" + secrets.token_hex(9)[:17]
        image = directory / f"{snapshot_id}.img"
        # Until the last rename, everything is marked with this process: a kill anywhere
        # leaves only what loopback_leftovers knows to be left behind.
        token = process_token()
        partial = directory / f".{snapshot_id}.img.partial-{token}"
        tags = annotations.to_tags()
        metadata = directory / f"{snapshot_id}.json"
        pending = metadata.with_name(f".{metadata.name}.tmp-{token}")
        try:
            tags[COPY_KEY] = clone(disk.image, partial)
            write_synced(pending, json.dumps({"id": snapshot_id, "tags": tags}, indent=2))
            partial.replace(image)
            pending.replace(metadata)
        except BaseException:
            for path in (partial, pending):
                path.unlink(missing_ok=True)
            if not metadata.exists():
                image.unlink(missing_ok=True)
            raise
        return Snapshot(id=snapshot_id, annotations=annotations, size_bytes=image.stat().st_size)

    def _read(self, path: Path) -> Snapshot:
        record = json.loads(path.read_text())
        snapshot_id = check_id(record.get("id", ""))
        image = path.with_suffix(".img")
        size = image.stat().st_size if image.exists() else None
        return Snapshot(
            id=snapshot_id,
            annotations=Annotations.from_tags(record.get("tags", {})),
            state="completed" if size is not None else "error",
            size_bytes=size,
        )

    def _checked_directory(self) -> Path:
        """The pool's snapshots directory, or a ProviderError saying why it is unusable."""
        directory = self.directory
        if directory.exists() and not directory.is_dir():
            raise ProviderError(f"the loopback pool's {directory} is not a directory")
        if not self.pool.is_dir():
            raise ProviderError(f"the loopback pool {self.pool} is not a directory")
        return directory

    def list(self, query: Query | None = None) -> list[Snapshot]:
        directory = self._checked_directory()
        if not directory.is_dir():
            return []
        found: list[Snapshot] = []
        for path in directory.glob("snap-*.json"):
            try:
                found.append(self._read(path))
            except (AnnotationError, ProviderError, ValueError, OSError) as err:
                # Someone else's or a damaged record: skip it, but never silently.
                log.warning("ignoring %s: %s", path, err)
        return select(found, query or Query())

    def _json(self, snapshot_id: str) -> Path:
        path = self.directory / f"{check_id(snapshot_id)}.json"
        if not path.is_file():
            raise UnknownSnapshot(f"snapshot {snapshot_id} does not exist in {path.parent}")
        return path

    def get(self, snapshot_id: str) -> Snapshot:
        return self._read(self._json(snapshot_id))

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        path = self._json(snapshot_id)
        record = json.loads(path.read_text())
        copy = record.get("tags", {}).get(COPY_KEY, "")
        record["tags"] = annotations.to_tags() | ({COPY_KEY: copy} if copy else {})
        write_atomically(path, json.dumps(record, indent=2))
        return self._read(path)

    def delete(self, snapshot_id: str) -> None:
        path = self._json(snapshot_id)
        # The JSON goes first: a snapshot without it no longer lists, so a crash here
        # leaves an orphaned image, never a listed snapshot without data.
        path.unlink()
        path.with_suffix(".img").unlink(missing_ok=True)

    # -- the backup tier (loopback_backups.py) --------------------------------------------

    @property
    def backup_location(self) -> str:
        return str(self.backups_store.store) if self.backups_store else ""

    def _store(self) -> LoopbackBackups:
        if self.backups_store is None:
            raise ProviderError(f"backups are off: {self.backup_property} is empty")
        return self.backups_store

    def backup(self, snapshot_id: str, timeout: float | None = None) -> Backup:
        """A verified full copy of the snapshot's image in the backup store (done here,
        so it returns completed)."""
        store = self._store()
        path = self._json(snapshot_id)
        snapshot = self._read(path)
        if snapshot.state != "completed":
            raise ProviderError(f"snapshot {snapshot_id} has no image: nothing to back up")
        deadline = None if timeout is None else time.monotonic() + timeout
        return store.backup(snapshot, path.with_suffix(".img"), deadline)

    def backups(self, query: Query | None = None) -> builtins.list[Backup]:
        return self.backups_store.list(query) if self.backups_store else []

    def get_backup(self, backup_id: str) -> Backup:
        return self._store().get(backup_id)

    def delete_backup(self, backup_id: str) -> None:
        self._store().delete(backup_id)

    def materialize_backup(self, backup_id: str, az: str = "") -> AbstractContextManager[Path]:
        return self._store().materialize(backup_id)

    @contextmanager
    def materialize(self, snapshot_id: str, az: str = "") -> Iterator[Path]:
        """Mount a fresh clone of the snapshot read-only; the clone goes on exit."""
        source = self._json(snapshot_id).with_suffix(".img")
        if not source.is_file():
            raise ProviderError(f"snapshot {snapshot_id} has metadata but no image ({source})")
        self._release_leftovers()
        prefix = f"{MATERIALIZE_PREFIX}{snapshot_id}-"
        with mounted_clone(source, source.parent, prefix, mark=self._own) as mountpoint:
            yield mountpoint

    def _own(self, work: Path) -> None:
        """Mark a materialize's work directory with its process and disk (PoolDebris)."""
        owner = {"process": process_token(), "disk": self.debris.disk_cid}
        (work / OWNER).write_text(json.dumps(owner))

    def create_disk(self, snapshot_id: str, like: Disk, labels: Mapping[str, str]) -> NewDisk:
        """A clone of the snapshot's image as a new disk of the pool: ``<pool>/<cid>.img``
        beside ``<cid>.json``, the layout in which the local Director keeps the disks it
        attaches by CID (src/localbosh/disks.py), so ``attach-disk`` finds it."""
        source = self._json(snapshot_id).with_suffix(".img")
        if not source.is_file():
            raise ProviderError(f"snapshot {snapshot_id} has metadata but no image ({source})")
        cid = f"disk-{uuid.uuid4()}"
        image = self.pool / f"{cid}.img"
        partial = self.pool / f".{cid}.img.partial"
        try:
            clone(source, partial)
            size_mib = partial.stat().st_size // 2**20
            write_atomically(
                image.with_suffix(".json"),
                json.dumps({"cid": cid, "size_mib": size_mib, "labels": dict(labels)}, indent=2),
            )
            partial.replace(image)
        except BaseException:
            partial.unlink(missing_ok=True)
            image.with_suffix(".json").unlink(missing_ok=True)
            raise
        return NewDisk(cid=cid, size_mib=size_mib, zone="", snapshot_id=snapshot_id)

    def leftovers(self) -> builtins.list[Leftover]:
        self._checked_directory()
        found = self.debris.find()
        if self.backups_store is not None:
            store = self.backups_store.store
            found += [
                Leftover("backup leftover", name, f"in {store}")
                for name, _ in self.backups_store.leftovers()
            ]
        return found

    def cleanup_leftovers(self) -> builtins.list[Leftover]:
        self._checked_directory()
        released = self.debris.release()
        if self.backups_store is not None:
            # What killed backups (and restores reading one) left in the backup store.
            store = self.backups_store.store
            released += [
                Leftover("backup leftover", name, f"in {store}")
                for name in self.backups_store.cleanup_leftovers()
            ]
        return released

    def _release_leftovers(self) -> None:
        """Before making new temporary resources: what a killed run left goes first."""
        try:
            self.debris.release()
        except ProviderError as err:
            log.warning("%s (bin/snapshots cleanup tries again)", err)
