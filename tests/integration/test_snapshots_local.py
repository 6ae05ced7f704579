"""Snapshots in the local deployment (issues 4 and 5): schedules prune to keep_last, every
deploy, stop and delete (of a stopped deployment too) leaves a snapshot per instance with
the right trigger and role, and the catalog outlives the deployment."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from lbtest import REPO
from lbtest import LocalBosh
from lbtest import needs_root

from localbosh.state import Layout

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

MANIFEST = REPO / "manifests" / "local" / "redis-ha.yml"
GROUPS = ("redis-leader", "redis-data")


def schedule_ops(path: Path, schedules: list[dict[str, Any]]) -> Path:
    path.write_text(
        yaml.safe_dump(
            [
                {
                    "type": "replace",
                    "path": (
                        f"/instance_groups/name={group}/jobs/name=snapshotter/properties/schedules?"
                    ),
                    "value": schedules,
                }
                for group in GROUPS
            ]
        )
    )
    return path


def catalog(lb: LocalBosh) -> list[dict[str, str]]:
    out = lb.run(
        "-d",
        "redis",
        "ssh",
        "redis-leader/0",
        "-c",
        "/var/vcap/jobs/snapshotter/bin/snapshots list --json 2>/dev/null",
    ).stdout
    return [s["annotations"] for s in json.loads(out)]


def per_instance(snapshots: list[dict[str, str]], trigger: str) -> Counter[str]:
    return Counter(
        f"{a['instance_group']}/{a['index']}" for a in snapshots if a["trigger"] == trigger
    )


def test_schedules_and_lifecycle_snapshots(localbosh: LocalBosh, tmp_path: Path) -> None:
    fast = schedule_ops(
        tmp_path / "fast.yml",
        [{"name": "fast", "cron": "* * * * * */3", "jitter": 0, "retention": {"keep_last": 2}}],
    )
    localbosh.run("-d", "redis", "deploy", str(MANIFEST), "-o", str(fast))
    deadline = time.monotonic() + 90
    while True:
        runs = per_instance(catalog(localbosh), "schedule:fast")
        if len(runs) == 3 and min(runs.values()) >= 2:
            break
        assert time.monotonic() < deadline, f"schedule did not run on every instance: {runs}"
        time.sleep(2)
    time.sleep(7)  # a few more runs, each followed by retention

    # Redeploy without the schedule: a changed property, so drain snapshots every instance.
    none = schedule_ops(tmp_path / "none.yml", [])
    localbosh.run("-d", "redis", "deploy", str(MANIFEST), "-o", str(none))
    snapshots = catalog(localbosh)
    assert per_instance(snapshots, "schedule:fast") == Counter(
        {"redis-leader/0": 2, "redis-data/0": 2, "redis-data/1": 2}
    ), "retention keeps exactly keep_last scheduled snapshots per instance"
    pre_deploy = [a for a in snapshots if a["trigger"] == "pre-deploy"]
    assert sorted(
        (a["instance_group"], a["index"], a["role"], a["consistency"]) for a in pre_deploy
    ) == [
        ("redis-data", "0", "follower", "app"),
        ("redis-data", "1", "follower", "app"),
        ("redis-leader", "0", "leader", "app"),
    ]

    localbosh.run("-d", "redis", "stop")
    localbosh.run("-d", "redis", "start")
    assert per_instance(catalog(localbosh), "pre-stop") == Counter(
        {"redis-leader/0": 1, "redis-data/0": 1, "redis-data/1": 1}
    )

    # Deleting a soft-stopped deployment: the Director still drains every instance
    # (stopper.rb), Redis is stopped, and the default drain.on_failure is fail. Nothing
    # to flush: each drain takes a clean snapshot and the delete goes through.
    localbosh.run("-d", "redis", "stop")
    localbosh.run("-d", "redis", "delete-deployment")
    # The catalog outlives the deployment: it is the provider's own metadata in the pool.
    remaining = read_pool(Layout(localbosh.home))
    pre_delete = [a for a in remaining if a["trigger"] == "pre-delete"]
    assert sorted(
        (a["instance_group"], a["index"], a["role"], a["consistency"]) for a in pre_delete
    ) == [
        ("redis-data", "0", "follower", "clean"),
        ("redis-data", "1", "follower", "clean"),
        ("redis-leader", "0", "leader", "clean"),
    ]
    assert {a["trigger"] for a in remaining} >= {
        "pre-deploy",
        "pre-stop",
        "pre-delete",
        "schedule:fast",
    }


def read_pool(layout: Layout) -> list[dict[str, str]]:
    """The loopback catalog, read from the pool after every instance is gone."""
    image = layout.pool_image
    if not image.exists():  # the state dir's own filesystem can reflink: the pool is a dir
        return _tags(layout.pool / "snapshots")
    with tempfile.TemporaryDirectory(prefix="pool-") as mnt:
        subprocess.run(["mount", "-o", "loop,ro", str(image), mnt], check=True)
        try:
            return _tags(Path(mnt, "snapshots"))
        finally:
            subprocess.run(["umount", mnt], check=True)


def _tags(directory: Path) -> list[dict[str, str]]:
    return [
        {k.removeprefix("disk-snapshots:"): v for k, v in json.loads(p.read_text())["tags"].items()}
        for p in directory.glob("snap-*.json")
    ]
