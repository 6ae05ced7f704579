"""schema.json against the job specs and the Python vocabulary it repeats.

The schema spells some words that code elsewhere also needs (drain events, retention
triggers, the schedule name pattern, the note limit). Each is spelled in Python once,
for the code, and these tests hold the schema to it.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import pytest
import yaml

from disk_snapshots import annotations
from disk_snapshots import config
from disk_snapshots import openstack_settings
from disk_snapshots import schema
from disk_snapshots import triggers
from disk_snapshots.api import routes
from support.release import REPO


def node(job: str, *keys: str) -> dict[str, Any]:
    doc = schema.document()
    found = schema._resolve(doc["definitions"], doc["jobs"][job])
    for key in keys:
        found = schema._resolve(doc["definitions"], found["properties"][key])
    return found


def test_the_schema_spells_the_vocabulary_as_the_code_does() -> None:
    assert node("snapshotter", "drain", "snapshot_on")["items"]["enum"] == list(
        triggers.DRAIN_EVENTS
    )
    assert tuple(node("snapshotter", "retention")["properties"]) == triggers.RETENTION_KEYS
    assert tuple(schema.document()["definitions"]["retention"]["properties"]) == (
        config.RETENTION_KEYS
    )
    schedule = node("snapshotter", "schedules")["items"]["properties"]
    assert schedule["name"]["pattern"] == triggers.NAME
    assert node("take-snapshot", "take_snapshot", "note")["maxLength"] == (
        annotations.MAX_TAG_VALUE
    )
    snapshots = node("restore", "restore", "snapshots")["additionalProperties"]
    assert snapshots["pattern"] == routes._SNAPSHOT_ID
    assert f"set:{annotations.SET_ID}" in node("restore", "restore", "target")["pattern"]
    assert typing.get_args(config.ProviderType) == config.PROVIDERS
    assert tuple(node("snapshotter", "provider", "openstack", "interface")["enum"]) == (
        openstack_settings.OPENSTACK_INTERFACES
    )


def _patterns(value: object) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        own = [value] if "pattern" in value else []
        return own + [p for v in value.values() for p in _patterns(v)]
    if isinstance(value, list):
        return [p for v in value for p in _patterns(v)]
    return []


def test_every_pattern_compiles_and_says_what_it_is_for() -> None:
    found = _patterns(schema.document())
    assert len(found) > 10
    for entry in found:
        re.compile(entry["pattern"])
        assert entry.get("patternHint"), entry


@pytest.mark.parametrize("job", schema.jobs())
def test_every_declared_property_has_a_place_in_the_schema(job: str) -> None:
    spec = yaml.safe_load((REPO / "jobs" / job / "spec").read_text())
    for name in spec["properties"]:
        found = node(job)
        for key in name.split("."):
            assert key in found.get("properties", {}), f"{job}: {name} is not in schema.json"
            found = schema._resolve(schema.document()["definitions"], found["properties"][key])


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 0 * * 7", ""),
        ("*/15 0-23/2 1,15 jan-jun mon-fri", ""),
        ("0 0 * * * 59", ""),
        ("@midnight", ""),
        ("*/0 * * * *", "the minute step must be 1 or more"),
        ("0 24 * * *", "hour 24 is not in 0-23"),
        ("0 0 0 * *", "day of month 0 is not in 1-31"),
        ("0 0 * 13 *", "month 13 is not in 1-12"),
        ("0 0 * * 8", "day of week 8 is not in 0-7"),
        ("5-070 * * * *", "minute 70 is not in 0-59"),
        ("* * * * * 60", "second 60 is not in 0-59"),
        ("@reboot", "is not a valid cron expression"),
        ("* * * * * * *", "has 7 fields"),
    ],
)
def test_cron_structure(expression: str, problem: str) -> None:
    found = schema.cron_problem(expression)
    assert (found == "") if not problem else (problem in found), found


def test_a_value_is_shown_as_json_and_cut_short() -> None:
    assert schema.show("gce") == '"gce"'
    assert schema.show({"a": [1, None]}) == '{"a":[1,null]}'
    assert schema.show("x" * 100) == '"' + "x" * 56 + "..."


def test_null_takes_the_default_and_a_missing_required_key_is_named() -> None:
    schedules = [{"name": "a", "cron": "@daily", "timezone": None}, {"name": "b"}]
    props = {"schedules": schedules}
    problems = [p for p in schema.check("snapshotter", props) if ".schedules" in p]
    assert problems == ["snapshotter.schedules[1].cron: is missing; expected a string"]
