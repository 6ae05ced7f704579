"""Copy a snapshot's content onto this instance's disk, under its journal (journal.py).

Owners, modes, ACLs, xattrs, hard links and sparse files are preserved, and whatever
the snapshot lacks is removed.

One path, chosen by scripts/bench-restore: empty the disk (all but the journal), then
``cp -a``, then an rsync dry run that must find nothing to change. ``cp`` copies file
data with copy_file_range and skips holes with SEEK_DATA, several times faster than
rsync's pipe on large sparse files and no slower on small ones; emptying first means a
changed file never needs room for two copies (rsync --whole-file writes a temporary
file beside the old one), and a rerun after an interruption simply starts over. The
verification pass (sizes, times, owners, modes, ACLs, xattrs, hard links, extras)
costs a metadata walk, so a copy that silently missed something never counts as done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from disk_snapshots.errors import ReleaseError
from disk_snapshots.restore.journal import Journal
from disk_snapshots.vm.instance import DISK_DIR
from disk_snapshots.vm.processes import dies_with_us
from disk_snapshots.vm.usage import space

# One cp for every top-level entry: hard links are only kept within one cp invocation.
COPY = ("cp", "--archive", "--reflink=never")
# The check after the copy: archive mode plus hard links, ACLs and xattrs, numeric owners;
# directory times are left out because writing the journal changes its parent's.
VERIFY = (
    "rsync",
    "--archive",
    "--hard-links",
    "--acls",
    "--xattrs",
    "--numeric-ids",
    "--omit-dir-times",
    "--delete",
    "--dry-run",
    "--itemize-changes",
    f"--exclude=/{DISK_DIR}/",
)


class RestoreCopyError(ReleaseError, RuntimeError):
    """The copy failed; the disk is in an unfinished state that the journal records."""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dies_with_us(argv), capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )


def _empty(store: Path) -> None:
    """Remove everything but the journal; files of a mount root are never crossed into."""
    for entry in store.iterdir():
        if entry.name == DISK_DIR:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def does_not_fit(source: Path, store: Path) -> str:
    """Why a materialized snapshot cannot fit onto ``store``, or "" when it can.

    A materialized snapshot is a filesystem of its own, so its used bytes are what the
    copy writes; the disk is emptied first, so all of its size is there to take them. A
    source that is not a mount point (a plain directory) is not measured.
    """
    if not os.path.ismount(source):
        return ""
    used, total = space(source)[1], space(store)[0]
    if used <= total:
        return ""
    return (
        f"No space left on device for it: the snapshot holds {used / 2**20:.0f} MiB, more "
        f"than this disk's {total / 2**20:.0f} MiB (was the persistent disk made smaller?)"
    )


def copy_tree(source: Path, store: Path, journal: Journal) -> None:
    """Make ``store`` hold exactly what ``source`` holds (except our journal directory)."""
    journal.write(store, "copying")

    def fail(message: str) -> RestoreCopyError:
        journal.write(store, "failed", message)
        return RestoreCopyError(
            f"copying snapshot {journal.snapshot_id} into {store} failed: {message}. "
            f"The service stays stopped; the safety snapshot {journal.safety_snapshot_id} "
            "holds the data from before the restore."
        )

    too_big = does_not_fit(source, store)
    if too_big:
        raise fail(f"{too_big}; nothing on the disk was changed")
    try:
        _empty(store)
    except OSError as err:
        raise fail(f"emptying the disk: {err}") from None
    entries = [str(e) for e in sorted(source.iterdir()) if e.name != DISK_DIR]
    if entries:
        proc = _run([*COPY, f"--target-directory={store}", "--", *entries])
        if proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()[-3:]
            raise fail(f"cp exited {proc.returncode}: {' | '.join(detail)}")
    # The mount root itself: owner and mode come from the snapshot too.
    st = source.stat()
    os.chown(store, st.st_uid, st.st_gid)
    store.chmod(st.st_mode & 0o7777)
    os.sync()
    check = _run([*VERIFY, f"{source}/", f"{store}/"])
    if check.returncode != 0:
        detail = check.stderr.strip().splitlines()[-3:]
        raise fail(f"verification (rsync) exited {check.returncode}: {' | '.join(detail)}")
    differences = [line for line in check.stdout.splitlines() if line.strip()]
    if differences:
        raise fail(
            f"verification found {len(differences)} difference(s) after the copy, e.g. "
            + "; ".join(differences[:3])
        )
    journal.write(store, "copied")
