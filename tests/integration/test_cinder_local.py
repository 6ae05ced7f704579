"""The local deployment on the openstack-cinder provider, against a real Cinder and Keystone
(scripts/cinder-local; issue 13).

manifests/local/operations/openstack-cinder.yml switches both groups' snapshotters to
openstack-cinder with Keystone credentials (bosh-deployment's openstack/cpi.yml variable
names), and makes localbosh give every persistent disk a Cinder volume (localbosh.cinder)
in the project those credentials are scoped to. Manual (take-snapshot errand), pre-deploy
(drain) and set snapshots must land in Cinder as snapshots of those volumes, with every
annotation as `disk-snapshots:*` metadata; the set as one group snapshot.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from lbtest import REPO
from lbtest import LocalBosh
from lbtest import needs_root
from lbtest import unscheduled
from lbtest import wait_in_sync

from disk_snapshots.annotations import SCHEMA
from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations
from localbosh.cinder import Volumes
from localbosh.state import Layout
from support.cinder import Admin
from support.cinder import CinderLocal
from support.cinder import for_this_session

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.cinder, needs_root]

MANIFEST = REPO / "manifests" / "local" / "redis-ha.yml"
CINDER_OPS = REPO / "manifests" / "local" / "operations" / "openstack-cinder.yml"
ROLES = {"redis-leader": "leader", "redis-data": "follower"}


@pytest.fixture(scope="module")
def cinder_local() -> Iterator[CinderLocal]:
    """Requested before `localbosh`, so it outlives the deployment's teardown."""
    with for_this_session() as cinder:
        yield cinder


@pytest.fixture
def project(cinder_local: CinderLocal) -> Iterator[Admin]:
    """Cinder as the Keystone project `redis` sees it: where localbosh makes the volumes."""
    admin = Admin(cinder_local, cinder_local.keystone.project_id)
    yield admin
    admin.close()


def release(lb: LocalBosh, project: Admin) -> None:
    """Delete the deployment, every snapshot of its volumes, then the orphaned disks and
    their volumes (clean-up), so that nothing of the test stays in Cinder or on the host."""
    for name in Layout(lb.home).deployment_names():
        lb.run("-d", name, "delete-deployment", "--force", check=False)
    registry = Volumes(Layout(lb.home).root).registry.path
    records = json.loads(registry.read_text()) if registry.exists() else {}
    snapshots = [
        snapshot
        for record in records.values()
        for snapshot in project.call(
            "GET", "/snapshots/detail", params={"volume_id": record["volume_id"]}
        )["snapshots"]
    ]
    for snapshot in snapshots:
        # A group snapshot's members go with it (a second DELETE of it finds it deleting).
        group_snapshot = snapshot["group_snapshot_id"]
        path = f"/group_snapshots/{group_snapshot}" if group_snapshot else ""
        path = path or f"/snapshots/{snapshot['id']}"
        project.session.delete(project.endpoint + path, timeout=60)
    for snapshot in snapshots:
        assert project.gone("snapshot", snapshot["id"], timeout=120)
    lb.run("clean-up", "--all")


@pytest.fixture
def released(localbosh: LocalBosh, project: Admin) -> Iterator[LocalBosh]:
    """`localbosh`, released as `release` does also when the test fails half-way (before
    localbosh's own teardown looks for leftovers)."""
    yield localbosh
    release(localbosh, project)


@pytest.fixture
def group_type(project: Admin) -> str:
    return project.create_group_type("local")


def deploy(lb: LocalBosh, cinder: CinderLocal, group_type: str, *ops: Path) -> None:
    keystone = cinder.keystone
    variables = {
        "auth_url": keystone.url,
        "region": keystone.region,
        "openstack_domain": "Default",
        "openstack_project": "redis",
        "openstack_username": "bosh",
        "openstack_password": keystone.user_password,
        "az": "nova",
        "cinder_group_type": group_type,
    }
    lb.run(
        "-d",
        "redis",
        "deploy",
        str(MANIFEST),
        "-o",
        str(CINDER_OPS),
        *[arg for path in ops for arg in ("-o", str(path))],
        *[arg for k, v in variables.items() for arg in ("-v", f"{k}={v}")],
        timeout=3600,  # compiles the packages on a cold cache
    )


def ops_file(path: Path, changes: dict[str, Any]) -> Path:
    """One replace per group and dotted property path under each group's job."""
    path.write_text(
        yaml.safe_dump(
            [
                {
                    "type": "replace",
                    "path": f"/instance_groups/name={group}/jobs/name={job}/properties?/{where}",
                    "value": value,
                }
                for group in ROLES
                for (job, where), value in changes.items()
            ]
        )
    )
    return path


def our_snapshots(project: Admin, volumes: set[str]) -> list[dict[str, Any]]:
    marker = json.dumps({f"{TAG_PREFIX}provider": "openstack-cinder"})
    found = project.call("GET", "/snapshots/detail", params={"metadata": marker})["snapshots"]
    return [s for s in found if s["status"] == "available" and s["volume_id"] in volumes]


