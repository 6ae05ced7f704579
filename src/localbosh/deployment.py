"""From an interpolated manifest to what each instance should run.

Releases are found on disk (a release directory, the way `bosh deploy` takes
`version: create` + `url: file://DIR`), instance groups and their jobs are read
with the job specs, links are resolved the way the Director resolves them, and
every job is rendered with `localbosh.templates.render_job` for each instance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from localbosh.agent import Identity
from localbosh.agent import RenderedJob
from localbosh.dns import DOMAIN as DNS_DOMAIN
from localbosh.dns import NETWORK as DNS_NETWORK
from localbosh.templates import InstanceSpec
from localbosh.templates import render_job

REPO_ROOT = Path(__file__).resolve().parents[2]


class ManifestError(Exception):
    pass


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    path: Path


@dataclass(frozen=True)
class JobSpec:
    name: str
    release: Release
    dir: Path
    templates: Mapping[str, str]
    packages: tuple[str, ...]
    provides: tuple[Mapping[str, Any], ...]
    consumes: tuple[Mapping[str, Any], ...]
    properties: Mapping[str, Any]

    @property
    def is_errand(self) -> bool:
        return "bin/run" in self.templates.values()


@dataclass(frozen=True)
class GroupJob:
    spec: JobSpec
    properties: Mapping[str, Any]
    consumes: Mapping[str, Any]
    provides: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Group:
    name: str
    instances: int
    azs: tuple[str, ...]
    jobs: tuple[GroupJob, ...]
    persistent_disk: int
    lifecycle: str = "service"
    env: Mapping[str, Any] = field(default_factory=dict)


def _release_dir_name(path: Path) -> str | None:
    final = path / "config" / "final.yml"
    if not final.exists():
        return None
    data = yaml.safe_load(final.read_text()) or {}
    name = data.get("final_name") or data.get("name")
    return str(name) if name else None


def default_release_dirs() -> list[Path]:
    """Where releases named without a url are looked for: this repo and the test fixtures."""
    dirs = [REPO_ROOT]
    fixtures = REPO_ROOT / "tests" / "fixtures"
    if fixtures.is_dir():
        dirs += sorted(p for p in fixtures.iterdir() if p.is_dir())
    return dirs


def resolve_releases(manifest: Mapping[str, Any], manifest_dir: Path) -> dict[str, Release]:
    releases: dict[str, Release] = {}
    known = {n: d for d in default_release_dirs() if (n := _release_dir_name(d))}
    for entry in manifest.get("releases") or []:
        name = str(entry.get("name", ""))
        url = str(entry.get("url") or "")
        if url.startswith("file://"):
            path = Path(url[len("file://") :])
            if not path.is_absolute():
                path = (manifest_dir / path).resolve()
        elif url:
            raise ManifestError(
                f"release '{name}': only file:// release directories are supported "
                f"locally, got {url!r}"
            )
        elif name in known:
            path = known[name]
        else:
            raise ManifestError(
                f"release '{name}' not found: give `url: file://<release dir>` "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
        found = _release_dir_name(path)
        if found != name:
            raise ManifestError(
                f"release '{name}': {path} is not that release's directory "
                f"(config/final.yml names {found!r})"
            )
        releases[name] = Release(name, str(entry.get("version", "create")), path)
    return releases


def load_job(release: Release, name: str) -> JobSpec:
    d = release.path / "jobs" / name
    spec_file = d / "spec"
    if not spec_file.exists():
        raise ManifestError(f"Job '{name}' not found in release '{release.name}' ({d})")
    spec = yaml.safe_load(spec_file.read_text()) or {}
    return JobSpec(
        name=name,
        release=release,
        dir=d,
        templates=dict(spec.get("templates") or {}),
        packages=tuple(spec.get("packages") or ()),
        provides=tuple(spec.get("provides") or ()),
        consumes=tuple(spec.get("consumes") or ()),
        properties=dict(spec.get("properties") or {}),
    )


def parse_groups(manifest: Mapping[str, Any], releases: Mapping[str, Release]) -> list[Group]:
    groups = []
    for ig in manifest.get("instance_groups") or []:
        gname = str(ig.get("name"))
        jobs = []
        for j in ig.get("jobs") or []:
            rel = releases.get(str(j.get("release")))
            if rel is None:
                raise ManifestError(
                    f"Instance group '{gname}' job '{j.get('name')}' references release "
                    f"'{j.get('release')}', which is not in `releases`"
                )
            jobs.append(
                GroupJob(
                    spec=load_job(rel, str(j["name"])),
                    properties=dict(j.get("properties") or {}),
                    consumes=dict(j.get("consumes") or {}),
                    provides=dict(j.get("provides") or {}),
                )
            )
        disk = ig.get("persistent_disk", 0) or 0
        if not isinstance(disk, int):
            raise ManifestError(
                f"Instance group '{gname}': persistent_disk must be a size in MiB, got {disk!r} "
                "(persistent_disk_type needs a cloud config, which the local deployment has not)"
            )
        groups.append(
            Group(
                name=gname,
                instances=int(ig.get("instances", 0)),
                azs=tuple(ig.get("azs") or ("z1",)),
                jobs=tuple(jobs),
                persistent_disk=disk,
                lifecycle=str(ig.get("lifecycle", "service")),
                env=dict(ig.get("env") or {}),
            )
        )
    return groups


# -- links ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    group: str
    job: GroupJob
    name: str
    alias: str
    type: str
    properties: tuple[str, ...]


def providers(groups: Sequence[Group]) -> list[Provider]:
    found = []
    for g in groups:
        for j in g.jobs:
            for p in j.spec.provides:
                cfg = j.provides.get(p["name"], {})
                if p["name"] in j.provides and cfg is None:
                    continue  # `provides: {x: nil}` disables the provider
                alias = (cfg or {}).get("as", p["name"])
                found.append(
                    Provider(
                        g.name, j, p["name"], alias, p["type"], tuple(p.get("properties") or ())
                    )
                )
    return found


def resolve_links(groups: Sequence[Group]) -> dict[tuple[str, str], dict[str, Provider | None]]:
    """(group, job) -> consumed link name -> provider (None when optional and absent).

    Explicit `from:` matches a provider's alias (its `as:` or its name) and type;
    otherwise the only provider of that type in the deployment is used. Errors are
    collected and raised together, like the Director's link resolution.
    """
    provs = providers(groups)
    result: dict[tuple[str, str], dict[str, Provider | None]] = {}
    errors = []
    for g in groups:
        for j in g.jobs:
            links: dict[str, Provider | None] = {}
            for c in j.spec.consumes:
                cname, ctype, optional = c["name"], c["type"], bool(c.get("optional", False))
                where = (
                    f"link '{cname}' with type '{ctype}' from job '{j.name}' "
                    f"in instance group '{g.name}'"
                )
                if cname in j.consumes and j.consumes[cname] is None:
                    links[cname] = None  # `consumes: {x: nil}` blocks implicit linking
                    continue
                cfg = j.consumes.get(cname) or {}
                if "from" in cfg:
                    matches = [p for p in provs if p.alias == cfg["from"] and p.type == ctype]
                    if not matches:
                        errors.append(
                            f"Failed to resolve {where}: no provider named '{cfg['from']}'"
                        )
                        continue
                else:
                    matches = [p for p in provs if p.type == ctype]
                    if not matches:
                        if not optional:
                            errors.append(f"Failed to resolve {where}: No link providers found")
                        links[cname] = None
                        continue
                if len(matches) > 1:
                    names = ", ".join(f"{p.group}.{p.job.name}.{p.alias}" for p in matches)
                    errors.append(
                        f"Failed to resolve {where}: Multiple link providers found: {names}"
                    )
                    continue
                links[cname] = matches[0]
            result[(g.name, j.name)] = links
    if errors:
        raise ManifestError(
            "Failed to resolve links from deployment. See errors below:\n"
            + "\n".join(f"  - {e}" for e in errors)
        )
    return result


def _dig(props: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    cur: Any = props
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def link_properties(provider: Provider) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in provider.properties:
        found, value = _dig(provider.job.properties, name)
        if not found or value is None:
            value = (provider.job.spec.properties.get(name) or {}).get("default")
        _set(out, name, value)
    return out


def link_for_template(provider: Provider, instances: Sequence[Identity]) -> dict[str, Any]:
    """The link as the Director's TemplateSpec passes it (deployment_plan/links/link.rb
    Link#spec): instance addresses are IPs (no features.use_dns_addresses), and
    link(...).address is the provider group's DNS query, which localbosh.dns resolves."""
    members = [i for i in instances if i.group == provider.group]
    return {
        "instances": [
            {
                "name": i.group,
                "id": i.id,
                "index": i.index,
                "az": i.az,
                "address": i.address,
                "bootstrap": i.bootstrap,
            }
            for i in members
        ],
        "properties": link_properties(provider),
        "instance_group": provider.group,
        "default_network": DNS_NETWORK,
        "deployment_name": members[0].deployment if members else "",
        "domain": DNS_DOMAIN,
        "use_short_dns_addresses": False,
        "use_link_dns_names": False,
    }


