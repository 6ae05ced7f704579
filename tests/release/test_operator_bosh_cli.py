"""The operator's command against the real bosh CLI (7.10.6), offline.

The CLI talks to a stand-in Director (support/fake_director.py, after the Director's
controllers) and runs a stand-in ``ssh`` (support/fake_ssh.py); everything between is
the real CLI's code: its requests (argv → API: attach-disk by uuid with
``disk_properties=copy``, ``stop --skip-drain``), its task handling, and the ``--json``
it prints, which shapes.py must read as it is. The local deployment's answers are
pinned to the same shapes (headers, the orphan table's cells).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.operator import shapes
from disk_snapshots.operator.bosh import Bosh
from disk_snapshots.operator.bosh import BoshFailed
from disk_snapshots.operator.errors import PartlyDone
from disk_snapshots.operator.errors import Refused
from disk_snapshots.operator.progress import Progress
from disk_snapshots.operator.remote import Remote
from disk_snapshots.operator.remote import RemoteError
from disk_snapshots.operator.restore import Options
from disk_snapshots.operator.restore import RestoreRun
from localbosh import boshcli
from localbosh import cli as localbosh_cli
from support import fake_ssh
from support.fake_director import SECRET
from support.fake_director import USER
from support.fake_director import FakeDirector
from support.fake_director import running

pytestmark = pytest.mark.bosh

LEADER = "0e8c8d2e-1111-4b6e-9d0b-aaaaaaaaaaaa"
DATA = "5a1f0c3b-2222-4c7d-8e1f-bbbbbbbbbbbb"
GIB = 2**30


def vm(group: str, instance_id: str, index: int, state: str = "started") -> dict[str, Any]:
    """One line of the Director's vms task result (bosh-director jobs/vm_state.rb)."""
    detached = state == "detached"
    return {
        "vm_cid": "" if detached else f"i-{index}{group}",
        "active": not detached,
        "agent_id": "" if detached else f"agent-{instance_id}",
        "ips": [f"10.0.0.{10 + index}"],
        "az": "z1",
        "id": instance_id,
        "index": index,
        "job_name": group,
        "disk_cid": f"vol-{index}",
        "disk_cids": [f"vol-{index}"],
        "job_state": None if detached else "running",
        "state": state,
        "processes": [] if detached else [{"name": "redis", "state": "running"}],
        "bootstrap": index == 0,
        "ignore": False,
        "vm_type": "default",
        "vm_created_at": "2026-12-02T18:00:00Z",
        "cloud_properties": {},
        "stemcell": {"name": "bosh-aws-xen-hvm-ubuntu-jammy-go_agent", "version": "1.500"},
    }


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "PATH": os.environ.get("PATH", "")}


@pytest.fixture
def director() -> Iterator[FakeDirector]:
    fake = FakeDirector(vms=[vm("redis-leader", LEADER, 0), vm("redis-data", DATA, 1, "detached")])
    with running(fake) as served:
        yield served


def bosh_for(director: FakeDirector, env: dict[str, str], **extra: str) -> Bosh:
    environ = {
        **env,
        "BOSH_CLIENT": USER,
        "BOSH_CLIENT_SECRET": SECRET,
        "BOSH_CA_CERT": director.ca,
        **extra,
    }
    return Bosh((boshcli.find(),), "redis", director.url, environ)


def test_instances_details_are_read_as_the_cli_prints_them(
    director: FakeDirector, cli_env: dict[str, str]
) -> None:
    found = {i.group: i for i in bosh_for(director, cli_env).instances()}
    leader, data = found["redis-leader"], found["redis-data"]
    assert (leader.id, leader.index, leader.state, leader.bootstrap) == (LEADER, 0, "started", True)
    assert leader.slug == f"redis-leader/{LEADER}" and leader.label == "redis-leader/0"
    assert leader.disk_cids == ("vol-0",) and leader.ips == ("10.0.0.10",) and leader.has_vm
    assert (data.state, data.has_vm, data.process_state) == ("detached", False, "")
    assert ("GET", "/deployments/redis/instances?format=full", "") in director.requests


def test_the_local_deployment_prints_the_instances_columns_of_the_cli(
    director: FakeDirector, cli_env: dict[str, str]
) -> None:
    _, envelope = bosh_for(director, cli_env).run("instances", "--details")
    real = envelope.table("instances").header
    table = localbosh_cli._instances_json("redis", [], ps=False, details=True).to_json()
    assert table["Header"] == real


