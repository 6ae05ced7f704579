"""Load a rendered ``config.json`` into typed, validated objects.

Two passes, each naming every bad property by its path as the operator wrote it in the
manifest (``snapshotter.schedules[1].cron: ...``) with what is allowed:

1. the structure of the properties, from ``schema.json`` (schema.py): the same checks the
   job templates make while the Director renders them, so a manifest that gets here
   broken was rendered by something else (or by hand);
2. what only Python can judge: time zone names, cron semantics, timestamps, and what the
   Director itself filled in (``spec``, ``links``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import Literal
from typing import cast
from zoneinfo import ZoneInfo
from zoneinfo import ZoneInfoNotFoundError

from croniter import croniter

from disk_snapshots import schema
from disk_snapshots.errors import EXIT_CONFIG
from disk_snapshots.openstack_settings import OpenstackSettings
from disk_snapshots.openstack_settings import read_openstack
from disk_snapshots.restore.target import Target
from disk_snapshots.validate import Problems
from disk_snapshots.validate import Reader
from disk_snapshots.validate import ValidationError

# Every entry point exits with this code when its configuration is invalid (errors.py).
EXIT_INVALID_CONFIG = EXIT_CONFIG
PROVIDERS = schema.enum_of("snapshotter", "provider", "type")
PROFILES = schema.enum_of("snapshotter", "service", "profile")
RETENTION_KEYS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "max_age",
)


class ConfigError(ValidationError):
    """The rendered configuration is invalid; the message names every bad property."""

    exit_code = EXIT_CONFIG


@dataclass(frozen=True)
class AwsSettings:
    region: str
    endpoint: str
    access_key_id: str
    secret_access_key: str
    kms_key_id: str
    backup_region: str
    instance_id: str


ProviderType = Literal["loopback", "aws-ebs", "openstack-cinder"]


@dataclass(frozen=True)
class ProviderConfig:
    type: ProviderType
    loopback_pool: str
    aws: AwsSettings
    openstack: OpenstackSettings = field(default_factory=lambda: OpenstackSettings.unset())
    loopback_backup_store: str = ""


@dataclass(frozen=True)
class RedisSettings:
    port: int
    password: str


@dataclass(frozen=True)
class PostgresSettings:
    host: str  # empty: the instance's address
    port: int
    user: str
    database: str
    password: str


@dataclass(frozen=True)
class CommandSettings:
    role: tuple[str, ...]
    flush: tuple[str, ...]
    resume: tuple[str, ...]


@dataclass(frozen=True)
class ServiceConfig:
    profile: Literal["redis", "postgres", "command", "none"]
    jobs: tuple[str, ...]
    redis: RedisSettings
    postgres: PostgresSettings
    command: CommandSettings
    import_pre_start: tuple[tuple[str, ...], ...]
    import_post_start: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class QuiesceConfig:
    freeze: bool
    freeze_timeout: int
    on_failure: Literal["abort", "crash-consistent"]


@dataclass(frozen=True)
class DrainConfig:
    snapshot_on: frozenset[str]
    on_failure: Literal["fail", "warn"]
    timeout: int


@dataclass(frozen=True)
class Retention:
    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    max_age: timedelta | None = None


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    timezone: str
    jitter: int
    scope: Literal["instance", "set"]
    retention: Retention


@dataclass(frozen=True)
class BackupsConfig:
    """The ``backups`` property: one schedule, which snapshot, retention, deadline."""

    cron: str  # empty: no scheduled backups (bin/snapshots backup still makes one)
    timezone: str
    jitter: int
    source: Literal["instance", "set"]
    retention: Retention
    deadline: timedelta

    def schedule(self) -> Schedule:
        """As a schedule, for schedule.py's times and per-instance jitter."""
        return Schedule("backup", self.cron, self.timezone, self.jitter, "instance", self.retention)


NO_BACKUPS = BackupsConfig("", "UTC", 0, "instance", Retention(), timedelta(hours=6))


@dataclass(frozen=True)
class TlsConfig:
    ca: str
    certificate: str
    private_key: str

    @property
    def enabled(self) -> bool:
        return bool(self.ca)


@dataclass(frozen=True)
class ApiConfig:
    port: int
    tls: TlsConfig


@dataclass(frozen=True)
class InstanceSpec:
    """Who this instance is, as the Director's ``spec`` told the template."""

    deployment: str
    name: str
    index: int
    id: str
    az: str
    bootstrap: bool
    address: str
    persistent_disk: int
    release_name: str
    release_version: str


