"""What the template specs share: the release's jobs and its example manifests.

A module of its own (not conftest) so spec files can import it by a name that
cannot collide with tests/conftest.py.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from localbosh.manifest import interpolate
from localbosh.templates import InstanceSpec
from localbosh.templates import Link
from localbosh.templates import LinkInstance
from localbosh.templates import undeclared_properties

RELEASE_DIR = Path(__file__).resolve().parent.parent
JOBS_DIR = RELEASE_DIR / "jobs"
MANIFESTS_DIR = RELEASE_DIR / "manifests"
OPS_DIR = MANIFESTS_DIR / "operations"
RELEASE_NAME = "disk-snapshots"
EXPECTED_JOBS = ("snapshotter", "take-snapshot", "list-snapshots", "restore")


def job_names() -> list[str]:
    """Every job directory: a job added later is covered without editing the specs."""
    return sorted(p.name for p in JOBS_DIR.iterdir() if (p / "spec").is_file())


def load_job_spec(job: str) -> dict[str, Any]:
    return copy.deepcopy(_parsed_job_spec(job))


# Link resolution reads the same specs for every instance of every case, and
# pure-Python YAML parsing would otherwise dominate the specs' run time.
@functools.cache
def _parsed_job_spec(job: str) -> dict[str, Any]:
    spec = yaml.safe_load((JOBS_DIR / job / "spec").read_text())
    assert isinstance(spec, dict), f"jobs/{job}/spec is not a YAML mapping"
    return spec


def rel(path: Path) -> str:
    return str(path.relative_to(RELEASE_DIR))


def manifest_paths() -> list[Path]:
    """Every deployment manifest under manifests/ (ops files and vars files are not manifests).

    Globbed at collection time, so manifests are added without touching these specs.
    """
    paths = []
    for path in sorted([*MANIFESTS_DIR.rglob("*.yml"), *MANIFESTS_DIR.rglob("*.yaml")]):
        if "operations" in path.relative_to(MANIFESTS_DIR).parts:
            continue
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "instance_groups" in doc:
            paths.append(path)
    return paths


def ops_paths(manifest: Path | None = None) -> list[Path]:
    """The ops files written for a manifest: those in the operations/ beside it
    (manifests/operations for the Director examples, manifests/local/operations for
    the local deployment)."""
    ops_dir = manifest.parent / "operations" if manifest is not None else OPS_DIR
    if not ops_dir.is_dir():
        return []
    return sorted([*ops_dir.glob("*.yml"), *ops_dir.glob("*.yaml")])


@dataclass(frozen=True)
class Case:
    """A manifest, alone or with one ops file: each is a deployment an operator may run."""

    manifest: Path
    ops: Path | None = None

    @property
    def label(self) -> str:
        return rel(self.manifest) + (f" -o {rel(self.ops)}" if self.ops else "")

    @property
    def id(self) -> str:
        return self.manifest.stem + (f"+{self.ops.stem}" if self.ops else "")

    @property
    def removes_our_jobs(self) -> bool:
        """The local deployment's ops file that brings Redis up without the snapshotter."""
        return self.ops is not None and self.ops.name == "without-snapshotter.yml"

    def document(self) -> dict[str, Any]:
        """The manifest with the ops file applied by `bosh int`; ((vars)) stay as written."""
        return interpolate(self.manifest, [self.ops] if self.ops else [])


def cases() -> list[Case]:
    found = []
    for manifest in manifest_paths():
        found.append(Case(manifest))
        found.extend(Case(manifest, ops) for ops in ops_paths(manifest))
    return found