def test_orphaned_disks_of_the_cli_and_of_the_local_deployment_read_alike(
    director: FakeDirector, cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = f"redis-leader/{LEADER}"
    director.orphans = [
        {
            "disk_cid": "disk-0d4cc009",
            "size": 1024,
            "az": "z1",
            "deployment_name": "redis",
            "instance_name": instance,
            "cloud_properties": {},
            "orphaned_at": "2026-12-02 18:39:00 UTC",
        }
    ]
    (orphan,) = bosh_for(director, cli_env).orphaned_disks()
    assert (orphan.cid, orphan.size, orphan.instance, orphan.az) == (
        "disk-0d4cc009",
        "1.0 GiB",
        instance,
        "z1",
    )
    home = tmp_path / "localbosh"
    home.mkdir()
    (home / "orphaned_disks.json").write_text(
        json.dumps(
            [
                {
                    "disk_cid": "disk-0d4cc009",
                    "deployment": "redis",
                    "instance": instance,
                    "az": "z1",
                    "size": 1024,
                    "orphaned_at": "2026-12-02T18:39:00Z",
                }
            ]
        )
    )
    monkeypatch.setenv("LOCALBOSH_HOME", str(home))
    _, real = bosh_for(director, cli_env).run("disks", "--orphaned", deployment=False)
    local = localbosh_envelope(["--json", "disks", "--orphaned"], capsys=None)
    assert local.table("disks") == real.table("disks")


def localbosh_envelope(argv: list[str], capsys: object) -> shapes.Envelope:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert localbosh_cli.main(argv) == 0
    return shapes.parse_envelope(out.getvalue())


def test_ssh_results_are_read_per_instance_also_when_some_fail(
    director: FakeDirector, cli_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "ssh.log"
    answers = {"status": (0, '{"role": "leader"}\n', ""), "take": (1, "", "take: frozen\n")}
    env = {**cli_env, **fake_ssh.install(tmp_path / "ssh", answers, log)}
    director.vms = [vm("redis-leader", LEADER, 0), vm("redis-data", DATA, 1)]
    remote = Remote(bosh_for(director, env))
    answered = remote.each(None, "status")
    assert sorted(answered) == [f"redis-data/{DATA}", f"redis-leader/{LEADER}"]
    assert all(a.value == {"role": "leader"} for a in answered.values())
    failed = remote.one(f"redis-leader/{LEADER}", "take", "--note", "it's")
    assert not failed.ok and failed.error == "take: frozen"
    with pytest.raises(RemoteError, match=f"redis-leader/{LEADER}: take: frozen"):
        failed.mapping()
    # The remote shell gets one word per argument, quoted: the note's quote survives.
    last = json.loads(log.read_text().splitlines()[-1])
    assert last[-1] == ("sudo -n /var/vcap/jobs/snapshotter/bin/snapshots take --note 'it'\"'\"'s'")
    setups = [r for r in director.requests if r[0] == "POST" and r[1] == "/deployments/redis/ssh"]
    assert json.loads(setups[0][2])["target"] == {"indexes": [], "ids": []}


def test_attach_disk_asks_by_uuid_with_copy_and_the_directors_refusal_is_the_message(
    director: FakeDirector, cli_env: dict[str, str]
) -> None:
    bosh = bosh_for(director, cli_env)
    slug = f"redis-leader/{LEADER}"
    with pytest.raises(BoshFailed, match="must be in 'bosh stopped' state"):
        bosh.attach_disk(slug, "disk-new")
    bosh.stop(slug, skip_drain=True)
    bosh.attach_disk(slug, "disk-new")
    puts = [r[1] for r in director.requests if r[0] == "PUT"]
    assert puts == [
        f"/disks/disk-new/attachments?deployment=redis&disk_properties=copy&instance_id={LEADER}&job=redis-leader",
        f"/deployments/redis/jobs/redis-leader/{LEADER}?skip_drain=true&state=stopped",
        f"/disks/disk-new/attachments?deployment=redis&disk_properties=copy&instance_id={LEADER}&job=redis-leader",
    ]


def test_a_cli_not_logged_in_or_not_targeted_is_refused_before_anything(
    director: FakeDirector, cli_env: dict[str, str]
) -> None:
    anonymous = Bosh(
        (boshcli.find(),), "redis", director.url, {**cli_env, "BOSH_CA_CERT": director.ca}
    )
    with pytest.raises(Refused, match=r"Not authorized.*log-in.*nothing was stopped or written"):
        anonymous.instances()
    untargeted = Bosh((boshcli.find(),), "redis", "", cli_env)
    with pytest.raises(Refused, match=r"Expected non-empty Director URL.*BOSH_ENVIRONMENT"):
        untargeted.instances()


# -- whole restores, refused ---------------------------------------------------------------


def status(instance_id: str, creates_disks: bool) -> dict[str, Any]:
    me = {"group": "redis", "index": 0, "id": instance_id, "address": "10.0.0.10", "port": 2453}
    me["bootstrap"] = True
    return {
        "instance": {"deployment": "redis", "group": "redis", "index": 0, "id": instance_id},
        "links": {"members": [me], "snapshotter": [me], "peers": []},
        "role": "standalone",
        "replication": {"in_sync": None},
        "service": {"profile": "redis", "jobs": {"redis": "running"}, "stopped": False},
        "disk": {"cid": "vol-0", "size_bytes": GIB},
        "provider": {"type": "aws-ebs", "creates_disks": creates_disks},
        "journal": {"journal": None, "last": None},
    }


def catalog(instance_id: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "snap-0a1b2c3d4e5f67890",
            "state": "completed",
            "size_bytes": GIB,
            "annotations": {
                "deployment": "redis",
                "instance_group": "redis",
                "instance_id": instance_id,
                "index": "0",
                "az": "z1",
                "disk_cid": "vol-0",
                "job": "redis",
                "created_at": "2026-12-02T18:00:00.000000Z",
                "trigger": "manual",
                "consistency": "app",
                "role": "leader",
                "release_version": "0.1.0",
                "schema": "1",
            },
        }
    ]


def failed_restore(
    tmp_path: Path,
    cli_env: dict[str, str],
    answers: dict[str, tuple[int, str, str]],
    expected: type[Exception],
) -> tuple[FakeDirector, str, list[str]]:
    """A replace restore of one instance through the real CLI that must fail: the stand-in
    Director, the message, and the bin/snapshots steps the instance was asked for."""
    log = tmp_path / "ssh.log"
    env = {**cli_env, **fake_ssh.install(tmp_path / "ssh", answers, log)}
    fake = FakeDirector(vms=[vm("redis", LEADER, 0)])
    options = Options(method="replace", yes=True, timeout=5)
    with running(fake), pytest.raises(expected) as failed:
        RestoreRun(bosh_for(fake, env), options, Progress(), lambda q: True).run()
    steps = [json.loads(line)[-1].split()[3] for line in log.read_text().splitlines()]
    return fake, str(failed.value), steps


def test_replace_with_a_provider_that_cannot_make_disks_is_refused_before_any_stop(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    answers = {
        "status": (0, json.dumps(status(LEADER, creates_disks=False)), ""),
        "list": (0, json.dumps(catalog(LEADER)), ""),
    }
    fake, message, steps = failed_restore(tmp_path, cli_env, answers, Refused)
    assert "provider (aws-ebs) cannot make a disk from a snapshot" in message
    assert "use --method copy" in message and "nothing was stopped or written" in message
    assert not [r for r in fake.requests if r[0] == "PUT"]
    assert steps == ["status", "list"]


def test_an_instance_started_again_before_attach_disk_stops_the_restore_saying_so(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    answers = {
        "status": (0, json.dumps(status(LEADER, creates_disks=True)), ""),
        "list": (0, json.dumps(catalog(LEADER)), ""),
        "hold": (0, json.dumps({"held": ["snap-0a1b2c3d4e5f67890"]}), ""),
        "restore-safety": (0, json.dumps({"safety_snapshot_id": "snap-0fff0fff0fff0fff0"}), ""),
        "create-disk": (0, json.dumps({"disk_cid": "vol-0123456789abcdef0", "size_mib": 1024}), ""),
    }
    # The stand-in Director keeps listing the instance started after the stop: as if
    # someone had started it again between the stop and attach-disk.
    fake, message, steps = failed_restore(tmp_path, cli_env, answers, PartlyDone)
    assert "redis/0 is started, not stopped, so the Director would refuse attach-disk" in message
    assert "this command stopped it" in message
    assert "the new disk vol-0123456789abcdef0 is left unattached" in message
    puts = [r[1] for r in fake.requests if r[0] == "PUT"]
    assert puts == [f"/deployments/redis/jobs/redis/{LEADER}?state=stopped"]
    assert "snap-0fff0fff0fff0fff0" in message  # the safety snapshot, named
    assert steps == ["status", "list", "hold", "restore-safety", "create-disk"]


def test_the_cli_is_found_where_the_operator_said(tmp_path: Path) -> None:
    assert shutil.which(boshcli.find())
