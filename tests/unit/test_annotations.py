"""Annotations round-trip through provider tags, and hostile tags are refused."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations


def sample(**changes: object) -> Annotations:
    values: dict[str, object] = {
        "deployment": "redis",
        "instance_group": "redis-data",
        "instance_id": "4c1e6b01-aaaa",
        "index": 1,
        "az": "z1",
        "disk_cid": "disk-7f3a",
        "job": "snapshotter",
        "created_at": datetime(2026, 11, 29, 8, 30, 1, 250000, tzinfo=UTC),
        "trigger": "pre-deploy",
        "consistency": "app",
        "role": "follower",
        "release_version": "0.1.0+dev.3",
    }
    values.update(changes)
    return Annotations(**values)  # type: ignore[arg-type]


def test_every_field_becomes_a_prefixed_tag() -> None:
    tags = sample(note="before Redis 8", set_id="set-20261129", set_size=3).to_tags()
    assert tags[TAG_PREFIX + "created_at"] == "2026-11-29T08:30:01.250000Z"
    assert tags[TAG_PREFIX + "schema"] == "1"
    assert set(tags) == {
        TAG_PREFIX + n
        for n in (
            "deployment",
            "instance_group",
            "instance_id",
            "index",
            "az",
            "disk_cid",
            "job",
            "created_at",
            "trigger",
            "consistency",
            "role",
            "release_version",
            "note",
            "set_id",
            "set_size",
            "set_state",
            "set_reason",
            "schema",
            "hold_until",
            "hold_by",
        )
    }


@given(
    note=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="\x7f"),
        max_size=200,
    ),
    index=st.integers(0, 500),
    trigger=st.sampled_from(
        ["manual", "schedule:hourly", "pre-stop", "set:nightly", "pre-restore"]
    ),
)
def test_round_trip(note: str, index: int, trigger: str) -> None:
    original = sample(note=note, index=index, trigger=trigger)
    assert Annotations.from_tags(original.to_tags() | {"Name": "other tag"}) == original


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        ("trigger", "cron", "trigger: 'cron' is not one of manual"),
        ("consistency", "great", "consistency: 'great' is not one of clean, app, fs, crash"),
        ("role", "primary", "role: 'primary' is not one of leader"),
        ("index", "-1", "tag disk-snapshots:index: '-1' is not a number"),
        ("created_at", "yesterday", "'yesterday' is not an ISO 8601 timestamp"),
        ("created_at", "2026-11-29T08:00:00", "has no time zone"),
        ("instance_id", "../../etc", "instance_id: '../../etc' is not a valid identifier"),
        ("schema", "2", "schema 2 is newer than this release understands"),
        ("note", "a\nb", "note: must be one line of text"),
        ("note", "x" * 256, "note: is 256 characters long; at most 255"),
    ],
)
def test_hostile_tags_are_refused(tag: str, value: str, message: str) -> None:
    tags = sample().to_tags()
    tags[TAG_PREFIX + tag] = value
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(")) as caught:
        Annotations.from_tags(tags)
    assert message in str(caught.value)


def test_missing_tag_is_named() -> None:
    tags = sample().to_tags()
    del tags[TAG_PREFIX + "disk_cid"]
    with pytest.raises(AnnotationError, match="tag disk-snapshots:disk_cid is missing"):
        Annotations.from_tags(tags)


def test_set_fields_go_together() -> None:
    with pytest.raises(AnnotationError, match="set_id and set_size go together"):
        sample(set_id="set-1")
    assert (
        sample(set_id="set-1", set_size=3)
        .with_set_state("incomplete", "redis-data/1 failed")
        .set_state
        == "incomplete"
    )


def test_a_hold_round_trips_and_expires() -> None:
    until = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    held = sample().with_hold(until, "restore-20261129T083000Z-a1b2c3")
    back = Annotations.from_tags(held.to_tags())
    assert back.hold_by == "restore-20261129T083000Z-a1b2c3"
    assert back.held(datetime(2026, 11, 29, 8, 59, tzinfo=UTC))
    assert not back.held(until)
    released = back.with_hold(None)
    assert (released.hold_until, released.hold_by) == ("", "")
    assert not released.held(datetime(2000, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("until", "by", "message"),
    [
        ("tomorrow", "restore-1", "hold_until"),
        ("2026-11-29T09:00:00Z", "", "hold_by"),
        ("", "restore-1", "hold_by"),
        ("2026-11-29T09:00:00Z", "../etc", "hold_by"),
    ],
)
def test_a_hold_that_names_no_time_or_no_holder_is_refused(
    until: str, by: str, message: str
) -> None:
    tags = sample().to_tags() | {TAG_PREFIX + "hold_until": until, TAG_PREFIX + "hold_by": by}
    with pytest.raises(AnnotationError, match=message):
        Annotations.from_tags(tags)