@dataclass(frozen=True)
class ManifestJob:
    """One of our jobs in one instance group of a deployment manifest."""

    label: str
    group: dict[str, Any]
    job: dict[str, Any]
    deployment: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.label}: instance_groups[{self.group['name']}].jobs[{self.job['name']}]"

    @property
    def properties(self) -> dict[str, Any]:
        props = self.job.get("properties") or {}
        assert isinstance(props, dict), f"{self.where}.properties is not a hash"
        return props

    def instance_specs(self) -> Iterator[InstanceSpec]:
        """One spec per instance, filled the way the Director fills it."""
        azs = self.group.get("azs") or [None]
        networks = self.group.get("networks") or [{"name": "default"}]
        net = networks[0]["name"]
        deployment = str(self.deployment.get("name"))
        for index in range(int(self.group.get("instances", 1))):
            ip = f"10.0.0.{index + 10}"
            yield InstanceSpec(
                deployment=deployment,
                name=self.group["name"],
                index=index,
                id=f"{index:08d}-0000-4000-8000-{self.group['name'][:12].ljust(12, '0')}",
                az=azs[index % len(azs)],
                bootstrap=index == 0,
                address=f"{index}.{self.group['name']}.{net}.{deployment}.bosh",
                ip=ip,
                networks={net: {"ip": ip, "default": ["dns", "gateway"]}},
                persistent_disk=_disk_size(self.group),
                release_name=RELEASE_NAME,
            )


def _disk_size(group: Mapping[str, Any]) -> int:
    size = group.get("persistent_disk")
    if isinstance(size, int):
        return size
    # A disk type's size lives in the cloud config, not the manifest; any
    # non-zero size stands for "has a disk" here.
    return 1024 if group.get("persistent_disk_type") else 0


def manifest_jobs(doc: Mapping[str, Any], label: str) -> list[ManifestJob]:
    """Our release's jobs in the deployment (other releases' jobs are not ours to render)."""
    found = []
    for group in doc.get("instance_groups") or []:
        for job in group.get("jobs") or []:
            if job.get("release") == RELEASE_NAME:
                found.append(ManifestJob(label, group, job, dict(doc)))
    return found


def undeclared_in_manifest(doc: Mapping[str, Any], label: str) -> list[str]:
    """One line per manifest property that the job's spec does not declare."""
    problems = []
    for entry in manifest_jobs(doc, label):
        spec_path = JOBS_DIR / entry.job["name"] / "spec"
        if not spec_path.is_file():
            problems.append(f"{entry.where}: the release has no job '{entry.job['name']}'")
            continue
        declared = load_job_spec(entry.job["name"]).get("properties") or {}
        for path in undeclared_properties(entry.properties, declared):
            problems.append(
                f"{entry.where}.properties: '{path}' is not declared in "
                f"jobs/{entry.job['name']}/spec"
            )
    return problems


def manifest_links(entry: ManifestJob) -> dict[str, Link]:
    """The links the Director would give this job, resolved from the manifest.

    Enough of the Director's resolution for our release: a consumer's
    ``from:`` names a provider's alias (``as:`` or the link name); without it
    the one provider of the link's type in the deployment is used. Ambiguous or
    absent providers give no link, which our optional consumers accept.
    """
    spec = load_job_spec(entry.job["name"])
    consumes_cfg = entry.job.get("consumes") or {}
    links: dict[str, Link] = {}
    for consumed in spec.get("consumes") or []:
        cfg = consumes_cfg.get(consumed["name"])
        if cfg == "nil":
            continue
        wanted = cfg.get("from") if isinstance(cfg, dict) else None
        candidates = [p for p in _providers(entry) if p[2]["type"] == consumed["type"]]
        if wanted is not None:
            candidates = [p for p in candidates if p[3] == wanted]
        if len(candidates) == 1:
            links[consumed["name"]] = _link_from(entry, *candidates[0][:3])
    return links


def _providers(
    entry: ManifestJob,
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]]:
    for other in manifest_jobs(entry.deployment, entry.label):
        spec = load_job_spec(other.job["name"])
        for provided in spec.get("provides") or []:
            cfg = (other.job.get("provides") or {}).get(provided["name"])
            if cfg == "nil":
                continue
            alias = provided["name"]
            if isinstance(cfg, dict):
                alias = cfg.get("as", alias)
            yield other.group, other.job, provided, alias


