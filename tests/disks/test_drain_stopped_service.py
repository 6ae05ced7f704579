"""Drain against a service that is not running (a soft-stopped instance being deleted, or a
restore that left Redis stopped): no flush is possible or needed, so the snapshot is taken
frozen and recorded clean, and the delete goes on even with `drain.on_failure: fail`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.commands.hooks import drain
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.monit import monit_pidfiles
from disk_snapshots.vm.monit import service_stopped
from support.disks import write_config

DELETE = {
    "BOSH_JOB_STATE": '{"persistent_disk":512}',
    "BOSH_JOB_NEXT_STATE": '{"persistent_disk":0}',
}
REDIS_MONIT = """check process redis
  with pidfile /var/vcap/sys/run/redis/redis.pid
  start program "/var/vcap/jobs/redis/bin/ctl start"
  stop program "/var/vcap/jobs/redis/bin/ctl stop"
  group vcap
"""


def closed_port() -> int:
    """A port nothing listens on: the stopped Redis."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_job(root: Path, pid: int | None) -> None:
    """The colocated Redis job's monit file, and its pidfile (None: removed on stop)."""
    job = root / "var/vcap/jobs/redis"
    job.mkdir(parents=True, exist_ok=True)
    (job / "monit").write_text(REDIS_MONIT)
    pidfile = root / "var/vcap/sys/run/redis/redis.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    if pid is None:
        pidfile.unlink(missing_ok=True)
    else:
        pidfile.write_text(f"{pid}\n")


def redis_profile(vm: tuple[Paths, dict[str, Any]]) -> Paths:
    """The snapshotter colocated with a Redis nobody answers for, drain.on_failure fail."""
    paths, doc = vm
    doc["properties"]["service"]["profile"] = "redis"
    doc["properties"]["service"]["jobs"] = ["redis"]
    doc["properties"]["service"]["redis"] = {"port": closed_port(), "password": ""}
    doc["properties"]["drain"]["on_failure"] = "fail"
    doc["spec"]["address"] = "127.0.0.1"
    write_config(paths, doc)
    return paths


def test_pidfiles_come_from_the_jobs_monit_files() -> None:
    found = monit_pidfiles(
        [
            REDIS_MONIT,
            'check process "sidecar" pidfile "/var/vcap/sys/run/s/s.pid"\n',
            'check process matcher matching "foo"\n',  # no pidfile: cannot be told
        ]
    )
    assert found == {
        "redis": "/var/vcap/sys/run/redis/redis.pid",
        "sidecar": "/var/vcap/sys/run/s/s.pid",
    }


def test_a_service_is_stopped_only_when_no_process_of_it_lives(tmp_path: Path) -> None:
    redis_job(tmp_path, None)
    assert "redis not running" in service_stopped(["redis"], tmp_path)
    redis_job(tmp_path, 2**22 + 1)  # beyond pid_max: a stale pidfile
    assert service_stopped(["redis"], tmp_path)
    redis_job(tmp_path, os.getpid())
    assert service_stopped(["redis"], tmp_path) == ""  # a live process: not stopped
    assert service_stopped(["redis", "unknown-to-monit"], tmp_path) == ""
    assert service_stopped([], tmp_path) == ""  # profile none: nothing to tell


@pytest.mark.root
def test_delete_of_a_stopped_redis_takes_a_clean_snapshot_and_proceeds(
    vm: tuple[Paths, dict[str, Any]], disk: Disk
) -> None:
    paths = redis_profile(vm)
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.role_file.write_text(json.dumps({"role": "leader", "at": "2026-01-01T00:00:00+00:00"}))
    redis_job(paths.root, None)
    assert drain(["job_shutdown", "hash_unchanged"], DELETE, paths) == (0, "0")
    [snapshot] = LoopbackProvider.for_disk("", disk).list()
    a = snapshot.annotations
    # Clean: the service was stopped; its role is the last one it answered with.
    assert (a.trigger, a.consistency, a.role) == ("pre-delete", "clean", "leader")


@pytest.mark.root
def test_a_running_redis_that_cannot_flush_still_fails_the_drain(
    vm: tuple[Paths, dict[str, Any]], disk: Disk
) -> None:
    paths = redis_profile(vm)
    # monit's pidfile names a live process, so the service is up but does not answer.
    redis_job(paths.root, os.getpid())
    assert drain(["job_shutdown", "hash_unchanged"], DELETE, paths) == (1, "")
    assert LoopbackProvider.for_disk("", disk).list() == []
