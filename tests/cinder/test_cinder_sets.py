"""Snapshot sets on the real Cinder: one group snapshot of the members' volumes, taken inside
the freeze barrier by three snapshotter daemons (real processes, real ext4 loop disks, the
agent API over mutual TLS).

Each member's persistent disk is two things here, as in the local deployment's EBS mode: the
loop disk is the filesystem that gets frozen, and a Cinder volume is its IaaS identity (the
``volume_id`` hint the provider snapshots).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from disk_snapshots.catalog import Query
from disk_snapshots.commands.errands import take_snapshot
from disk_snapshots.config import TlsConfig
from disk_snapshots.errors import EXIT_PARTIAL
from disk_snapshots.snapshot.snapshotter import Snapshotter
from support.cinder import Admin
from support.cinder import CinderLocal
from support.cluster import MEMBERS
from support.cluster import MemberDisks
from support.cluster import Vm
from support.cluster import member_doc
from support.cluster import start_daemon
from support.cluster import stop_daemon
from support.cluster import write_vm
from support.disks import require_root
from support.net import free_port
from support.tls import make_tls

pytestmark = pytest.mark.cinder
# Long enough for Cinder to make a group snapshot of three volumes inside the freeze.
LEASE = 60


@pytest.fixture(scope="module")
def tls() -> TlsConfig:
    return make_tls()


class Cluster:
    def __init__(self, vms: list[Vm], volumes: dict[str, str]) -> None:
        self.vms = vms
        self.volumes = volumes  # member id → its Cinder volume

    def snapshotter(self) -> Snapshotter:
        return Snapshotter.load(self.vms[0].paths)


@pytest.fixture
def cluster(
    tmp_path: Path,
    tls: TlsConfig,
    admin: Admin,
    cinder_local: CinderLocal,
    deployment: str,
    consistent_group_type: str,
) -> Iterator[Cluster]:
    require_root()
    port = free_port()
    pool = tmp_path / "pool"
    pool.mkdir()
    disks = MemberDisks(pool, tmp_path)
    volumes = dict(zip((m.id for m in MEMBERS), admin.create_volumes(3, deployment), strict=True))
    vms: list[Vm] = []
    try:
        for spec in MEMBERS:
            root, cid, image = disks.attach(spec, "64M")
            doc = member_doc(spec, MEMBERS, tls, port, root, pool)
            doc["spec"]["deployment"] = deployment
            props = doc["properties"]
            props["quiesce"]["freeze_timeout"] = LEASE
            props["provider"]["type"] = "openstack-cinder"
            props["provider"]["openstack"] |= {
                "endpoint": cinder_local.endpoint,
                "group_type": consistent_group_type,
            }
            paths = write_vm(root, doc, cid, image)
            hint = {"path": str(image), "volume_id": volumes[spec.id]}
            settings = {"disks": {"persistent": {cid: hint}}}
            (root / "var/vcap/bosh/settings.json").write_text(json.dumps(settings))
            vms.append(Vm(spec, paths, port))
        for vm in vms:
            vm.process = start_daemon(vm)
        yield Cluster(vms, volumes)
    finally:
        for vm in vms:
            if vm.process is not None:
                stop_daemon(vm.process)
        disks.release()


def test_a_set_is_one_group_snapshot_taken_inside_the_freeze(
    cluster: Cluster, admin: Admin, deployment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert take_snapshot(cluster.vms[0].paths) == 0
    out = capsys.readouterr().out
    assert "complete: 3 snapshots (group snapshot)" in out, out

    taken = cluster.snapshotter().provider.list(Query(deployment=deployment))
    assert len(taken) == 3
    raw = {s.id: admin.snapshot(s.id) for s in taken}
    # One cut: every member snapshot belongs to the same group snapshot, one per volume.
    group_snapshots = {r["group_snapshot_id"] for r in raw.values()}
    assert len(group_snapshots) == 1 and None not in group_snapshots
    by_member = {s.annotations.instance_id: s for s in taken}
    assert {m: raw[s.id]["volume_id"] for m, s in by_member.items()} == cluster.volumes
    annotations = [s.annotations for s in taken]
    assert len({a.set_id for a in annotations}) == 1
    assert {(a.set_size, a.set_state, a.trigger, a.consistency) for a in annotations} == {
        (3, "complete", "set:manual", "app")
    }
    assert sorted((a.instance, a.role) for a in annotations) == [
        ("redis-data/0", "follower"),
        ("redis-data/1", "follower"),
        ("redis-leader/0", "leader"),
    ]
    # Every member carries the group snapshot's own instant.
    assert len({a.created_at for a in annotations}) == 1
    # The volumes left the group again (BOSH must stay able to delete its disks).
    assert {admin.volume(v)["group_id"] for v in cluster.volumes.values()} == {None}


def test_a_member_that_cannot_flush_means_no_group_snapshot_at_all(
    cluster: Cluster, admin: Admin, deployment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (cluster.vms[2].paths.root / "service-down").touch()
    assert take_snapshot(cluster.vms[0].paths) == EXIT_PARTIAL
    out = capsys.readouterr().out
    assert "INCOMPLETE: redis-data/1: quiesce failed: flush failed" in out, out
    assert "no group snapshot without every member frozen" in out, out
    for volume in cluster.volumes.values():
        assert admin.call("GET", "/snapshots/detail", params={"volume_id": volume}) == {
            "snapshots": []
        }
        assert admin.volume(volume)["group_id"] is None
    assert cluster.snapshotter().provider.list(Query(deployment=deployment)) == []


def test_a_volume_of_another_deployment_stops_the_set_before_anything_freezes(
    cluster: Cluster, admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = cluster.volumes[MEMBERS[1].id]
    admin.call("PUT", f"/volumes/{stranger}/metadata", json={"metadata": {"deployment": "other"}})
    assert take_snapshot(cluster.vms[0].paths) == EXIT_PARTIAL
    out = capsys.readouterr().out
    assert f"INCOMPLETE: no group snapshot: volume {stranger} belongs to deployment 'other'" in out
    for vm in cluster.vms:
        # No freeze, so no watchdog ever ran (it logs every freeze it guards).
        assert not (vm.paths.logs / "watchdog.log").exists()
    assert {admin.volume(v)["group_id"] for v in cluster.volumes.values()} == {None}
