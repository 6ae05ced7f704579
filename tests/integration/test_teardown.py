"""delete-deployment leaves the machine as it found it, also after a failure midway."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from lbtest import REPO
from lbtest import LocalBosh
from lbtest import leftovers
from lbtest import needs_root
from lbtest import recorder_manifest

from localbosh.namespace import pids_in_namespace
from localbosh.state import Layout

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]


def namespace_inodes(lb: LocalBosh) -> set[int]:
    ns_dir = Layout(lb.home).ns_dir
    return {p.stat().st_ino for p in ns_dir.iterdir()} if ns_dir.is_dir() else set()


def snapshot(home: Path) -> dict[str, set[str]]:
    """What a deployment could leave behind, limited to what can be ours: other
    work on this machine may create and remove its own loops and mounts meanwhile."""
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    return {
        "loops": {line for line in loops.splitlines() if str(home) in line},
        "mounts": {
            " ".join(line.split()[3:5])
            for line in mounts.splitlines()
            if str(home) in line or "/var/vcap" in line.split()[4]
        },
    }


def test_delete_deployment_leaves_no_loop_mount_process_or_namespace(
    localbosh: LocalBosh,
) -> None:
    before = snapshot(localbosh.home)
    localbosh.run(
        "-d",
        "redis",
        "deploy",
        str(REPO / "manifests/local/redis-ha.yml"),
        "-o",
        str(REPO / "manifests/local/operations/without-snapshotter.yml"),
    )
    assert len(namespace_inodes(localbosh)) >= 3  # one per instance (+ the pool's, if any)
    assert leftovers(localbosh.home)  # the check below can see a live deployment
    localbosh.run("-d", "redis", "delete-deployment")
    assert snapshot(localbosh.home) == before
    # (Namespace inode numbers are reused once freed, so processes are matched by
    # what they see, the test's state dir, in leftovers().)
    assert leftovers(localbosh.home) == []
    assert not any(Layout(localbosh.home).ns_dir.iterdir())


def test_teardown_after_the_cli_is_killed_in_the_middle_of_a_deploy(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, hook_sleep=8)
    deploy = localbosh.popen("-d", "rec", "deploy", str(m))
    ns_dir = Layout(localbosh.home).ns_dir
    deadline = time.monotonic() + 60
    while not any(p.name.startswith("rec.") for p in ns_dir.glob("rec.*")):
        assert time.monotonic() < deadline, "the first instance never got a namespace"
        time.sleep(0.2)
    time.sleep(3)  # inside pre-start now, which sleeps 8 s
    inodes = namespace_inodes(localbosh)
    os.kill(deploy.pid, signal.SIGKILL)
    deploy.communicate()
    assert any(pids_in_namespace(ino) for ino in inodes)  # the hook still runs in there
    localbosh.run("-d", "rec", "delete-deployment", "--force", timeout=120)
    assert leftovers(localbosh.home) == []
    assert not any(Layout(localbosh.home).ns_dir.iterdir())