def _link_from(
    entry: ManifestJob, group: dict[str, Any], job: dict[str, Any], provided: dict[str, Any]
) -> Link:
    declared = load_job_spec(job["name"]).get("properties") or {}
    manifest_props = job.get("properties") or {}
    exported: dict[str, Any] = {}
    for name in provided.get("properties") or []:
        value = _lookup(manifest_props, name)
        if value is None:
            value = (declared.get(name) or {}).get("default")
        _set(exported, name, value)
    provider = ManifestJob(entry.label, group, job, entry.deployment)
    instances = [
        LinkInstance(
            name=s.name, index=s.index, id=s.id, az=s.az, address=s.address, bootstrap=s.bootstrap
        )
        for s in provider.instance_specs()
    ]
    return Link(
        instances=instances,
        properties=exported,
        instance_group=str(group["name"]),
        deployment_name=str(entry.deployment.get("name")),
    )


def _lookup(props: Mapping[str, Any], dotted: str) -> Any:
    ref: Any = props
    for key in dotted.split("."):
        if not isinstance(ref, Mapping) or key not in ref:
            return None
        ref = ref[key]
    return ref


def _set(props: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        props = props.setdefault(key, {})
    props[last] = value


# Values an operator passes with -v. Variables the manifest declares under
# `variables:` are generated instead (like the Director's config server), so
# certificates are real PEM; anything else stays an opaque ((name)) string.
OPERATOR_VARS = {
    "deployment_name": "spec-deployment",
    "aws_region": "eu-west-1",
    "aws_backup_region": "eu-central-1",
    # manifests/operations/openstack-cinder.yml (bosh-deployment's openstack/cpi.yml names)
    "auth_url": "https://keystone.example.com:5000/v3",
    "region": "RegionOne",
    "openstack_domain": "Default",
    "openstack_project": "redis",
    "openstack_username": "bosh",
    "openstack_password": "not-a-real-password",
    "disk_snapshots_release_dir": "/tmp/disk-snapshots",
    "restore_target": "time:2026-11-29T08:00:00Z",
    # manifests/local/operations/openstack-cinder.yml: the Cinder zone and group type
    "az": "nova",
    "cinder_group_type": "consistent-snapshots",
    # manifests/local/operations/aws-ebs.yml: the moto server a test starts
    "aws_endpoint": "http://127.0.0.1:5000",
    "aws_instance_id": "i-0123456789abcdef0",
    # manifests/local/operations/backups.yml: where the loopback backups go
    "backup_store": "/var/lib/spec-backups",
}


def assert_renders_usably(job: str, files: dict[str, str], where: str) -> dict[str, Any]:
    """What every rendering of a job must satisfy; returns the parsed config.json."""
    from disk_snapshots.config import ConfigError
    from disk_snapshots.config import load_config

    spec = load_job_spec(job)
    assert set(files) == {*spec["templates"].values(), "monit"}, where
    for src, dest in spec["templates"].items():
        if dest.startswith("bin/"):
            # The kernel reads the interpreter from the first two bytes: no ERB
            # line, blank line or BOM may come before the shebang.
            source = (JOBS_DIR / job / "templates" / src).read_text()
            assert source.startswith("#!"), f"{where}: jobs/{job}/templates/{src} line 1"
            assert files[dest].startswith("#!"), f"{where}: rendered {dest} line 1"
    try:
        config = json.loads(files["config/config.json"])
    except json.JSONDecodeError as err:
        pytest.fail(
            f"{where}: config/config.json is not JSON: {err}\n{files['config/config.json']}"
        )
    assert config["job"] == job, where
    try:
        load_config(config)
    except ConfigError as err:
        pytest.fail(f"{where}: disk_snapshots.config rejects config/config.json: {err}")
    assert isinstance(config, dict)
    return config