@dataclass(frozen=True)
class LinkInstance:
    name: str
    index: int
    id: str
    az: str
    address: str
    bootstrap: bool


@dataclass(frozen=True)
class Link:
    api_port: int
    service_profile: str
    instances: tuple[LinkInstance, ...]


@dataclass(frozen=True)
class SnapshotterConfig:
    spec: InstanceSpec
    provider: ProviderConfig
    service: ServiceConfig
    quiesce: QuiesceConfig
    drain: DrainConfig
    post_stop_snapshot: bool
    schedules: tuple[Schedule, ...]
    retention: Mapping[str, Retention]
    api: ApiConfig
    metrics_enabled: bool
    links: Mapping[str, Link]
    backups: BackupsConfig = NO_BACKUPS


@dataclass(frozen=True)
class TakeSnapshotConfig:
    note: str
    scope: Literal["instance", "set"]
    backup: bool = False


@dataclass(frozen=True)
class ListSnapshotsConfig:
    format: Literal["table", "json"]


@dataclass(frozen=True)
class RestoreConfig:
    target: Target
    snapshots: Mapping[str, str]
    dry_run: bool
    followers: Literal["resync", "restore"]
    verify: tuple[str, ...]
    timeout: int
    source: Literal["auto", "snapshot", "backup"] = "auto"


JobConfig = SnapshotterConfig | TakeSnapshotConfig | ListSnapshotsConfig | RestoreConfig


def load_config(source: Path | str | Mapping[str, object]) -> JobConfig:
    """Read a rendered ``config.json`` (a path, or the parsed document) for any of our jobs."""
    if isinstance(source, Mapping):
        document: object = dict(source)
        origin = "config"
    else:
        path = Path(source)
        origin = str(path)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError([f"{origin}: not found (is the job's config rendered?)"]) from None
        except json.JSONDecodeError as err:
            raise ConfigError([f"{origin}: not valid JSON: {err}"]) from None
    if not isinstance(document, dict):
        raise ConfigError([f"{origin}: expected a JSON object"])
    job = document.get("job")
    loaders: dict[str, Callable[[Reader], JobConfig]] = {
        "snapshotter": _snapshotter,
        "take-snapshot": _take_snapshot,
        "list-snapshots": _list_snapshots,
        "restore": _restore,
    }
    if job not in loaders:
        raise ConfigError([f"{origin}: job: {job!r} is not one of {', '.join(loaders)}"])
    structure = schema.check(str(job), document.get("properties"))
    if structure:
        raise ConfigError(structure)
    problems = Problems()
    config = loaders[job](Reader(document, str(job), problems))
    if problems.lines:
        raise ConfigError(problems.lines)
    return config


def load_snapshotter_config(source: Path | str | Mapping[str, object]) -> SnapshotterConfig:
    config = load_config(source)
    if not isinstance(config, SnapshotterConfig):
        raise ConfigError([f"{source}: not the snapshotter job's config"])
    return config


# The rendered document is {"job", "spec", "properties", "links"}; property paths in
# messages are reported relative to the job, as they appear in a manifest. The readers
# below see properties that passed schema.check: they only take the values out, and
# judge what the schema cannot.
def _props(doc: Reader) -> Reader:
    return Reader(doc.get("properties").value, doc.path, doc.problems)


def _snapshotter(doc: Reader) -> SnapshotterConfig:
    props = _props(doc)
    return SnapshotterConfig(
        spec=_spec(doc.get("spec")),
        provider=_provider(props.get("provider")),
        service=_service(props.get("service")),
        quiesce=_quiesce(props.get("quiesce")),
        drain=_drain(props.get("drain")),
        post_stop_snapshot=props.get("post_stop_snapshot").boolean(),
        schedules=_schedules(props.get("schedules")),
        retention={
            trigger: _retention(rule) for trigger, rule in props.get("retention").mapping().items()
        },
        api=_api(props.get("api")),
        metrics_enabled=props.get("metrics").get("enabled").boolean(),
        links=_links(doc.get("links")),
        backups=_backups(props.get("backups")),
    )


