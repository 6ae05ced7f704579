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


BAD_SNAPSHOTTER = [
    (
        ("provider", "type"),
        "gce",
        "snapshotter.provider.type: 'gce' is not allowed; "
        "allowed: loopback, aws-ebs, openstack-cinder",
    ),
    (("service", "profile"), "mysql", "snapshotter.service.profile: 'mysql' is not allowed"),
    (
        ("service", "redis", "port"),
        "6379",
        "snapshotter.service.redis.port: expected an integer, got a string '6379'",
    ),
    (
        ("service", "redis", "port"),
        70000,
        "snapshotter.service.redis.port: 70000 is too large; the maximum is 65535",
    ),
    (("service", "jobs"), "redis", "snapshotter.service.jobs: expected a list"),
    (
        ("service", "jobs"),
        ["redis; rm -rf /"],
        "snapshotter.service.jobs[0]: 'redis; rm -rf /' does not match",
    ),
    (
        ("service", "postgres", "host"),
        "127.0.0.1 -c x",
        "snapshotter.service.postgres.host: '127.0.0.1 -c x' is not a host name, an IP address",
    ),
    (
        ("service", "command", "flush"),
        "redis-cli save",
        "snapshotter.service.command.flush: expected an argv list",
    ),
    (("quiesce", "freeze"), "yes", "snapshotter.quiesce.freeze: expected true or false"),
    (
        ("quiesce", "freeze_timeout"),
        -1,
        "snapshotter.quiesce.freeze_timeout: -1 is too small; the minimum is 1",
    ),
    (
        ("quiesce", "on_failure"),
        "ignore",
        "snapshotter.quiesce.on_failure: 'ignore' is not allowed; allowed: abort, crash-consistent",
    ),
    (
        ("drain", "snapshot_on"),
        ["deploy", "reboot"],
        "snapshotter.drain.snapshot_on[1]: 'reboot' is not allowed",
    ),
    (
        ("drain", "on_failure"),
        "ignore",
        "snapshotter.drain.on_failure: 'ignore' is not allowed; allowed: fail, warn",
    ),
    (("drain", "timeout"), 0, "snapshotter.drain.timeout: 0 is too small"),
    (
        ("retention", "pre-deploy", "keep_last"),
        -3,
        "snapshotter.retention.pre-deploy.keep_last: -3 is too small; the minimum is 0",
    ),
    (
        ("retention", "pre-deploy", "max_age"),
        "forever",
        "snapshotter.retention.pre-deploy.max_age: 'forever' is not a duration",
    ),
    (
        ("retention", "pre-deploy", "keep_forever"),
        1,
        "snapshotter.retention.pre-deploy.keep_forever: unknown key; allowed: keep_last",
    ),
    (
        ("retention", "nightly"),
        {"keep_last": 1},
        "snapshotter.retention.nightly: unknown key; allowed: pre-deploy",
    ),
    (("api", "port"), 0, "snapshotter.api.port: 0 is too small"),
    (("api", "tls", "ca"), "not a pem", "snapshotter.api.tls.ca: expected a PEM certificate"),
    (
        ("post_stop_snapshot",),
        "false",
        "snapshotter.post_stop_snapshot: expected true or false, got a string 'false'",
    ),
    (
        ("provider", "aws", "endpoint"),
        "ftp://x",
        "snapshotter.provider.aws.endpoint: 'ftp://x' does not match",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_SNAPSHOTTER, ids=lambda v: str(v))
def test_bad_property_is_named(path: tuple[str, ...], value: object, message: str) -> None:
    doc = snapshotter_doc()
    node = doc["properties"]
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    problems = problems_of(doc)
    assert any(line.startswith(message) for line in problems), problems


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            {"cron": "61 * * * *"},
            "snapshotter.schedules[1].cron: '61 * * * *' is not a valid cron expression",
        ),
        ({"cron": "* * *"}, "snapshotter.schedules[1].cron: '* * *' has 3 fields; use 5"),
        (
            {"cron": "@often"},
            "snapshotter.schedules[1].cron: '@often' is not a valid cron expression",
        ),
        (
            {"timezone": "Mars/Olympus"},
            "snapshotter.schedules[1].timezone: 'Mars/Olympus' is not a known time zone",
        ),
        ({"name": "hourly"}, "snapshotter.schedules[1].name: 'hourly' is used by another schedule"),
        ({"name": "Bad Name"}, "snapshotter.schedules[1].name: 'Bad Name' does not match"),
        (
            {"scope": "cluster"},
            "snapshotter.schedules[1].scope: 'cluster' is not allowed; allowed: instance, set",
        ),
        ({"jitter": -5}, "snapshotter.schedules[1].jitter: -5 is too small"),
        ({"every": "5m"}, "snapshotter.schedules[1].every: unknown key; allowed: name, cron"),
    ],
)
def test_bad_schedule_is_named(schedule: dict[str, object], message: str) -> None:
    doc = snapshotter_doc()
    second = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin"} | schedule
    doc["properties"]["schedules"].append(second)
    problems = problems_of(doc)
    assert any(line.startswith(message) for line in problems), problems


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


def test_aws_rules() -> None:
    doc = snapshotter_doc()
    aws = doc["properties"]["provider"]["aws"]
    doc["properties"]["provider"]["type"] = "aws-ebs"
    aws["access_key_id"] = "AKIAEXAMPLE"
    aws["backup_region"] = aws["region"]
    problems = problems_of(doc)
    assert any("set both access_key_id and secret_access_key" in p for p in problems), problems
    assert any(
        p.startswith("snapshotter.provider.aws.backup_region: must differ") for p in problems
    )


def test_tls_must_be_complete() -> None:
    doc = snapshotter_doc()
    doc["properties"]["api"]["tls"]["ca"] = (
        "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"
    )
    assert any(
        p.startswith("snapshotter.api.tls: set ca, certificate and private_key together")
        for p in problems_of(doc)
    )


def test_command_profile_needs_a_role_command() -> None:
    doc = snapshotter_doc()
    doc["properties"]["service"]["profile"] = "command"
    assert any(p.startswith("snapshotter.service.command.role: required") for p in problems_of(doc))


def test_errand_configs() -> None:
    restore = {"job": "restore", "properties": {"restore": spec_defaults("restore")["restore"]}}
    config = load_config(restore)
    assert isinstance(config, RestoreConfig)
    assert config.target == Target("latest")
    restore["properties"]["restore"]["target"] = "time:2026-11-29 08:00"
    assert any("needs an ISO 8601 timestamp with a zone" in p for p in problems_of(restore))
    restore["properties"]["restore"]["target"] = "yesterday"
    assert any(
        p.startswith("restore.restore.target: 'yesterday' is not allowed")
        for p in problems_of(restore)
    )
    restore["properties"]["restore"]["target"] = "set:2026-11-29T08:00:00Z-abc"
    restore["properties"]["restore"]["snapshots"] = {"redis-leader": "snap-1"}
    assert any("the key must be <instance group>/<index or id>" in p for p in problems_of(restore))
    listing = {"job": "list-snapshots", "properties": {"list": {"format": "xml"}}}
    assert any(
        p.startswith("list-snapshots.list.format: 'xml' is not allowed; allowed: table, json")
        for p in problems_of(listing)
    )
    take = {
        "job": "take-snapshot",
        "properties": {"take_snapshot": {"note": "x" * 300, "scope": "instance"}},
    }
    assert any(
        p.startswith("take-snapshot.take_snapshot.note: at most 255") for p in problems_of(take)
    )


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
