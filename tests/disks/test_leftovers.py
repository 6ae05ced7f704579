"""A process killed at each step that holds a temporary resource leaves nothing for long.

A child process runs the loopback provider's materialize (what a restore's copy does)
or snapshot (what every snapshot, and each member of a set, does) and SIGKILLs itself
right after the step under test, holding what that step made: the clone, its loop
device, its mount, a partial image, the metadata being written. Then whatever runs next
must release it: the next run of the same operation, the daemon's start (the provider's
cleanup_leftovers, which commands/daemon.run calls) or ``bin/snapshots cleanup --yes``;
and nothing of ours may remain: no loop device on a pool file, no mount below the pool,
no temporary image.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from test_loopback_quiesce import annotator

from disk_snapshots.annotations import Annotations
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.vm.fsops import syncfs
from disk_snapshots.vm.instance import Disk
from support.disks import temporary_resources

pytestmark = pytest.mark.root

# Run in the child: build the provider, arm the step's kill, run the operation.
CHILD = textwrap.dedent(
    """
    import json, os, pathlib, signal, sys
    from disk_snapshots.annotations import Annotations
    from disk_snapshots.providers import loop_images, loopback
    from disk_snapshots.vm.instance import Disk

    pool, disk_json, operation, step, snapshot_id = sys.argv[1:6]
    d = json.loads(disk_json)
    disk = Disk(d["cid"], pathlib.Path(d["mount"]), d["hint"])
    provider = loopback.LoopbackProvider(pathlib.Path(pool), disk.cid)

    def die():
        sys.stdout.write("dying at " + step + "\\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    clone, run, replace = loop_images.clone, loop_images.run, pathlib.Path.replace
    synced = loopback.write_synced

    def clone_then(source, target):
        if step == "workdir":
            die()
        how = clone(source, target)
        if step in ("clone", "partial"):
            die()
        return how

    def run_then(argv):
        out = run(argv)
        if step == "loop" and argv[0] == "losetup":
            die()
        return out

    def synced_then(path, text):
        synced(path, text)
        if step == "metadata":
            die()

    def replace_then(self, target):
        result = replace(self, target)
        if step == "image" and str(target).endswith(".img"):
            die()
        return result

    # snapshot clones in loopback; materialize clones and mounts in loop_images.
    loopback.clone, loopback.write_synced = clone_then, synced_then
    loop_images.clone, loop_images.run = clone_then, run_then
    pathlib.Path.replace = replace_then
    if operation == "materialize":
        with provider.materialize(snapshot_id):
            if step == "mount":
                die()
    else:
        note = json.loads(sys.argv[6])
        provider.snapshot(disk, Annotations.from_tags(note))
    """
)

MATERIALIZE_STEPS = ["workdir", "clone", "loop", "mount"]
SNAPSHOT_STEPS = ["partial", "metadata", "image"]


def annotations(disk: Disk) -> Annotations:
    return annotator(disk)("crash", "unknown", datetime.now(UTC))


def killed_at(pool: Path, disk: Disk, operation: str, step: str, snapshot_id: str = "") -> None:
    disk_json = json.dumps({"cid": disk.cid, "mount": str(disk.mount), "hint": disk.hint})
    tags = json.dumps(annotations(disk).to_tags())
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(pool), disk_json, operation, step, snapshot_id, tags],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert f"dying at {step}" in proc.stdout


@pytest.fixture
def snapshot_id(pool: Path, disk: Disk) -> str:
    (disk.mount / "data").write_text("before")
    syncfs(disk.mount)
    provider = LoopbackProvider(pool, disk.cid)
    provider.prepare(disk)
    return provider.snapshot(disk, annotations(disk)).id


@pytest.mark.parametrize("step", MATERIALIZE_STEPS)
def test_a_killed_materialize_is_released_by_the_next_one(
    pool: Path, disk: Disk, snapshot_id: str, step: str
) -> None:
    killed_at(pool, disk, "materialize", step, snapshot_id)
    provider = LoopbackProvider(pool, disk.cid)
    left = provider.leftovers()
    assert left, f"killed at {step}, nothing is listed as left behind: {temporary_resources(pool)}"
    kinds = {x.kind for x in left}
    assert {"loop": {"loop device"}, "mount": {"mount", "loop device"}}.get(step, set()) <= kinds
    assert temporary_resources(pool) != []
    with provider.materialize(snapshot_id) as mounted:
        assert (mounted / "data").read_text() == "before"
        assert provider.leftovers() == []  # only the running one's own, which is in use
    assert temporary_resources(pool) == []


@pytest.mark.parametrize("step", SNAPSHOT_STEPS)
def test_a_killed_snapshot_is_released_by_the_next_one(
    pool: Path, disk: Disk, snapshot_id: str, step: str
) -> None:
    killed_at(pool, disk, "snapshot", step)
    provider = LoopbackProvider(pool, disk.cid)
    assert {x.kind for x in provider.leftovers()} == {"temporary image"}
    # A snapshot that did not finish is not in the catalog, before or after.
    assert [s.id for s in provider.list()] == [snapshot_id]
    provider.prepare(disk)  # what every snapshot (and each set member) runs first
    provider.snapshot(disk, annotations(disk))
    assert temporary_resources(pool) == []
    assert len(provider.list()) == 2


def test_a_running_materialize_is_never_anothers_leftover(
    pool: Path, disk: Disk, snapshot_id: str
) -> None:
    provider = LoopbackProvider(pool, disk.cid)
    other_disk = LoopbackProvider(pool, "disk-of-another-instance")
    killed_at(pool, disk, "materialize", "mount", snapshot_id)
    # Another instance sharing the pool leaves this disk's clone alone (its mount lives in
    # this instance's namespace); its own provider releases it.
    assert other_disk.leftovers() == []
    with provider.materialize(snapshot_id):
        assert provider.leftovers() == []
        assert other_disk.leftovers() == []
    assert temporary_resources(pool) == []


# python -m disk_snapshots, on a VM whose root is argv[1].
CLI = (
    "import sys; from pathlib import Path; from disk_snapshots import cli; "
    "from disk_snapshots.snapshot.snapshotter import Paths; "
    "sys.exit(cli.main(sys.argv[2:], Paths(root=Path(sys.argv[1]))))"
)


def run_cli(paths: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, str(paths.root), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_bin_snapshots_cleanup_lists_then_releases_with_yes(
    pool: Path, disk: Disk, vm: tuple[Paths, dict[str, Any]], snapshot_id: str
) -> None:
    paths, _ = vm
    killed_at(pool, disk, "materialize", "mount", snapshot_id)
    killed_at(pool, disk, "snapshot", "partial")
    before = temporary_resources(pool)
    dry = run_cli(paths, "snapshots", "cleanup")
    assert dry.returncode == 0, dry.stderr
    assert "left behind: mount" in dry.stdout and "left behind: loop device" in dry.stdout
    assert "run again with --yes" in dry.stdout
    assert temporary_resources(pool) == before  # a dry run changes nothing
    done = run_cli(paths, "snapshots", "cleanup", "--yes")
    assert done.returncode == 0, done.stderr
    assert "released 4 of 4" in done.stdout, done.stdout
    assert temporary_resources(pool) == []
    again = run_cli(paths, "snapshots", "cleanup")
    assert again.stdout.strip() == "nothing left behind"


def test_the_daemon_releases_leftovers_at_start(
    pool: Path, disk: Disk, vm: tuple[Paths, dict[str, Any]], snapshot_id: str
) -> None:
    paths, doc = vm
    doc["properties"]["schedules"] = []
    (paths.config).write_text(json.dumps(doc))
    killed_at(pool, disk, "materialize", "loop", snapshot_id)
    assert temporary_resources(pool) != []
    daemon = subprocess.Popen(
        [sys.executable, "-c", CLI, str(paths.root), "daemon", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log = ""
        assert daemon.stdout is not None
        for line in daemon.stdout:  # ends when the daemon exits, at the latest
            log += line
            if "snapshotter daemon for" in line:
                break
        assert "left behind by a killed operation" in log, log
        assert temporary_resources(pool) == []
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        if daemon.stdout is not None:
            daemon.stdout.close()
    assert (pool / "snapshots").is_dir()
