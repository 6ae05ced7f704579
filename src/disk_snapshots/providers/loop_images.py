"""Disk images as files: what the loopback provider's snapshots and backups share.

A clone (reflink where the filesystem can, a sparse copy where it cannot), a record
written so that a crash never leaves half of it, a lock that says "a live process is
writing this", and a read-only mount of a clone of an image.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.loopback_leftovers import run
from disk_snapshots.vm import fsops
from disk_snapshots.vm.processes import dies_with_us
from disk_snapshots.vm.processes import process_token

log = logging.getLogger(__name__)


# What FICLONE answers where the filesystem cannot clone (no reflink, another
# filesystem): a full copy does the job there. Any other error (EPERM, ENOSPC, EIO) would
# stop a copy just the same, so it is reported as it is.
NO_REFLINK = (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY)


def clone(source: Path, target: Path) -> str:
    """Copy-on-write clone when the filesystem can, else a sparse copy; says which."""
    try:
        fsops.reflink(source, target)
        return "reflink"
    except OSError as err:
        target.unlink(missing_ok=True)
        reason = err.strerror or str(err)
        if err.errno not in NO_REFLINK:
            raise ProviderError(f"cloning {source} to {target} failed: {reason}") from None
    log.warning(
        "%s cannot be reflinked (%s); making a full sparse copy, which takes time and space",
        source,
        reason,
    )
    full = subprocess.run(
        dies_with_us(["cp", "--sparse=always", "--", str(source), str(target)]),
        capture_output=True,
        text=True,
        check=False,
    )
    if full.returncode != 0:
        target.unlink(missing_ok=True)
        raise ProviderError(f"copying {source} to {target} failed: {full.stderr.strip()}")
    return "full"


def write_synced(path: Path, text: str) -> None:
    with path.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomically(path: Path, text: str) -> None:
    """Write under a temporary name, flush, rename: readers see the old or the new text.
    The temporary name carries its writer, so a killed writer's is known as a leftover
    (loopback_leftovers)."""
    tmp = path.with_name(f".{path.name}.tmp-{process_token()}")
    write_synced(tmp, text)
    tmp.replace(path)


def sync_directory(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hold(lock: Path) -> int:
    """Take ``lock`` (created if need be) for as long as the returned descriptor is open."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def is_held(lock: Path) -> bool:
    """Whether a live process holds ``lock``: the kernel lets go of a dead one's."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the shared lock just taken
    return False


def detach_leftover(work: Path) -> None:
    """Unmount and detach what a killed ``mounted_clone`` left in ``work``, then remove it."""
    mountpoint, image = work / "mnt", work / "disk.img"
    if os.path.ismount(mountpoint):
        run(["umount", str(mountpoint)])
    if image.exists():
        for line in run(["losetup", "-j", str(image)]).splitlines():
            device = line.split(":", 1)[0]
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
    shutil.rmtree(work, ignore_errors=True)


@contextmanager
def mounted_clone(
    source: Path,
    work_parent: Path,
    prefix: str,
    check: Callable[[Path], None] | None = None,
    mark: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """A fresh clone of ``source`` mounted read-only, gone on exit.

    The clone, not the source, is attached writable so that ext4 may replay its
    journal; the mount itself is read-only. ``check`` sees the clone before anything
    can write to it. The work directory holds ``lock`` while it is in use, so that
    cleanup tells a running restore's from a killed one's; ``mark`` may write more into
    it first (the loopback pool names the process and disk a clone belongs to). A work
    directory still mounted (its umount failed) is left for cleanup, never removed.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=work_parent))
    lock = hold(work / "lock")
    if mark is not None:
        mark(work)
    image = work / "disk.img"
    mountpoint = work / "mnt"
    mountpoint.mkdir()
    device = ""
    try:
        clone(source, image)
        if check is not None:
            check(image)
        device = run(["losetup", "--find", "--show", str(image)]).strip()
        run(["mount", "-o", "ro", device, str(mountpoint)])
        try:
            yield mountpoint
        finally:
            run(["umount", str(mountpoint)])
    finally:
        if device:
            subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
        if not os.path.ismount(mountpoint):
            shutil.rmtree(work, ignore_errors=True)
        os.close(lock)
