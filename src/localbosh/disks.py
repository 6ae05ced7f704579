"""Persistent disks: ext4 images in a reflink-capable pool, loop-mounted in an instance.

The pool is what the `loopback` snapshot provider clones from, so it must support
reflink (cheap copy-on-write clones, like IaaS snapshots). If the state dir's own
filesystem cannot reflink, the pool is an XFS image (reflink=1) on a loop device,
mounted at `<state>/pool` inside the namespaces only; the loop device is detached
after the last deployment is deleted, so an idle machine keeps no mount or loop.

A disk image carries its filesystem directly (no partition table), so the
snapshot provider can loop-mount an image or a clone of it as is. The agent
would partition a real block device first; nothing else differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from localbosh.namespace import CommandError
from localbosh.namespace import Namespace
from localbosh.namespace import run
from localbosh.state import Layout

STORE = "/var/vcap/store"
MIGRATION_TARGET = "/var/vcap/store_migration_target"
DEFAULT_POOL_SIZE = "64G"


def reflink_supported(directory: Path) -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / f".reflink-probe-{os.getpid()}"
    dst = directory / f".reflink-probe-{os.getpid()}.clone"
    try:
        src.write_bytes(b"probe")
        proc = subprocess.run(
            ["cp", "--reflink=always", str(src), str(dst)], capture_output=True, check=False
        )
        return proc.returncode == 0
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)


class Pool:
    """The disk pool. When the state dir cannot reflink, the pool is an XFS image on a
    loop device that is mounted only inside namespaces, never on the host: every
    mount namespace anyone creates on this machine copies the host's mounts, and a
    copy held by someone else's long-lived process would keep our pool (and its loop
    device) alive after delete-deployment. Host-side pool work (creating, formatting
    and deleting disk images) runs in a small namespace of its own."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.path = layout.pool
        self.ns = Namespace(layout.ns_dir / ".pool")

    def native(self) -> bool:
        """True when the pool is a plain directory of the (reflink-capable) state dir."""
        marker = self.layout.root / ".pool-native"
        if marker.exists():
            return True
        if self.layout.pool_image.exists():
            return False
        if reflink_supported(self.layout.root):
            marker.write_text("")
            return True
        return False

    def loop_device(self) -> str | None:
        out = run(["losetup", "-j", str(self.layout.pool_image)], what="finding pool loop device")
        lines = out.stdout.strip().splitlines()
        return lines[0].split(":", 1)[0] if lines else None

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.native():
            return
        img = self.layout.pool_image
        if not img.exists():
            size = os.environ.get("LOCALBOSH_POOL_SIZE", DEFAULT_POOL_SIZE)
            run(["truncate", "-s", size, str(img)], what="creating pool image")
            run(
                ["mkfs.xfs", "-q", "-m", "reflink=1", str(img)],
                what=f"formatting pool image {img}",
            )
        if self.loop_device() is None:
            run(["losetup", "--find", str(img)], what=f"attaching pool image {img}")
        if not self.ns.exists():
            self.ns.create()
            self.attach_to(self.ns)

    def attach_to(self, ns: Namespace) -> None:
        """Mount the pool at the same path inside an instance's namespace."""
        if self.native() or is_mounted_in(ns, str(self.path)):
            return
        dev = self.loop_device()
        if dev is None:
            raise CommandError(f"pool image {self.layout.pool_image} is not attached")
        ns.run(["mount", dev, str(self.path)], what=f"mounting disk pool {dev} at {self.path}")

    def release(self) -> None:
        """Drop the pool namespace and the loop device (after the last deployment)."""
        if self.native():
            return
        self.ns.destroy()
        dev = self.loop_device()
        if dev is not None:
            run(["losetup", "-d", dev], what=f"detaching pool loop device {dev}")

    def run(self, argv: list[str], what: str, input: str | None = None) -> None:
        if self.native():
            run(argv, what=what, input=input)
        else:
            self.ns.run(argv, what=what, input=input)

    def image(self, cid: str) -> Path:
        if not cid.startswith("disk-") or "/" in cid or ".." in cid:
            raise ValueError(f"invalid disk CID {cid!r}")
        return self.path / f"{cid}.img"

    def create(self, size_mib: int) -> str:
        cid = f"disk-{uuid.uuid4()}"
        img = self.image(cid)
        self.run(["truncate", "-s", f"{size_mib}M", str(img)], what=f"creating disk {cid}")
        # The agent formats with `mke2fs -t ext4 -j` and lazy inode tables.
        self.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-j",
                "-E",
                "lazy_itable_init=1",
                "-L",
                "bosh-store",
                str(img),
            ],
            what=f"formatting disk {cid}",
        )
        meta = json.dumps({"cid": cid, "size_mib": size_mib})
        self.run(["tee", str(img.with_suffix(".json"))], what=f"recording disk {cid}", input=meta)
        return cid

    def exists(self, cid: str) -> bool:
        """Whether the pool holds the disk image of ``cid`` (one the loopback provider
        made from a snapshot, say): what the CPI's attach_disk would find or not."""
        try:
            self.run(["test", "-f", str(self.image(cid))], what=f"looking for disk {cid}")
        except (CommandError, ValueError):
            return False
        return True

    def delete(self, cid: str) -> None:
        img = self.image(cid)
        self.run(["rm", "-f", str(img), str(img.with_suffix(".json"))], what=f"deleting disk {cid}")


def mount_disk(ns: Namespace, image: Path, target: str = STORE) -> None:
    # `mount -o loop` sets autoclear: the loop device goes away with the last
    # mount, even if the namespace is torn down without unmounting.
    ns.run(["mkdir", "-p", target], what=f"creating {target}")
    ns.run(["mount", "-o", "loop", str(image), target], what=f"mounting {image} at {target}")
    ns.run(["chmod", "0700", target], what=f"setting permissions of {target}")


def unmount_disk(ns: Namespace, target: str = STORE) -> None:
    if not is_mounted_in(ns, target):
        return
    try:
        ns.run(["umount", target], what=f"unmounting {target}")
    except CommandError as exc:
        holders = ns.run(["sh", "-c", f"fuser -vm {target} 2>&1 || true"], what="fuser").stdout
        raise CommandError(f"{exc}\nprocesses using {target}:\n{holders}") from exc


def is_mounted_in(ns: Namespace, target: str) -> bool:
    proc = subprocess.run(
        ns.argv(["findmnt", "-n", target]), capture_output=True, text=True, check=False
    )
    return proc.returncode == 0 and bool(proc.stdout.strip())


def migrate(ns: Namespace, new_image: Path) -> None:
    """Copy /var/vcap/store onto a new disk the way the agent migrates (jobs are stopped).

    New disk on the migration target, old remounted read-only, tar with xattrs and
    sparse files, then the new disk takes /var/vcap/store.
    """
    mount_disk(ns, new_image, MIGRATION_TARGET)
    ns.run(["mount", "-o", "remount,ro", STORE], what=f"remounting {STORE} read-only")
    ns.run(
        [
            "sh",
            "-c",
            f"tar --xattrs --sparse -C {STORE} -cf - . | tar --xattrs -xpf - -C {MIGRATION_TARGET}",
        ],
        what="copying the persistent disk to the new disk",
    )
    ns.run(["umount", STORE], what=f"unmounting old disk from {STORE}")
    ns.run(["mount", "--move", MIGRATION_TARGET, STORE], what=f"moving new disk to {STORE}")
