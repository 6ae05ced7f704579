"""Bad properties an operator may deploy, and the line that must name each.

One list for every place that judges properties: the config loader (tests/unit/
test_config.py), the job templates under the Director's and the bosh CLI's renderers
(spec/test_schema_agreement.py, which holds them to the loader's very lines), and a
local deployment that must refuse each before it stops anything
(tests/integration/test_bad_manifest.py). ``at_render`` is False for what only Python
can judge (time zone names, cron semantics, timestamps): pre-start refuses those.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from support.configdocs import spec_defaults

HOURLY = {"name": "hourly", "cron": "0 * * * *", "timezone": "UTC", "jitter": 300}
NIGHTLY = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Berlin"}
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
# An openstack-cinder provider the loader accepts, so that only the case's problem shows.
KEYSTONE_APP = {
    "auth_url": "https://keystone.example.com:5000/v3",
    "application_credential_id": "0123abcd",
    "application_credential_secret": "not-a-real-secret",
}


@dataclass(frozen=True)
class BadProperty:
    job: str
    path: tuple[str | int, ...]  # into the job's properties; an int indexes a list
    value: object
    message: str  # how the problem line starts
    at_render: bool = True
    # Other properties set with it, (path, value) each: a rule across keys needs them.
    also: tuple[tuple[tuple[str | int, ...], object], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.job}:" + ".".join(str(p) for p in self.path) + f"={self.value!r}"[:40]

    def properties(self) -> dict[str, Any]:
        """The job's properties as the Director binds them (spec defaults), with this one."""
        props = spec_defaults(self.job)
        if self.path[0] == "schedules":
            props["schedules"] = [dict(HOURLY)]
        for path, value in (*self.also, (self.path, self.value)):
            _put(props, path, value)
        return props

    def manifest_value(self) -> tuple[tuple[str, ...], object]:
        """Where to put it in a manifest's job properties (keys), and what: a list is
        given whole, because the Director binds a list property as one value."""
        # One ops-file operation holds one value; a case with ``also`` needs more.
        assert not self.also, f"{self.id} sets more than one property"
        keys: list[str] = []
        for part in self.path:
            if isinstance(part, int):
                full = self.properties()
                return tuple(keys), _reach(full, keys)
            keys.append(part)
        return tuple(keys), self.value


def _put(props: dict[str, Any], path: tuple[str | int, ...], value: object) -> None:
    node: Any = props
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    leaf = path[-1]
    value = copy.deepcopy(value)
    if isinstance(leaf, int) and leaf == len(node):
        node.append(value)
    elif isinstance(value, dict) and isinstance(node.get(leaf), dict):
        _merge(node[leaf], value)  # the Director binds each declared key on its own
    else:
        node[leaf] = value


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _reach(value: Any, keys: list[str]) -> Any:
    for key in keys:
        value = value[key]
    return value


def schedule(second: dict[str, object], message: str, *, at_render: bool = True) -> BadProperty:
    """A second schedule beside the default hourly one."""
    return BadProperty("snapshotter", ("schedules", 1), NIGHTLY | second, message, at_render)


