"""A bad property fails the deploy while templates render, before any instance is stopped.

The local deployment is brought up; then each kind of bad property in
tests/support/bad_properties.py that the templates can judge is deployed in turn. Every
deploy must fail with the Director's render error naming the property, and leave the
deployment as it was: the same Redis processes still serving, no drain run, no snapshot
taken.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lbtest import REPO
from lbtest import LocalBosh
from lbtest import needs_root

from support.bad_properties import CASES
from support.bad_properties import BadProperty

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

MANIFEST = REPO / "manifests" / "local" / "redis-ha.yml"
INSTANCES = ("redis-leader/0", "redis-data/0", "redis-data/1")
# One case of each kind the templates judge, over every job: types, enums, ranges,
# patterns, lists, unknown keys, required keys, rules across keys, cron fields.
# Named by how their problem line starts (tests/support/bad_properties.py).
KINDS = [
    'snapshotter.provider.type: "gce"',  # enum
    'snapshotter.service.redis.port: expected an integer, got a string "6379"',  # type
    'snapshotter.service.jobs[0]: "redis; rm -rf /"',  # pattern, in a list
    "snapshotter.quiesce.freeze_timeout: -1 is too small",  # range
    'snapshotter.drain.snapshot_on[1]: "reboot"',  # enum, in a list
    "snapshotter.retention.pre-deploy.keep_forever: unknown key",  # unknown key
    'snapshotter.retention.pre-deploy.max_age: "forever"',  # a duration
    'snapshotter.api.tls.ca: "not a pem"',  # a PEM certificate
    "snapshotter.provider.aws: set both access_key_id",  # a rule across keys
    "snapshotter.service.command.role: required",  # a rule: required when
    'snapshotter.schedules[1].cron: "61 * * * *": minute 61',  # cron fields
    'snapshotter.schedules[1].name: "hourly" is already used',  # unique names
    "snapshotter.schedules[1].cron: is missing",  # a required key
    'restore.restore.target: "yesterday"',  # an errand's pattern
    "take-snapshot.take_snapshot.note: is 300 characters long",  # a length
    'list-snapshots.list.format: "xml"',  # an errand's enum
]


def chosen() -> list[BadProperty]:
    cases = [next(c for c in CASES if c.message.startswith(kind)) for kind in KINDS]
    assert all(c.at_render for c in cases)
    return cases


def ops_for(case: BadProperty, path: Path) -> Path:
    keys, value = case.manifest_value()
    # The data group is updated after the leader: its error must stop the leader too.
    where = "/instance_groups/name=redis-data/jobs/name=" + case.job + "/properties?"
    if case.job in ("restore", "take-snapshot", "list-snapshots"):
        where = "/instance_groups/name=redis-leader/jobs/name=" + case.job + "/properties?"
    op = {"type": "replace", "path": where + "".join(f"/{k}?" for k in keys), "value": value}
    path.write_text(yaml.safe_dump([op]))
    return path


def ssh(lb: LocalBosh, instance: str, command: str) -> str:
    return lb.run("-d", "redis", "ssh", instance, "-c", command).stdout.strip()


def observe(lb: LocalBosh) -> dict[str, object]:
    """What a deploy that stopped anything would change: Redis's pid, monit's view, the
    drain log, the snapshots."""
    seen: dict[str, object] = {}
    for instance in INSTANCES:
        seen[instance] = ssh(
            lb,
            instance,
            "cat /var/vcap/sys/run/redis/redis.pid; "
            "wc -l < /var/vcap/sys/log/snapshotter/drain.log 2>/dev/null || echo 0",
        )
    seen["snapshots"] = sorted(
        s["id"]
        for s in json.loads(
            ssh(lb, "redis-leader/0", "/var/vcap/jobs/snapshotter/bin/snapshots list --json")
        )
    )
    seen["ps"] = lb.run("-d", "redis", "instances", "--ps").stdout
    return seen


def test_every_kind_of_bad_property_fails_before_anything_is_stopped(
    localbosh: LocalBosh, tmp_path: Path
) -> None:
    localbosh.run("-d", "redis", "deploy", str(MANIFEST))
    before = observe(localbosh)
    assert str(before["ps"]).count("running") == 3 + 3 * 2  # instances, redis, snapshotter
    failures = []
    for n, case in enumerate(chosen()):
        ops = ops_for(case, tmp_path / f"bad-{n}.yml")
        proc = localbosh.run("-d", "redis", "deploy", str(MANIFEST), "-o", str(ops), check=False)
        out = proc.stdout + proc.stderr
        said = (
            proc.returncode != 0
            and "Error filling in template 'config.json.erb'" in out
            and case.message in out
            and "Updating instance" not in out
        )
        if not said:
            failures.append(f"{case.id}: exit {proc.returncode}\n{out[-1500:]}")
    assert failures == [], "\n\n".join(failures)
    assert observe(localbosh) == before
