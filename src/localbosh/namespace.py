"""Persistent mount namespaces, one per simulated VM.

A namespace is created by `unshare --mount=FILE` and kept alive by that bind mount
of its nsfs file, with no process inside; commands enter it with `nsenter`. Its
processes are found by comparing /proc/<pid>/ns/mnt with the file's inode, which is
also how teardown makes sure nothing keeps running after the "VM" is deleted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class CommandError(Exception):
    pass


def run(
    argv: Sequence[str],
    *,
    what: str,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 300,
) -> subprocess.CompletedProcess[str]:
    """Run argv; on failure raise naming `what` failed, the command, and its stderr."""
    proc = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        text=True,
        check=False,
        env=dict(env) if env is not None else None,
        timeout=timeout,
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output")[-2000:]
        raise CommandError(f"{what}: `{' '.join(argv)}` exited {proc.returncode}: {detail}")
    return proc


def mounted(path: Path) -> bool:
    target = str(path)
    with Path("/proc/self/mountinfo").open() as f:
        return any(line.split()[4] == target for line in f)


def ensure_private_dir(path: Path) -> bool:
    """Make `path` a directory where nsfs files can be bind-mounted.

    The kernel refuses to bind a mount namespace file on a shared mount (systemd
    makes / shared); then the directory becomes its own private bind mount.
    Returns whether a mount was made (the caller unmounts it at teardown).
    """
    path.mkdir(parents=True, exist_ok=True)
    if mounted(path) or not _under_shared_mount(path):
        return False
    run(["mount", "--bind", str(path), str(path)], what=f"binding {path}")
    run(["mount", "--make-private", str(path)], what=f"making {path} private")
    return True


def _under_shared_mount(path: Path) -> bool:
    best = ""
    shared = False
    resolved = str(path.resolve())
    with Path("/proc/self/mountinfo").open() as f:
        for line in f:
            fields = line.split()
            mnt = fields[4]
            if (resolved == mnt or resolved.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                best
            ):
                best = mnt
                optional = fields[6 : fields.index("-")]
                shared = any(o.startswith("shared:") for o in optional)
    return shared


class Namespace:
    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists() and mounted(self.path)

    def create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        run(
            ["unshare", f"--mount={self.path}", "--propagation", "private", "true"],
            what=f"creating mount namespace {self.path}",
        )

    def argv(self, argv: Sequence[str], wd: str | None = None) -> list[str]:
        """argv run inside the namespace, in `wd` (entering a mount namespace moves a
        process to its root directory otherwise; nsenter's own --wd resolves the path
        before it enters, on the host)."""
        chdir = ["env", f"--chdir={wd}"] if wd is not None else []
        return ["nsenter", f"--mount={self.path}", "--", *chdir, *argv]

    def run(
        self, argv: Sequence[str], *, what: str, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), what=what, **kwargs)

    def inode(self) -> int | None:
        try:
            return self.path.stat().st_ino if self.exists() else None
        except OSError:
            return None

    def pids(self) -> list[int]:
        ino = self.inode()
        return [] if ino is None else pids_in_namespace(ino)

    def destroy(self, grace: float = 5.0) -> None:
        """Kill what still runs inside, then drop the namespace (and its mounts)."""
        ino = self.inode()
        if ino is not None:
            kill_namespace(ino, grace)
        if mounted(self.path):
            run(["umount", str(self.path)], what=f"unmounting namespace file {self.path}")
        self.path.unlink(missing_ok=True)


def pids_in_namespace(ino: int) -> list[int]:
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if (entry / "ns" / "mnt").stat().st_ino == ino:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_namespace(ino: int, grace: float) -> None:
    pids = pids_in_namespace(ino)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = pids_in_namespace(ino)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while pids_in_namespace(ino) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
