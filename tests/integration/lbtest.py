"""Helpers for tests that bring up local deployments (as root).

Every test gets its own state dir, and its teardown deletes whatever deployment
is left and then asserts that nothing of it remains on the machine: no loop
device, no mount and no process that still sees the test's state dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from localbosh.state import Layout

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, loop devices)")


@dataclass
class LocalBosh:
    home: Path

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "localbosh", *args],
            env={**os.environ, "LOCALBOSH_HOME": str(self.home)},
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"localbosh {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "localbosh", *args],
            env={**os.environ, "LOCALBOSH_HOME": str(self.home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def state(self, deployment: str) -> dict[str, Any]:
        data = json.loads((Layout(self.home).deployment(deployment) / "state.json").read_text())
        assert isinstance(data, dict)
        return data


def variable(lb: LocalBosh, deployment: str, name: str) -> str:
    """A generated variable of the deployment, from its vars store."""
    store = yaml.safe_load((Layout(lb.home).deployment(deployment) / "vars-store.yml").read_text())
    return str(store[name])


def redis(lb: LocalBosh, host: str, *cmd: str, deployment: str = "redis") -> str:
    """redis-cli against one instance of a redis-ha deployment, with its password."""
    secret = variable(lb, deployment, "redis_password")
    proc = subprocess.run(
        ["redis-cli", "-h", host, "-a", secret, "--no-auth-warning", *cmd],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return proc.stdout.strip()


def unscheduled(path: Path, groups: tuple[str, ...] = ("redis-leader", "redis-data")) -> Path:
    """An ops file giving the groups' snapshotter no schedules: the default hourly one
    fires whenever a test crosses the hour, and a test that counts snapshots, or restores
    the newest after a loss, must see only those it took."""
    ops = [
        {
            "type": "replace",
            "path": f"/instance_groups/name={group}/jobs/name=snapshotter/properties?/schedules",
            "value": [],
        }
        for group in groups
    ]
    path.write_text(yaml.safe_dump(ops))
    return path


def deploy_unscheduled(
    lb: LocalBosh, manifest: Path, tmp_path: Path, *args: str, timeout: float = 600
) -> None:
    """``bosh -d redis deploy manifest`` with ``args`` (ops files, variables), the
    snapshotters given no schedules (``unscheduled``)."""
    no_schedules = unscheduled(tmp_path / "unscheduled.yml")
    lb.run("-d", "redis", "deploy", str(manifest), "-o", str(no_schedules), *args, timeout=timeout)


def wait_in_sync(lb: LocalBosh, deployment: str = "redis", timeout: float = 120) -> None:
    """Until every Redis follower of the deployment has its link to the leader up and no
    sync running: with replica-serve-stale-data no, a follower still loading refuses the
    flush a snapshot starts with (MASTERDOWN), as it should."""
    deadline = time.monotonic() + timeout
    pending: list[str] = []
    while time.monotonic() < deadline:
        pending = []
        for inst in lb.state(deployment)["instances"]:
            info = redis(lb, inst["address"], "INFO", "replication", deployment=deployment)
            if "role:slave" in info and not (
                "master_link_status:up" in info and "master_sync_in_progress:0" in info
            ):
                pending.append(f"{inst['group']}/{inst['index']}")
        if not pending:
            return
        time.sleep(0.5)
    raise AssertionError(f"followers not in sync after {timeout:.0f}s: {', '.join(pending)}")


def leftovers(home: Path) -> list[str]:
    """Everything on this machine that still belongs to the state dir `home`."""
    found = []
    marker = str(home)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    found += [f"loop: {line}" for line in loops.splitlines() if marker in line]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount: {line}" for line in mounts if marker in line]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            info = (proc / "mountinfo").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # A process inside one of the test's namespaces sees the /var/vcap bind mount,
        # whose source is under `home`.
        if marker in info:
            found.append(f"process {proc.name}: {cmdline}")
    return found


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def recorder_manifest(
    path: Path,
    log: Path,
    instances: int = 2,
    disk: int = 64,
    name: str = "rec",
    errand_sleep: float = 0,
    errand_exit: int = 0,
    peer: bool = False,
    watch: str = "1000-15000",
    **recorder: Any,
) -> Path:
    manifest = {
        "name": name,
        "releases": [
            {
                "name": "recorder",
                "version": "create",
                "url": f"file://{FIXTURES / 'recorder-release'}",
            }
        ],
        "update": {
            "canaries": 1,
            "max_in_flight": 1,
            "canary_watch_time": watch,
            "update_watch_time": watch,
        },
        "instance_groups": [
            {
                "name": "node",
                "instances": instances,
                "azs": ["z1"],
                "persistent_disk": disk,
                "jobs": [
                    {
                        "name": "recorder",
                        "release": "recorder",
                        "properties": {"recorder": {"log": str(log), **recorder}},
                    },
                    {
                        "name": "recorder-errand",
                        "release": "recorder",
                        "properties": {"errand": {"sleep": errand_sleep, "exit_code": errand_exit}},
                    },
                ],
            }
        ],
    }
    if peer:
        jobs = manifest["instance_groups"][0]["jobs"]  # type: ignore[index]
        jobs.append(
            {
                "name": "recorder-peer",
                "release": "recorder",
                "properties": {
                    "recorder": {"log": str(log), "hook_sleep": recorder.get("hook_sleep", 0)}
                },
            }
        )
    path.write_text(yaml.safe_dump(manifest))
    return path
