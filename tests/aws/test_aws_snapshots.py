"""Take, list, get, update and delete EBS snapshots, against moto's EC2 server."""

from __future__ import annotations

import logging
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.catalog import Query
from disk_snapshots.config import Retention
from disk_snapshots.providers import make_provider
from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.retention import plan_retention
from disk_snapshots.vm.instance import Disk
from support.aws import SECRET
from support.aws import MakeProvider
from support.aws import World
from support.aws import sample_annotations

Calls = list[str]


def record_calls(provider: AwsEbsProvider, region: str | None = None) -> Calls:
    """The EC2 operations the provider sends, in order (each retry counts once more)."""
    calls: Calls = []

    def before_call(model: Any, **_: Any) -> None:
        calls.append(model.name)

    provider.client(region).meta.events.register("before-call.ec2", before_call)
    return calls


def emulate_ec2_pages(provider: AwsEbsProvider, page_size: int) -> list[int]:
    """moto returns every snapshot at once; EC2 pages them. Make moto's answer page."""
    pages: list[int] = []

    def before(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["page_start"] = int(params.get("NextToken") or 0)

    def after(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        start = context.get("page_start", 0)
        everything = parsed.get("Snapshots", [])
        parsed["Snapshots"] = everything[start : start + page_size]
        pages.append(len(parsed["Snapshots"]))
        if start + page_size < len(everything):
            parsed["NextToken"] = str(start + page_size)

    events = provider.client().meta.events
    events.register("before-parameter-build.ec2.DescribeSnapshots", before)
    events.register("after-call.ec2.DescribeSnapshots", after)
    return pages


def tags(ec2: Any, snapshot_id: str, region_client: Any | None = None) -> dict[str, str]:
    client = region_client or ec2
    raw = client.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


def test_snapshot_carries_every_annotation_as_a_tag_in_one_call(
    provider: AwsEbsProvider, world: World, ec2: Any
) -> None:
    calls = record_calls(provider)
    wanted = sample_annotations(note="before the upgrade", disk_cid=world.volume_id)
    taken = provider.snapshot(world.disk, wanted)

    assert calls == ["CreateSnapshot"]  # tags in TagSpecifications: never untagged, one call
    assert taken.id.startswith("snap-")
    assert taken.state in ("pending", "completed")
    assert taken.annotations == wanted
    found = tags(ec2, taken.id)
    assert {k: v for k, v in found.items() if k.startswith(TAG_PREFIX)} == wanted.to_tags()
    assert found["Name"].startswith("redis/redis-leader/0 manual ")
    raw = ec2.describe_snapshots(SnapshotIds=[taken.id])["Snapshots"][0]
    assert raw["VolumeId"] == world.volume_id


def test_snapshot_refuses_a_disk_that_is_not_an_ebs_volume(
    provider: AwsEbsProvider, tmp_path: Any
) -> None:
    disk = Disk(cid="loop-disk-1", mount=tmp_path, hint={"path": "/pool/disk.img"})
    with pytest.raises(ProviderError, match="no EBS volume id"):
        provider.snapshot(disk, sample_annotations())


def test_list_reads_the_catalog_from_tags_newest_first_and_filters_by_tags(
    provider: AwsEbsProvider, world: World, ec2: Any
) -> None:
    older = provider.snapshot(world.disk, sample_annotations(minutes_ago=30))
    newer = provider.snapshot(world.disk, sample_annotations(minutes_ago=5, trigger="pre-deploy"))
    other = provider.snapshot(world.disk, sample_annotations(minutes_ago=1, deployment="postgres"))
    # A snapshot someone else took of the same volume: never part of our catalog.
    ec2.create_snapshot(VolumeId=world.volume_id, Description="by hand")

    everything = provider.list()
    assert [s.id for s in everything] == [other.id, newer.id, older.id]
    assert everything[1].annotations == newer.annotations

    calls = record_calls(provider)
    redis = provider.list(Query(deployment="redis"))
    assert [s.id for s in redis] == [newer.id, older.id]
    assert calls == ["DescribeSnapshots"]  # no backup region lookup when nothing has a copy
    assert [s.id for s in provider.list(Query(trigger="pre-deploy"))] == [newer.id]
    assert [s.id for s in provider.list(Query(instance="redis-leader/0"))] == [
        other.id,
        newer.id,
        older.id,
    ]


def test_list_pushes_tag_filters_to_ec2(provider: AwsEbsProvider, world: World) -> None:
    sent: list[list[dict[str, Any]]] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        sent.append(params.get("Filters", []))

    provider.client().meta.events.register("before-parameter-build.ec2.DescribeSnapshots", capture)
    provider.list(Query(deployment="redis", trigger="manual"))
    assert {"Name": "tag-key", "Values": [f"{TAG_PREFIX}schema"]} in sent[0]
    assert {"Name": f"tag:{TAG_PREFIX}deployment", "Values": ["redis"]} in sent[0]
    assert {"Name": f"tag:{TAG_PREFIX}trigger", "Values": ["manual"]} in sent[0]


def test_list_follows_pages(provider: AwsEbsProvider, world: World) -> None:
    taken = [provider.snapshot(world.disk, sample_annotations(minutes_ago=m)) for m in range(12)]
    pages = emulate_ec2_pages(provider, page_size=5)

    listed = provider.list()

    assert pages == [5, 5, 2]
    assert [s.id for s in listed] == [s.id for s in taken]  # newest (0 minutes ago) first


def test_damaged_tags_are_skipped_with_a_warning(
    provider: AwsEbsProvider, world: World, ec2: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good = provider.snapshot(world.disk, sample_annotations())
    bad = provider.snapshot(world.disk, sample_annotations(minutes_ago=1))
    ec2.create_tags(Resources=[bad.id], Tags=[{"Key": f"{TAG_PREFIX}role", "Value": "king"}])

    with caplog.at_level(logging.WARNING, logger="disk_snapshots.providers.aws_ebs"):
        listed = provider.list()

    assert [s.id for s in listed] == [good.id]
    assert bad.id in caplog.text
    assert "role" in caplog.text
    with pytest.raises(ProviderError, match=f"{bad.id} has damaged tags"):
        provider.get(bad.id)


def test_get_update_delete(provider: AwsEbsProvider, world: World, ec2: Any) -> None:
    taken = provider.snapshot(world.disk, sample_annotations(note="first"))
    assert provider.get(taken.id).annotations == taken.annotations
    assert provider.get(taken.id).state == "completed"  # moto completes at once
    assert provider.get(taken.id).size_bytes == 10 * 2**30

    changed = taken.annotations.with_set_state("incomplete", "member 2 failed")
    updated = provider.update(taken.id, changed)
    assert updated.annotations == changed
    assert provider.get(taken.id).annotations == changed
    assert tags(ec2, taken.id)[f"{TAG_PREFIX}set_reason"] == "member 2 failed"

    provider.delete(taken.id)
    assert provider.list() == []
    with pytest.raises(UnknownSnapshot, match=taken.id):
        provider.get(taken.id)
    with pytest.raises(UnknownSnapshot):
        provider.delete(taken.id)


def test_delete_and_update_refuse_snapshots_without_our_tags(
    provider: AwsEbsProvider, world: World, ec2: Any
) -> None:
    foreign = ec2.create_snapshot(VolumeId=world.volume_id, Description="someone else's")
    foreign_id = foreign["SnapshotId"]
    for action in (
        lambda: provider.delete(foreign_id),
        lambda: provider.update(foreign_id, sample_annotations()),
        lambda: provider.get(foreign_id),
    ):
        with pytest.raises(UnknownSnapshot, match="not taken by disk-snapshots"):
            action()
    assert ec2.describe_snapshots(SnapshotIds=[foreign_id])["Snapshots"]


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "snap-",
        "snap-123",
        "snap-0123456789ABCDEF0",
        "vol-0123456789abcdef0",
        "../etc",
        "snap-0123456789abcdef0/x",
    ],
)
def test_malformed_ids_are_refused_before_any_call(provider: AwsEbsProvider, bad_id: str) -> None:
    calls = record_calls(provider)
    for action in (provider.get, provider.delete, provider.backup):
        with pytest.raises(UnknownSnapshot, match="not an EBS snapshot id"):
            action(bad_id)
    with pytest.raises(UnknownSnapshot, match="not an EBS snapshot id"):
        provider.update(bad_id, sample_annotations())
    with (
        pytest.raises(UnknownSnapshot, match="not an EBS snapshot id"),
        provider.materialize(bad_id),
    ):
        pass
    assert calls == []


@pytest.mark.parametrize("unknown", ["snap-0123456789abcdef0", "snap-01234567"])
def test_unknown_ids_give_a_clear_error(provider: AwsEbsProvider, unknown: str) -> None:
    with pytest.raises(UnknownSnapshot, match=f"DescribeSnapshots of {unknown}: no such snapshot"):
        provider.get(unknown)
    with pytest.raises(UnknownSnapshot, match="no such snapshot"):
        provider.delete(unknown)


def test_ebs_states_map_onto_catalog_states(
    provider: AwsEbsProvider, world: World, ec2: Any
) -> None:
    taken = provider.snapshot(world.disk, sample_annotations())
    states: dict[str, str] = {}

    def set_state(parsed: dict[str, Any], **_: Any) -> None:
        for raw in parsed.get("Snapshots", []):
            raw["State"] = states.get("now", raw["State"])

    provider.client().meta.events.register("after-call.ec2.DescribeSnapshots", set_state)
    for ebs, ours in [
        ("pending", "pending"),
        ("completed", "completed"),
        ("error", "error"),
        ("recoverable", "error"),
        ("recovering", "pending"),
    ]:
        states["now"] = ebs
        assert provider.get(taken.id).state == ours
        assert provider.list()[0].state == ours


def test_retention_deletes_exactly_what_the_plan_says(
    provider: AwsEbsProvider, world: World, ec2: Any
) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    kinds = ["schedule:hourly"] * 6 + ["manual"] * 3 + ["pre-deploy"] * 2
    taken = [
        provider.snapshot(
            world.disk,
            sample_annotations(
                at=now - timedelta(hours=i + 1),
                trigger=trigger,
                # Only the newest manual one is app-consistent, so the consistency guard
                # protects one snapshot the rules would drop.
                consistency="app" if (trigger == "manual" and i == 6) else "crash",
                role="follower",
            ),
        )
        for i, trigger in enumerate(kinds)
    ]
    catalog = provider.list(Query(deployment="redis"))
    assert len(catalog) == len(taken)
    policies = {
        "schedule:hourly": Retention(keep_last=2),
        "manual": Retention(keep_last=1),
        "pre-deploy": Retention(max_age=timedelta(hours=10, minutes=30)),
    }
    plan = plan_retention(catalog, policies, now)
    expected_deleted = {s.id for s in taken[2:6]} | {taken[7].id, taken[8].id, taken[10].id}
    assert {s.id for s in plan.delete} == expected_deleted

    for snapshot in plan.delete:
        provider.delete(snapshot.id)

    survivors = {s.id for s in provider.list()}
    assert survivors == {s.id for s in taken} - expected_deleted
    raw = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not expected_deleted & {r["SnapshotId"] for r in raw}


def test_make_provider_builds_aws_ebs_from_config(endpoint: str) -> None:
    from disk_snapshots.config import ProviderConfig
    from support.aws import settings

    config = ProviderConfig(type="aws-ebs", loopback_pool="", aws=settings(endpoint))
    made = make_provider(config, None)
    assert isinstance(made, AwsEbsProvider)
    with made as provider:
        assert provider.name == "aws-ebs"
        assert provider.list() == []
        assert SECRET not in repr(provider)


def test_instance_profile_when_no_keys_are_set(
    make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default chain: here it finds the environment; on a VM, the instance profile.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    provider = make_provider(access_key_id="", secret_access_key="")
    resolved = provider._session.get_credentials()
    assert resolved is not None
    assert resolved.method == "env"
    assert resolved.access_key == "AKIDFROMENV"
    assert provider.list() == []


def test_keys_from_properties_win(
    make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    provider = make_provider()
    resolved = provider._session.get_credentials()
    assert resolved is not None
    assert resolved.access_key == "AKIDTESTING"