# -- rendering --------------------------------------------------------------------------


def instance_spec(ident: Identity, group: Group, job: GroupJob) -> dict[str, Any]:
    spec = InstanceSpec(
        deployment=ident.deployment,
        name=ident.group,
        index=ident.index,
        id=ident.id,
        az=ident.az,
        bootstrap=ident.bootstrap,
        address=ident.address,
        ip=ident.address,
        networks={
            DNS_NETWORK: {
                "ip": ident.address,
                "netmask": "255.0.0.0",
                "gateway": "127.0.0.1",
                "default": ["dns", "gateway"],
                "dns_record_name": (
                    f"{ident.index}.{ident.group}.{DNS_NETWORK}.{ident.deployment}.{DNS_DOMAIN}"
                ),
            }
        },
        persistent_disk=group.persistent_disk,
        release_name=job.spec.release.name,
        release_version=job.spec.release.version,
    ).to_dict()
    return spec


def render_instance(
    ident: Identity,
    group: Group,
    links: Mapping[tuple[str, str], Mapping[str, Provider | None]],
    all_instances: Sequence[Identity],
    az_numbers: Mapping[str, int] | None = None,
) -> list[RenderedJob]:
    rendered = []
    for job in group.jobs:
        tmpl_links = {
            name: link_for_template(p, all_instances)
            for name, p in links.get((group.name, job.name), {}).items()
            if p is not None
        }
        files = render_job(
            job.spec.dir,
            job.properties,
            instance_spec(ident, group, job),
            tmpl_links,
            az_numbers=az_numbers,
        )
        digest = hashlib.sha1(  # noqa: S324 (a content fingerprint, as BOSH uses sha1)
            json.dumps(files, sort_keys=True).encode()
        ).hexdigest()
        rendered.append(
            RenderedJob(job.name, job.spec.release.name, files, job.spec.packages, digest)
        )
    return rendered


def configuration_hash(jobs: Sequence[RenderedJob]) -> str:
    h = hashlib.sha1()  # noqa: S324
    for job in jobs:
        h.update(f"{job.name}:{job.sha1}\n".encode())
    return h.hexdigest()
