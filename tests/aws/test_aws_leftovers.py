"""aws-ebs: a materialize killed at each step that holds a volume leaves nothing for long.

A child process materializes a snapshot against moto's EC2 and SIGKILLs itself right
after the step under test: the volume created, attached, mounted (the device seam is
the fake one: no kernel holds the mount, but its mountpoint directory is ours). The
next materialize, and cleanup_leftovers (what the daemon's start and ``bin/snapshots
cleanup --yes`` call), must leave no temporary volume and no mountpoint behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.providers.ebs_volumes import TEMPORARY_TAG
from support.aws import World
from support.aws import sample_annotations

TESTS = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from disk_snapshots.providers.aws_ebs import AwsEbsProvider
    from support.aws import FakeDevices, settings

    endpoint, instance_id, work_dir, snapshot_id, step = sys.argv[1:6]

    def die(**_):
        print("dying at " + step, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    provider = AwsEbsProvider(
        settings(endpoint, instance_id=instance_id),
        devices=FakeDevices(),
        work_dir=Path(work_dir),
        poll_interval=0.0,
    )
    if step != "mount":
        provider.client().meta.events.register("after-call.ec2." + step, die)
    with provider.materialize(snapshot_id):
        die()
    """
)


def temporary(ec2: Any) -> list[str]:
    found = ec2.describe_volumes(Filters=[{"Name": f"tag:{TEMPORARY_TAG}", "Values": ["true"]}])
    return [v["VolumeId"] for v in found["Volumes"]]


def killed_at(endpoint: str, world: World, work_dir: Path, snapshot_id: str, step: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            endpoint,
            world.instance_id,
            str(work_dir),
            snapshot_id,
            step,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONPATH": f"{TESTS}:{os.environ.get('PYTHONPATH', '')}"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert f"dying at {step}" in proc.stdout


@pytest.mark.parametrize("step", ["CreateVolume", "AttachVolume", "mount"])
@pytest.mark.parametrize("rerun", ["materialize", "cleanup"])
def test_a_killed_materialize_leaves_no_volume_once_the_next_run_is_done(
    provider: AwsEbsProvider,
    world: World,
    ec2: Any,
    endpoint: str,
    tmp_path: Path,
    step: str,
    rerun: str,
) -> None:
    work_dir = tmp_path / "materialize"
    snapshot_id = provider.snapshot(world.disk, sample_annotations(disk_cid=world.volume_id)).id
    killed_at(endpoint, world, work_dir, snapshot_id, step)
    left = temporary(ec2)
    assert len(left) == 1, left
    assert [x.id for x in provider.leftovers()] == left
    if rerun == "materialize":
        with provider.materialize(snapshot_id):
            assert left[0] not in temporary(ec2)
    else:
        assert [x.id for x in provider.cleanup_leftovers()] == left
    assert temporary(ec2) == []
    assert not work_dir.exists() or list(work_dir.iterdir()) == []
