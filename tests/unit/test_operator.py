"""The operator's command's pure parts: choosing copy or replace, who takes part, the way
back, and finding the bosh CLI."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Snapshot
from disk_snapshots.operator import decide
from disk_snapshots.operator import report
from disk_snapshots.operator import shapes
from disk_snapshots.operator.bosh import find_bosh
from disk_snapshots.operator.cli import build_parser
from disk_snapshots.operator.cli import main
from disk_snapshots.operator.errors import Refused
from disk_snapshots.restore.plan import PlanEntry

MIB = 2**20


def snapshot(size_mib: int | None = 1024) -> Snapshot:
    a = Annotations(
        deployment="redis",
        instance_group="redis-data",
        instance_id="id-data-1",
        index=1,
        az="z2",
        disk_cid="disk-1",
        job="redis",
        created_at=datetime(2026, 12, 2, 18, 0, tzinfo=UTC),
        trigger="manual",
        consistency="app",
        role="leader",
        release_version="0.1.0",
    )
    return Snapshot("snap-0a1b2c3d4e5f67890", a, size_bytes=size_mib * MIB if size_mib else None)


def status(
    creates: bool = True, size_mib: int | None = 1024, kind: str = "loopback", refusal: str = ""
) -> Any:
    return {
        "provider": {"type": kind, "creates_disks": creates, "copy_refusal": refusal},
        "disk": {"size_bytes": size_mib * MIB if size_mib else None},
    }


LEADER = PlanEntry("redis-leader/0", "id-leader", "leader", "copy", "snap-0a1b2c3d4e5f67890")


def test_auto_replaces_when_the_provider_makes_disks_of_the_disks_size() -> None:
    how, why = decide.method(LEADER, snapshot(), status(), "auto")
    assert how == "replace"
    assert "new 1024 MiB disk made from snap-0a1b2c3d4e5f67890" in why and "orphaned" in why


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (status(creates=False, kind="openstack-cinder"), "provider (openstack-cinder) cannot make"),
        (status(size_mib=2048), "taken of a 1024 MiB disk and redis-leader/0's disk is 2048 MiB"),
        (status(size_mib=None), "size of redis-leader/0's disk or of snap-0a1b2c3d4e5f67890"),
    ],
)
def test_auto_copies_and_replace_refuses_saying_why(state: Any, reason: str) -> None:
    how, why = decide.method(LEADER, snapshot(), state, "auto")
    assert how == "copy" and why.startswith("copy, not replace:") and reason in why
    with pytest.raises(Refused) as refused:
        decide.method(LEADER, snapshot(), state, "replace")
    assert reason in str(refused.value)
    assert "--method copy" in str(refused.value)
    assert "nothing was stopped or written" in str(refused.value)


def test_a_provider_that_cannot_copy_replaces_or_refuses_before_anything_stops() -> None:
    cinder = status(kind="openstack-cinder", refusal="openstack-cinder cannot restore by copying")
    assert decide.method(LEADER, snapshot(), cinder, "auto")[0] == "replace"
    with pytest.raises(
        Refused, match=r"--method copy for redis-leader/0: openstack-cinder cannot restore by"
    ):
        decide.method(LEADER, snapshot(), cinder, "copy")
    resized = status(kind="openstack-cinder", refusal="no copy here", size_mib=2048)
    with pytest.raises(Refused) as refused:
        decide.method(LEADER, snapshot(), resized, "auto")
    assert "2048 MiB" in str(refused.value) and "cannot copy either" in str(refused.value)
    assert "nothing was stopped or written" in str(refused.value)


def test_copy_is_copy_and_resync_is_resync_whatever_the_method() -> None:
    assert decide.method(LEADER, snapshot(), status(creates=False), "copy")[0] == "copy"
    follower = PlanEntry("redis-data/0", "id-data-0", "follower", "resync")
    assert decide.method(follower, None, status(), "replace")[0] == "resync"


def instance(group: str, instance_id: str, index: int, state: str = "started") -> shapes.Instance:
    return shapes.Instance(
        group, instance_id, index, "running", state, "z1", (), index == 0, ("disk",), "vm-1"
    )


def member(group: str, instance_id: str, index: int) -> dict[str, object]:
    return {"group": group, "index": index, "id": instance_id, "address": "", "port": 2453}


def test_the_topology_is_the_links_members_and_refuses_one_that_cannot_take_part() -> None:
    leader, data = instance("redis-leader", "l", 0), instance("redis-data", "d", 0)
    links = {
        "members": [member("redis-leader", "l", 0), member("redis-data", "d", 0)],
        "snapshotter": [member("redis-leader", "l", 0)],
        "peers": [member("redis-data", "d", 0)],
    }
    statuses = {i.slug: {"links": links, "role": "leader"} for i in (leader, data)}
    topology = decide.topology("redis", [leader, data], statuses, {})
    assert [m.label for m in topology.members] == ["redis-leader/0", "redis-data/0"]
    assert topology.roles == {"l": "leader", "d": "leader"}
    detached = instance("redis-data", "d", 0, state="detached")
    with pytest.raises(
        Refused, match=r"redis-data/0 is detached.*bosh -d redis start redis-data/d"
    ):
        decide.topology("redis", [leader, detached], {leader.slug: statuses[leader.slug]}, {})
    with pytest.raises(Refused, match=r"redis-data/0 does not answer: sudo: no tty"):
        decide.topology(
            "redis",
            [leader, data],
            {leader.slug: statuses[leader.slug]},
            {data.slug: "sudo: no tty"},
        )
    with pytest.raises(Refused, match=r"no instance of redis answers as a snapshotter"):
        decide.topology("redis", [leader], {}, {leader.slug: "snapshots: not found"})


def test_the_way_back_names_every_safety_snapshot_and_the_orphaned_disk() -> None:
    leader = report.Part(
        LEADER, "redis-leader/id-leader", "replace", "", safety="snap-0000000000000000a"
    )
    leader.old_disk, leader.new_disk = "disk-old", "disk-new"
    follower = report.Part(
        PlanEntry("redis-data/0", "id-data-0", "follower", "resync"),
        "redis-data/id-data-0",
        "resync",
        "",
        safety="snap-0000000000000000b",
    )
    back = report.way_back("redis", [leader, follower])
    assert back[0].endswith(
        "disk-snapshots -d redis restore --followers restore "
        "--snapshot redis-leader/id-leader=snap-0000000000000000a "
        "--snapshot redis-data/id-data-0=snap-0000000000000000b"
    )
    assert back[1].endswith(
        "bosh -d redis stop redis-leader/id-leader && bosh -d redis attach-disk "
        "redis-leader/id-leader disk-old && bosh -d redis start redis-leader/id-leader"
    )
    # Without a safety snapshot of every disk, no command restores "every disk".
    follower.safety = ""
    assert report.way_back("redis", [leader, follower])[0] == (
        "the clean pre-restore safety snapshots: redis-leader/0: snap-0000000000000000a"
    )


def test_the_json_of_a_bosh_cli_failure_says_the_tasks_error_first() -> None:
    envelope = shapes.parse_envelope(
        '{"Tables": null, "Blocks": ["Task 4 | 12:00:00 | Error: must be in \'bosh stopped\' '
        'state\\n"], "Lines": ["Using deployment \'redis\'", "Exit code 1"]}'
    )
    assert envelope.message() == (
        "Task 4 | 12:00:00 | Error: must be in 'bosh stopped' state Using deployment 'redis'"
    )
    with pytest.raises(shapes.ShapeError, match="not JSON"):
        shapes.parse_envelope("panic: runtime error")


def test_a_step_answers_with_its_last_json_line_after_a_banner() -> None:
    assert shapes.last_json('Unauthorized access is prohibited\n{"role": "leader"}\n') == {
        "role": "leader"
    }
    with pytest.raises(shapes.ShapeError, match="no JSON"):
        shapes.last_json("sudo: a password is required\n")


def test_a_missing_bosh_cli_is_refused_naming_what_to_install_or_set(tmp_path: Path) -> None:
    with pytest.raises(Refused, match=r"bosh CLI was not found on PATH.*DISK_SNAPSHOTS_BOSH"):
        find_bosh({"PATH": str(tmp_path)})
    with pytest.raises(Refused, match=r"DISK_SNAPSHOTS_BOSH is '/no/bosh'.*not an executable"):
        find_bosh({"PATH": str(tmp_path), "DISK_SNAPSHOTS_BOSH": "/no/bosh"})
    bosh = tmp_path / "bosh"
    bosh.write_text("#!/bin/sh\n")
    bosh.chmod(0o755)
    assert find_bosh({"PATH": str(tmp_path)}) == [str(bosh)]
    assert find_bosh({"DISK_SNAPSHOTS_BOSH": f"{bosh} --tty"}) == [str(bosh), "--tty"]


@pytest.mark.parametrize(
    ("given", "kind"),
    [
        ("latest", "latest"),
        ("2026-11-29T08:00:00Z", "time"),
        ("time:2026-11-29T08:00:00+01:00", "time"),
        ("set:set-20261129T080000Z-abc", "set"),
    ],
)
def test_to_takes_latest_a_bare_time_or_a_set(given: str, kind: str) -> None:
    assert build_parser().parse_args(["restore", "--to", given]).to.kind == kind


def test_a_bad_argument_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["restore", "--to", "yesterday"])
    assert exited.value.code == 2
    assert '--to "time:yesterday": time needs an ISO 8601 timestamp' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["restore", "--snapshot", "snap-0123"])
    assert "expected GROUP/ID=SNAPSHOT_ID" in capsys.readouterr().err


def test_no_deployment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BOSH_DEPLOYMENT", raising=False)
    assert main(["snapshots"]) == 2
    assert "which deployment? give -d NAME or set BOSH_DEPLOYMENT" in capsys.readouterr().err