def _spec(spec: Reader) -> InstanceSpec:
    release = spec.get("release")
    disk = spec.get("persistent_disk")
    name = spec.get("name")
    deployment = spec.get("deployment").string(allow_empty=False)
    index = spec.get("index").integer(minimum=0)
    return InstanceSpec(
        deployment=deployment,
        # `bosh create-env` renders without spec.name or spec.release (bosh-cli
        # templatescompiler/job_evaluation_context.go RootContext has neither), and
        # allows one instance group per deployment (deployment/manifest/validator.go
        # "jobs must be of size 1"): there the deployment's name names the group.
        name=deployment if name.missing else name.string(allow_empty=False),
        index=index,
        # There spec.id is a new random UUID on every render (RootContext.MarshalJSON,
        # uuidGen.Generate) and the agent's /var/vcap/instance/id holds "0": neither
        # names the instance from one create-env to the next. Its one instance is
        # <deployment>/<index>, so that is its id: retention, the schedule's jitter and
        # the catalog keep matching it after a re-deploy or on a VM with a new disk.
        id=f"{deployment}-{index}" if name.missing else spec.get("id").string(allow_empty=False),
        az=spec.get("az").string() if not spec.get("az").missing else "",
        bootstrap=spec.get("bootstrap").boolean(),
        address=spec.get("address").string(allow_empty=False),
        # The Director omits persistent_disk for groups with named disks.
        persistent_disk=0 if disk.missing else disk.integer(minimum=0),
        release_name="" if release.missing else release.get("name").string(),
        release_version="" if release.missing else release.get("version").string(),
    )


def _provider(provider: Reader) -> ProviderConfig:
    aws = provider.get("aws")
    kind = provider.get("type").string()
    return ProviderConfig(
        type=cast(ProviderType, kind),
        loopback_pool=provider.get("loopback").get("pool").string(),
        aws=AwsSettings(
            region=aws.get("region").string(),
            endpoint=aws.get("endpoint").string(),
            access_key_id=aws.get("access_key_id").string(),
            secret_access_key=aws.get("secret_access_key").string(),
            kms_key_id=aws.get("kms_key_id").string(),
            backup_region=aws.get("backup_region").string(),
            instance_id=aws.get("instance_id").string(),
        ),
        openstack=read_openstack(provider.get("openstack"), required=kind == "openstack-cinder"),
        loopback_backup_store=_optional(provider.get("loopback").get("backup_store"), "").string(),
    )


def _service(service: Reader) -> ServiceConfig:
    redis = service.get("redis")
    postgres = service.get("postgres")
    command = service.get("command")
    imports = service.get("import")
    return ServiceConfig(
        profile=cast(
            Literal["redis", "postgres", "command", "none"], service.get("profile").string()
        ),
        jobs=tuple(j.string() for j in service.get("jobs").items()),
        redis=RedisSettings(
            port=redis.get("port").integer(), password=redis.get("password").string()
        ),
        postgres=PostgresSettings(
            host=postgres.get("host").string(),
            port=postgres.get("port").integer(),
            user=postgres.get("user").string(),
            database=postgres.get("database").string(),
            password=postgres.get("password").string(),
        ),
        command=CommandSettings(
            role=command.get("role").argv(),
            flush=command.get("flush").argv(),
            resume=command.get("resume").argv(),
        ),
        import_pre_start=tuple(c.argv() for c in imports.get("pre_start").items()),
        import_post_start=tuple(c.argv() for c in imports.get("post_start").items()),
    )


def _quiesce(quiesce: Reader) -> QuiesceConfig:
    return QuiesceConfig(
        freeze=quiesce.get("freeze").boolean(),
        freeze_timeout=quiesce.get("freeze_timeout").integer(),
        on_failure=cast(Literal["abort", "crash-consistent"], quiesce.get("on_failure").string()),
    )


def _drain(drain: Reader) -> DrainConfig:
    return DrainConfig(
        snapshot_on=frozenset(e.string() for e in drain.get("snapshot_on").items()),
        on_failure=cast(Literal["fail", "warn"], drain.get("on_failure").string()),
        timeout=drain.get("timeout").integer(),
    )


def _retention(rule: Reader) -> Retention:
    entries = rule.mapping()
    counts = {key: entries[key].integer() for key in RETENTION_KEYS[:-1] if key in entries}
    max_age = entries["max_age"].duration() if "max_age" in entries else None
    return Retention(max_age=max_age, **counts)


def _cron(value: Reader) -> str:
    """What croniter makes of an expression the schema found well formed."""
    expression = value.string()
    if not croniter.is_valid(expression):
        raise ValueError(f"{schema.show(expression)} {schema.CRON_INVALID}")
    return expression


def _timezone(value: Reader) -> str:
    name = value.string()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{schema.show(name)} is not a known time zone; use an IANA name such as UTC or "
            "Europe/Berlin"
        ) from None
    return name


