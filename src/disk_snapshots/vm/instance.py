"""Who this instance is and which persistent disk it has, read from the VM.

The rendered spec gives identity; the agent's files give the disk: the CID of the disk
mounted at /var/vcap/store is in ``managed_disk_settings.json`` and its attachment
hint (image path, volume id) in ``settings.json`` or ``persistent_disk_hints.json``
(docs/bosh-contracts.md, the persistent disk). ``root`` is "/" on a VM and a test's
directory elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from disk_snapshots.errors import ReleaseError

STORE = Path("/var/vcap/store")
# Our own directory on the persistent disk: restore journals, the pending-import marker.
DISK_DIR = ".disk-snapshots"


class InstanceError(ReleaseError, RuntimeError):
    """The VM does not look like a BOSH instance with a persistent disk."""


@dataclass(frozen=True)
class Disk:
    cid: str
    mount: Path  # where the filesystem is mounted (/var/vcap/store)
    hint: dict[str, object]  # the agent's attachment hint for this CID

    @property
    def image(self) -> Path | None:
        """The image file behind a loopback disk (None on an IaaS)."""
        path = self.hint.get("path")
        return Path(path) if isinstance(path, str) and path.endswith(".img") else None

    @property
    def volume_id(self) -> str:
        """On AWS the BOSH disk CID is the EBS volume id."""
        value = self.hint.get("volume_id") or self.hint.get("VolumeID") or self.cid
        return str(value)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise InstanceError(f"{path} is not valid JSON: {err}") from None


def managed_disk_cid(root: Path = Path("/")) -> str:
    path = root / "var/vcap/bosh/managed_disk_settings.json"
    try:
        # The agent writes the plain CID string, not JSON.
        cid = path.read_text().strip().strip('"')
    except FileNotFoundError:
        raise InstanceError(
            f"{path} does not exist: this instance has no persistent disk mounted by the agent"
        ) from None
    if not cid:
        raise InstanceError(f"{path} is empty: no persistent disk is mounted")
    return cid


def disk_hint(cid: str, root: Path = Path("/")) -> dict[str, object]:
    """The attachment hint for ``cid``, from settings.json or the registry-less hints file."""
    bosh = root / "var/vcap/bosh"
    settings = _read_json(bosh / "settings.json")
    if isinstance(settings, dict):
        persistent = settings.get("disks", {}).get("persistent") or {}
        if cid in persistent:
            hint = persistent[cid]
            return hint if isinstance(hint, dict) else {"path": hint}
    hints = _read_json(bosh / "persistent_disk_hints.json")
    if isinstance(hints, dict) and isinstance(hints.get(cid), dict):
        # Go field names: the agent stores this struct without JSON tags.
        raw = hints[cid]
        return {
            "path": raw.get("Path", ""),
            "volume_id": raw.get("VolumeID", ""),
            "id": raw.get("ID", ""),
        }
    return {}


def is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)


def current_disk(root: Path = Path("/"), mount: Path = STORE) -> Disk:
    """The persistent disk mounted at /var/vcap/store on this VM."""
    cid = managed_disk_cid(root)
    target = root / mount.relative_to("/")
    if not is_mountpoint(target):
        raise InstanceError(
            f"{target} is not a mount point: the persistent disk {cid} is not mounted"
        )
    return Disk(cid=cid, mount=target, hint=disk_hint(cid, root))


def disk_size_bytes(mount: Path, sys_block: Path = Path("/sys/dev/block")) -> int | None:
    """The size of the whole disk whose filesystem is mounted at ``mount`` (the disk, not
    its partition: the agent puts one partition on a real disk, the snapshot and a disk
    made from it are whole disks); None when the kernel does not say."""
    device = mount.stat().st_dev
    entry = sys_block / f"{os.major(device)}:{os.minor(device)}"
    try:
        if (entry / "partition").exists():
            entry = entry.resolve().parent
        return int((entry / "size").read_text().strip()) * 512
    except (OSError, ValueError):
        return None