def check_annotations(
    snapshot: dict[str, Any], inst: dict[str, Any], trigger: str, started: datetime
) -> Annotations:
    meta = snapshot["metadata"]
    missing = {TAG_PREFIX + f.name for f in dataclasses.fields(Annotations)} - set(meta)
    assert not missing, f"{trigger} snapshot {snapshot['id']} lacks {sorted(missing)}"
    expected = {
        "deployment": "redis",
        "instance_group": inst["group"],
        "instance_id": inst["id"],
        "index": str(inst["index"]),
        "az": "z1",
        "disk_cid": inst["disk_cid"],
        "job": "redis",
        "trigger": trigger,
        "consistency": "app",
        "role": ROLES[inst["group"]],
        "schema": str(SCHEMA),
    }
    assert {k: meta[TAG_PREFIX + k] for k in expected} == expected, (trigger, inst["group"])
    assert meta[f"{TAG_PREFIX}release_version"]
    # The metadata alone rebuilds the annotations (the catalog is the provider's metadata).
    annotations = Annotations.from_tags(meta)
    assert started <= annotations.created_at <= datetime.now(UTC)
    return annotations


def test_manual_pre_deploy_and_set_snapshots_are_cinder_snapshots_with_every_annotation(
    cinder_local: CinderLocal,
    project: Admin,
    group_type: str,
    released: LocalBosh,
    tmp_path: Path,
) -> None:
    localbosh = released
    started = datetime.now(UTC).replace(microsecond=0)
    no_schedules = unscheduled(tmp_path / "unscheduled.yml")
    deploy(localbosh, cinder_local, group_type, no_schedules)
    wait_in_sync(localbosh)
    insts = {f"{i['group']}/{i['index']}": i for i in localbosh.state("redis")["instances"]}
    assert sorted(insts) == ["redis-data/0", "redis-data/1", "redis-leader/0"]
    # Every persistent disk has its own Cinder volume, sized like the disk, in z1's zone,
    # with the Director's disk metadata.
    volumes = Volumes(Layout(localbosh.home).root)
    volume_of = {name: volumes.volume_id(i["disk_cid"]) for name, i in insts.items()}
    assert all(volume_of.values()) and len(set(volume_of.values())) == 3, volume_of
    for name, volume_id in volume_of.items():
        volume = project.volume(str(volume_id))
        assert (volume["size"], volume["availability_zone"]) == (1, "nova")
        assert volume["metadata"]["deployment"] == "redis"
        assert volume["metadata"]["instance_group"] == insts[name]["group"]
    hint = localbosh.run(
        "-d", "redis", "ssh", "redis-data/1", "-c", "cat /var/vcap/bosh/settings.json"
    ).stdout
    disk = insts["redis-data/1"]["disk_cid"]
    assert json.loads(hint)["disks"]["persistent"][disk]["volume_id"] == volume_of["redis-data/1"]

    errand = localbosh.run("-d", "redis", "run-errand", "take-snapshot", check=False)
    assert errand.returncode == 0, errand.stdout + errand.stderr

    # Changed snapshotter and take-snapshot properties: every instance is updated, so
    # drain snapshots it (pre-deploy); afterwards take-snapshot takes one set.
    changes = {
        ("snapshotter", "quiesce?/freeze_timeout"): 30,
        ("take-snapshot", "take_snapshot?/scope"): "set",
    }
    changed = ops_file(tmp_path / "changed.yml", changes)
    deploy(localbosh, cinder_local, group_type, no_schedules, changed)
    errand = localbosh.run("-d", "redis", "run-errand", "take-snapshot", check=False)
    assert errand.returncode == 0, errand.stdout + errand.stderr
    assert "(group snapshot)" in errand.stdout, errand.stdout

    snapshots = our_snapshots(project, {str(v) for v in volume_of.values()})
    by_trigger: dict[str, dict[str, dict[str, Any]]] = {}
    for snapshot in snapshots:
        meta = snapshot["metadata"]
        name = f"{meta[f'{TAG_PREFIX}instance_group']}/{meta[f'{TAG_PREFIX}index']}"
        by_trigger.setdefault(meta[f"{TAG_PREFIX}trigger"], {})[name] = snapshot
    assert sorted(by_trigger) == ["manual", "pre-deploy", "set:manual"], sorted(by_trigger)
    sets = set()
    for trigger, taken in by_trigger.items():
        assert sorted(taken) == sorted(insts), (trigger, sorted(taken))
        for name, snapshot in taken.items():
            assert snapshot["volume_id"] == volume_of[name]
            annotations = check_annotations(snapshot, insts[name], trigger, started)
            if trigger == "set:manual":
                sets.add((annotations.set_id, annotations.set_size, annotations.set_state))
            else:
                assert snapshot["group_snapshot_id"] is None
    [(set_id, size, state)] = sets
    assert (size, state) == (3, "complete") and set_id
    group_snapshots = {s["group_snapshot_id"] for s in by_trigger["set:manual"].values()}
    assert len(group_snapshots) == 1 and None not in group_snapshots
    assert {project.volume(str(v))["group_id"] for v in volume_of.values()} == {None}

    localbosh.run("-d", "redis", "delete-deployment")
    # As with the OpenStack CPI, a volume with snapshots cannot be deleted: clean-up
    # fails and keeps the orphans until the snapshots are gone.
    refused = localbosh.run("clean-up", "--all", check=False)
    assert refused.returncode != 0
    assert "have snapshots" in refused.stderr, refused.stderr
    release(localbosh, project)
    for volume_id in volume_of.values():
        assert project.gone("volume", str(volume_id), timeout=120)
    assert all(volumes.volume_id(i["disk_cid"]) is None for i in insts.values())