def _schedules(schedules: Reader) -> tuple[Schedule, ...]:
    result: list[Schedule] = []
    for item in schedules.items():
        entries = item.mapping()
        # Left out (or null), a key takes the schema's default.
        scope = entries["scope"].string() if "scope" in entries else "instance"
        jitter = entries["jitter"].integer() if "jitter" in entries else 0
        result.append(
            Schedule(
                name=item.get("name").string(),
                cron=item.get("cron").check(_cron, ""),
                timezone=item.get("timezone").check(_timezone, "UTC")
                if not item.get("timezone").missing
                else "UTC",
                jitter=jitter,
                scope=cast(Literal["instance", "set"], scope),
                retention=_retention(entries["retention"])
                if "retention" in entries
                else Retention(),
            )
        )
    return tuple(result)


def _api(api: Reader) -> ApiConfig:
    tls = api.get("tls")
    return ApiConfig(
        port=api.get("port").integer(),
        tls=TlsConfig(
            ca=tls.get("ca").string(),
            certificate=tls.get("certificate").string(),
            private_key=tls.get("private_key").string(),
        ),
    )


def _links(links: Reader) -> dict[str, Link]:
    result: dict[str, Link] = {}
    if links.missing:
        return result
    for name, link in links.mapping(allowed=("snapshotter", "peers")).items():
        if link.missing:
            continue
        props = link.get("properties")
        result[name] = Link(
            api_port=props.get("api").get("port").integer(minimum=1, maximum=65535),
            service_profile=props.get("service").get("profile").string(choices=PROFILES),
            instances=tuple(
                LinkInstance(
                    name=i.get("name").string(allow_empty=False),
                    index=i.get("index").integer(minimum=0),
                    id=i.get("id").string(allow_empty=False),
                    az=i.get("az").string() if not i.get("az").missing else "",
                    address=i.get("address").string(allow_empty=False),
                    bootstrap=i.get("bootstrap").boolean(),
                )
                for i in link.get("instances").items()
            ),
        )
    return result


def _backups(backups: Reader) -> BackupsConfig:
    """Absent (a config rendered before backups existed, a test) means no schedule; that
    a schedule has somewhere to put its backups is one of the schema's rules."""
    if backups.missing:
        return NO_BACKUPS
    entries = backups.mapping()
    cron = entries["cron"].string() if "cron" in entries else ""
    deadline = NO_BACKUPS.deadline
    if "deadline" in entries:
        deadline = entries["deadline"].duration() or deadline
        if deadline < timedelta(minutes=1):
            entries["deadline"].fail("at least 1m: a backup copies a whole disk")
    return BackupsConfig(
        cron=entries["cron"].check(_cron, "") if cron else "",
        timezone=entries["timezone"].check(_timezone, "UTC") if "timezone" in entries else "UTC",
        jitter=entries["jitter"].integer() if "jitter" in entries else 0,
        source=cast(
            Literal["instance", "set"],
            entries["source"].string() if "source" in entries else "instance",
        ),
        retention=_retention(entries["retention"]) if "retention" in entries else Retention(),
        deadline=deadline,
    )


def _take_snapshot(doc: Reader) -> TakeSnapshotConfig:
    props = _props(doc).get("take_snapshot")
    return TakeSnapshotConfig(
        note=props.get("note").string(),
        scope=cast(Literal["instance", "set"], props.get("scope").string()),
        backup=_optional(props.get("backup"), False).boolean(),
    )


def _list_snapshots(doc: Reader) -> ListSnapshotsConfig:
    fmt = _props(doc).get("list").get("format").string()
    return ListSnapshotsConfig(format=cast(Literal["table", "json"], fmt))


def _target(value: Reader) -> Target:
    return Target.parse(value.string())


def _restore(doc: Reader) -> RestoreConfig:
    props = _props(doc).get("restore")
    return RestoreConfig(
        target=props.get("target").check(_target, Target("latest")),
        snapshots={key: value.string() for key, value in props.get("snapshots").mapping().items()},
        dry_run=props.get("dry_run").boolean(),
        followers=cast(Literal["resync", "restore"], props.get("followers").string()),
        verify=props.get("verify").argv(),
        timeout=props.get("timeout").integer(),
        source=cast(
            Literal["auto", "snapshot", "backup"],
            _optional(props.get("source"), "auto").string(),
        ),
    )


def _optional(value: Reader, default: object) -> Reader:
    """A property newer than some rendered configs (a test's, an older release's): absent
    reads as its default."""
    return Reader(default, value.path, value.problems) if value.missing else value