CASES = [
    BadProperty(
        "snapshotter",
        ("provider", "type"),
        "gce",
        'snapshotter.provider.type: "gce" is not allowed; allowed: loopback, aws-ebs, '
        "openstack-cinder",
    ),
    BadProperty(
        "snapshotter",
        ("service", "profile"),
        "mysql",
        'snapshotter.service.profile: "mysql" is not allowed',
    ),
    BadProperty(
        "snapshotter",
        ("service", "redis", "port"),
        "6379",
        'snapshotter.service.redis.port: expected an integer, got a string "6379"',
    ),
    BadProperty(
        "snapshotter",
        ("service", "redis", "port"),
        70000,
        "snapshotter.service.redis.port: 70000 is too large; the maximum is 65535",
    ),
    BadProperty(
        "snapshotter", ("service", "jobs"), "redis", "snapshotter.service.jobs: expected a list"
    ),
    BadProperty(
        "snapshotter",
        ("service", "jobs"),
        ["redis; rm -rf /"],
        'snapshotter.service.jobs[0]: "redis; rm -rf /" is not a monit process name',
    ),
    BadProperty(
        "snapshotter",
        ("service", "postgres", "host"),
        "127.0.0.1 -c x",
        'snapshotter.service.postgres.host: "127.0.0.1 -c x" is not a host name, an IP address',
    ),
    BadProperty(
        "snapshotter",
        ("service", "command", "flush"),
        "redis-cli save",
        'snapshotter.service.command.flush: expected an argv list such as ["/path/to/cmd", '
        '"arg"], got a string',
    ),
    BadProperty(
        "snapshotter",
        ("service", "profile"),
        "command",
        "snapshotter.service.command.role: required when service.profile is command",
    ),
    BadProperty(
        "snapshotter", ("quiesce", "freeze"), "yes", "snapshotter.quiesce.freeze: expected true"
    ),
    BadProperty(
        "snapshotter",
        ("quiesce", "freeze_timeout"),
        -1,
        "snapshotter.quiesce.freeze_timeout: -1 is too small; the minimum is 1",
    ),
    BadProperty(
        "snapshotter",
        ("quiesce", "on_failure"),
        "ignore",
        'snapshotter.quiesce.on_failure: "ignore" is not allowed; allowed: abort, crash-consistent',
    ),
    BadProperty(
        "snapshotter",
        ("drain", "snapshot_on"),
        ["deploy", "reboot"],
        'snapshotter.drain.snapshot_on[1]: "reboot" is not allowed',
    ),
    BadProperty(
        "snapshotter",
        ("drain", "on_failure"),
        "ignore",
        'snapshotter.drain.on_failure: "ignore" is not allowed; allowed: fail, warn',
    ),
    BadProperty(
        "snapshotter", ("drain", "timeout"), 0, "snapshotter.drain.timeout: 0 is too small"
    ),
    BadProperty(
        "snapshotter",
        ("retention", "pre-deploy", "keep_last"),
        -3,
        "snapshotter.retention.pre-deploy.keep_last: -3 is too small; the minimum is 0",
    ),
    BadProperty(
        "snapshotter",
        ("retention", "pre-deploy", "max_age"),
        "forever",
        'snapshotter.retention.pre-deploy.max_age: "forever" is not a duration',
    ),
    BadProperty(
        "snapshotter",
        ("retention", "pre-deploy", "keep_forever"),
        1,
        "snapshotter.retention.pre-deploy.keep_forever: unknown key; allowed: keep_last",
    ),
    BadProperty(
        "snapshotter",
        ("retention", "nightly"),
        {"keep_last": 1},
        "snapshotter.retention.nightly: unknown key; allowed: pre-deploy",
    ),
    BadProperty("snapshotter", ("api", "port"), 0, "snapshotter.api.port: 0 is too small"),
    BadProperty(
        "snapshotter",
        ("api", "tls", "ca"),
        "not a pem",
        'snapshotter.api.tls.ca: "not a pem" is not a PEM',
    ),
    BadProperty(
        "snapshotter",
        ("api", "tls", "ca"),
        PEM_CERT,
        "snapshotter.api.tls: set ca, certificate and private_key together",
    ),
    BadProperty(
        "snapshotter",
        ("post_stop_snapshot",),
        "false",
        'snapshotter.post_stop_snapshot: expected true or false, got a string "false"',
    ),
    BadProperty(
        "snapshotter",
        ("provider", "aws", "endpoint"),
        "ftp://x",
        'snapshotter.provider.aws.endpoint: "ftp://x" is not an http:// or https:// URL',
    ),
    BadProperty(
        "snapshotter",
        ("provider",),
        {"type": "aws-ebs", "aws": {"region": ""}},
        "snapshotter.provider.aws.region: required when provider.type is aws-ebs",
    ),
    BadProperty(
        "snapshotter",
        ("provider",),
        {"type": "aws-ebs", "aws": {"access_key_id": "AKIAEXAMPLE"}},
        "snapshotter.provider.aws: set both access_key_id and secret_access_key, or neither",
    ),
    BadProperty(
        "snapshotter",
        ("provider",),
        {"type": "aws-ebs", "aws": {"region": "eu-west-1", "backup_region": "eu-west-1"}},
        "snapshotter.provider.aws.backup_region: must differ from provider.aws.region",
    ),
    BadProperty(
        "snapshotter",
        ("provider", "openstack", "interface"),
        "private",
        'snapshotter.provider.openstack.interface: "private" is not allowed; '
        "allowed: public, internal, admin",
    ),
    BadProperty(
        "snapshotter",
        ("provider",),
        {"type": "openstack-cinder", "openstack": {"application_credential_id": "abc"}},
        "snapshotter.provider.openstack: set both application_credential_id and "
        "application_credential_secret",
    ),
    BadProperty(
        "snapshotter",
        ("provider",),
        {"type": "openstack-cinder"},
        "snapshotter.provider.openstack.auth_url: required when provider.type is openstack-cinder",
        at_render=False,
    ),
    BadProperty(
        "snapshotter",
        ("backups",),
        {"cron": "15 3 * * *"},
        "snapshotter.provider.loopback.backup_store: required when backups.cron is set "
        "(backups need somewhere to go)",
    ),
    BadProperty(
        "snapshotter",
        ("backups", "deadline"),
        "soon",
        'snapshotter.backups.deadline: "soon" is not a duration',
    ),
    BadProperty(
        "snapshotter",
        ("provider", "loopback", "backup_store"),
        "backups",
        'snapshotter.provider.loopback.backup_store: "backups" is not an absolute path',
    ),
    BadProperty(
        "restore",
        ("restore", "source"),
        "tape",
        'restore.restore.source: "tape" is not allowed; allowed: auto, snapshot, backup',
    ),
    BadProperty(
        "snapshotter",
        ("backups", "cron"),
        "15 3 * * *",
        "snapshotter.provider.openstack.backup_container: required when backups.cron is set "
        "(backups need somewhere to go)",
        also=((("provider",), {"type": "openstack-cinder", "openstack": KEYSTONE_APP}),),
    ),
    BadProperty(
        "snapshotter",
        ("provider", "openstack", "backup_container"),
        "disk\nsnapshots",
        'snapshotter.provider.openstack.backup_container: "disk\\nsnapshots" is not a '
        "container name on one line",
    ),
    schedule(
        {"cron": "61 * * * *"},
        'snapshotter.schedules[1].cron: "61 * * * *": minute 61 is not in 0-59',
    ),
    schedule(
        {"cron": "0 0 * * 1#9"},
        'snapshotter.schedules[1].cron: "0 0 * * 1#9" is not a valid cron expression',
        at_render=False,
    ),
    schedule({"cron": "* * *"}, 'snapshotter.schedules[1].cron: "* * *" has 3 fields; use 5'),
    schedule({"cron": "@often"}, 'snapshotter.schedules[1].cron: "@often" is not a valid cron'),
    schedule(
        {"timezone": "Mars/Olympus"},
        'snapshotter.schedules[1].timezone: "Mars/Olympus" is not a known time zone',
        at_render=False,
    ),
    schedule(
        {"name": "hourly"},
        'snapshotter.schedules[1].name: "hourly" is already used by snapshotter.schedules[0]',
    ),
    schedule({"name": "Bad Name"}, 'snapshotter.schedules[1].name: "Bad Name" is not a schedule'),
    schedule(
        {"scope": "cluster"},
        'snapshotter.schedules[1].scope: "cluster" is not allowed; allowed: instance, set',
    ),
    schedule({"jitter": -5}, "snapshotter.schedules[1].jitter: -5 is too small"),
    schedule({"every": "5m"}, "snapshotter.schedules[1].every: unknown key; allowed: name, cron"),
    BadProperty(
        "snapshotter", ("schedules", 1), {"name": "x"}, "snapshotter.schedules[1].cron: is missing"
    ),
    BadProperty(
        "restore",
        ("restore", "target"),
        "time:2026-11-29 08:00",
        'restore.restore.target: "time:2026-11-29 08:00" is not latest, set:<set id>',
    ),
    BadProperty(
        "restore",
        ("restore", "target"),
        "time:yesterday",
        'restore.restore.target: "time:yesterday": time needs an ISO 8601 timestamp with a zone',
        at_render=False,
    ),
    BadProperty(
        "restore",
        ("restore", "target"),
        "yesterday",
        'restore.restore.target: "yesterday" is not latest, set:<set id>',
    ),
    BadProperty(
        "restore",
        ("restore", "snapshots"),
        {"redis-leader": "snap-1"},
        'restore.restore.snapshots.redis-leader: "redis-leader" is not <instance group>/<index',
    ),
    BadProperty(
        "restore",
        ("restore", "snapshots"),
        {"redis-leader/0": "snap 1"},
        'restore.restore.snapshots.redis-leader/0: "snap 1" is not a snapshot id',
    ),
    BadProperty(
        "restore",
        ("restore", "verify"),
        ["check", ""],
        "restore.restore.verify[1]: must not be empty",
    ),
    BadProperty(
        "list-snapshots",
        ("list", "format"),
        "xml",
        'list-snapshots.list.format: "xml" is not allowed; allowed: table, json',
    ),
    BadProperty(
        "take-snapshot",
        ("take_snapshot", "note"),
        "x" * 300,
        "take-snapshot.take_snapshot.note: is 300 characters long; at most 255",
    ),
    BadProperty(
        "take-snapshot",
        ("take_snapshot", "note"),
        "two\nlines",
        'take-snapshot.take_snapshot.note: "two\\nlines" is not one line of text',
    ),
    BadProperty(
        "take-snapshot",
        ("take_snapshot", "scope"),
        "cluster",
        'take-snapshot.take_snapshot.scope: "cluster" is not allowed; allowed: instance, set',
    ),
]
