"""The config loader: every bad property fails with its path and what is allowed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.config import ConfigError
from disk_snapshots.config import RestoreConfig
from disk_snapshots.config import SnapshotterConfig
from disk_snapshots.config import load_config
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.restore.target import Target
from support.bad_properties import CASES
from support.bad_properties import BadProperty
from support.configdocs import snapshotter_doc
from support.configdocs import spec_defaults


def problems_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(doc)
    return list(caught.value.problems)


def test_spec_defaults_are_a_valid_configuration() -> None:
    config = load_snapshotter_config(snapshotter_doc())
    assert config.provider.type == "loopback"
    assert config.service.jobs == ("redis",)
    assert config.drain.snapshot_on == {"deploy", "stop", "delete", "disk-change"}
    assert [s.name for s in config.schedules] == ["hourly"]
    assert config.schedules[0].retention.keep_last == 24
    assert config.retention["pre-restore"].max_age == timedelta(days=30)
    assert not config.api.tls.enabled


def test_reads_a_rendered_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(snapshotter_doc()))
    assert isinstance(load_config(path), SnapshotterConfig)


def test_missing_file_and_bad_json_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        load_config(bad)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_property_is_named(case: BadProperty) -> None:
    doc = {"job": case.job, "properties": case.properties()}
    if case.job == "snapshotter":
        doc = snapshotter_doc() | doc
    problems = problems_of(doc)
    assert any(line.startswith(case.message) for line in problems), problems


def test_valid_schedules_take_defaults_and_accept_named_and_seconds_forms() -> None:
    doc = snapshotter_doc()
    doc["properties"]["schedules"] = [
        {"name": "daily", "cron": "@daily"},
        {"name": "fast", "cron": "*/5 * * * * */10", "scope": "set", "retention": {"keep_last": 3}},
    ]
    config = load_snapshotter_config(doc)
    assert [(s.name, s.timezone, s.jitter, s.scope) for s in config.schedules] == [
        ("daily", "UTC", 0, "instance"),
        ("fast", "UTC", 0, "set"),
    ]


def test_every_problem_is_reported_at_once() -> None:
    doc = snapshotter_doc()
    doc["properties"]["provider"]["type"] = "gce"
    doc["properties"]["drain"]["timeout"] = "soon"
    assert len(problems_of(doc)) == 2


def test_errand_configs() -> None:
    restore = {"job": "restore", "properties": {"restore": spec_defaults("restore")["restore"]}}
    config = load_config(restore)
    assert isinstance(config, RestoreConfig)
    assert config.target == Target("latest")
    restore["properties"]["restore"]["target"] = "time:2026-11-29T08:00:00+01:00"
    config = load_config(restore)
    assert isinstance(config, RestoreConfig) and config.target.moment is not None


def test_structure_is_judged_before_what_only_python_can() -> None:
    # A cron croniter refuses is reported once the structure is right, not alongside it.
    doc = snapshotter_doc()
    doc["properties"]["schedules"][0]["cron"] = "0 0 * * 1#9"
    assert problems_of(doc) == [
        'snapshotter.schedules[0].cron: "0 0 * * 1#9" is not a valid cron expression (5 '
        "fields: minute hour day month weekday, or @hourly/@daily/@weekly/@monthly/@yearly)"
    ]
    doc["properties"]["drain"]["timeout"] = 0
    assert problems_of(doc) == ["snapshotter.drain.timeout: 0 is too small; the minimum is 1"]


def test_unknown_job_is_refused() -> None:
    with pytest.raises(ConfigError, match="job: 'redis' is not one of"):
        load_config({"job": "redis"})


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("", "127.0.0.11"),
        ("127.0.0.1", "127.0.0.1"),
        ("/var/run/postgresql", "/var/run/postgresql"),
    ],
)
def test_postgres_host_defaults_to_the_instance_address(host: str, expected: str) -> None:
    from disk_snapshots.vm.services import PostgresService
    from disk_snapshots.vm.services import make_service

    doc = snapshotter_doc()
    doc["properties"]["service"]["profile"] = "postgres"
    doc["properties"]["service"]["postgres"]["host"] = host
    config = load_snapshotter_config(doc)
    service = make_service(config.service, config.spec.address)
    assert isinstance(service, PostgresService)
    assert service.host == expected


def test_a_create_env_instance_keeps_its_id_from_render_to_render() -> None:
    # bosh create-env renders without spec.name and with a new random spec.id each time.
    ids = set()
    for random_id in ("5a1f0c1e-0000-4000-8000-000000000001", "9b2e-other-render"):
        doc = snapshotter_doc()
        del doc["spec"]["name"]
        doc["spec"].update(deployment="bosh", id=random_id, release=None)
        ids.add(load_snapshotter_config(doc).spec.id)
    assert ids == {"bosh-0"}
    # Under a Director the id it gives is the instance's.
    assert load_snapshotter_config(snapshotter_doc()).spec.id == snapshotter_doc()["spec"]["id"]
