"""What the template specs share: the release's jobs and its example manifests.

A module of its own (not conftest) so spec files can import it by a name that
cannot collide with tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localbosh.templates import InstanceSpec
from localbosh.templates import Link
from localbosh.templates import LinkInstance

RELEASE_DIR = Path(__file__).resolve().parent.parent
JOBS_DIR = RELEASE_DIR / "jobs"
MANIFESTS_DIR = RELEASE_DIR / "manifests"
FIXTURE_JOBS = Path(__file__).resolve().parent / "fixtures" / "jobs"
RELEASE_NAME = "disk-snapshots"
JOB_NAMES = ("snapshotter", "take-snapshot", "list-snapshots", "restore")


def load_job_spec(job: str, jobs_dir: Path = JOBS_DIR) -> dict[str, Any]:
    spec = yaml.safe_load((jobs_dir / job / "spec").read_text())
    assert isinstance(spec, dict), f"jobs/{job}/spec is not a YAML mapping"
    return spec


def manifest_paths() -> list[Path]:
    """Every deployment manifest under manifests/ (ops files and vars files are not manifests).

    Globbed at collection time: manifests are added without touching these specs.
    """
    paths = []
    for path in sorted([*MANIFESTS_DIR.rglob("*.yml"), *MANIFESTS_DIR.rglob("*.yaml")]):
        if "operations" in path.relative_to(MANIFESTS_DIR).parts:
            continue
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "instance_groups" in doc:
            paths.append(path)
    return paths


@dataclass(frozen=True)
class ManifestJob:
    """One of our jobs in one instance group of an example manifest."""

    manifest: Path
    group: dict[str, Any]
    job: dict[str, Any]
    deployment: dict[str, Any]

    @property
    def where(self) -> str:
        rel = self.manifest.relative_to(RELEASE_DIR)
        return f"{rel}: instance_groups[{self.group['name']}].jobs[{self.job['name']}]"

    @property
    def properties(self) -> dict[str, Any]:
        props = self.job.get("properties") or {}
        assert isinstance(props, dict), f"{self.where}.properties is not a hash"
        return props

    def instance_specs(self) -> Iterator[InstanceSpec]:
        """One spec per instance, shaped the way the Director would fill it."""
        azs = self.group.get("azs") or [None]
        networks = self.group.get("networks") or [{"name": "default"}]
        net = networks[0]["name"]
        for index in range(int(self.group.get("instances", 1))):
            yield InstanceSpec(
                deployment=self.deployment["name"],
                name=self.group["name"],
                index=index,
                id=f"{self.group['name']}-{index}-0000-0000-000000000000",
                az=azs[index % len(azs)],
                bootstrap=index == 0,
                address=f"{index}.{self.group['name']}.{net}.{self.deployment['name']}.bosh",
                ip=f"10.0.0.{index + 10}",
                networks={net: {"ip": f"10.0.0.{index + 10}", "default": ["dns", "gateway"]}},
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


def manifest_jobs() -> list[ManifestJob]:
    found = []
    for path in manifest_paths():
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("instance_groups") or []:
            for job in group.get("jobs") or []:
                if job.get("release") == RELEASE_NAME:
                    found.append(ManifestJob(path, group, job, doc))
    return found


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
        candidates = [p for p in _providers(entry.deployment) if p[2]["type"] == consumed["type"]]
        if wanted is not None:
            candidates = [p for p in candidates if p[3] == wanted]
        if len(candidates) == 1:
            links[consumed["name"]] = _link_from(*candidates[0][:3])
    return links


def _providers(
    deployment: Mapping[str, Any],
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]]:
    for group in deployment.get("instance_groups") or []:
        for job in group.get("jobs") or []:
            if job.get("release") != RELEASE_NAME:
                continue
            spec = load_job_spec(job["name"])
            for provided in spec.get("provides") or []:
                cfg = (job.get("provides") or {}).get(provided["name"])
                if cfg == "nil":
                    continue
                alias = provided["name"]
                if isinstance(cfg, dict):
                    alias = cfg.get("as", alias)
                yield group, job, provided, alias


def _link_from(group: dict[str, Any], job: dict[str, Any], provided: dict[str, Any]) -> Link:
    spec = load_job_spec(job["name"])
    declared = spec.get("properties") or {}
    manifest_props = job.get("properties") or {}
    exported: dict[str, Any] = {}
    for name in provided.get("properties") or []:
        value = _lookup(manifest_props, name)
        if value is None:
            value = (declared.get(name) or {}).get("default")
        _set(exported, name, value)
    carrier = ManifestJob(Path(), group, job, {"name": "link"})
    instances = [
        LinkInstance(
            name=s.name, index=s.index, id=s.id, az=s.az, address=s.address, bootstrap=s.bootstrap
        )
        for s in carrier.instance_specs()
    ]
    return Link(instances=instances, properties=exported)


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
