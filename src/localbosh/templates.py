"""Render BOSH job templates the way the Director does, through ``render_template.rb``.

The rendering itself happens in Ruby (stdlib ERB, trim mode ``-``), because job
templates are Ruby and only Ruby evaluates them faithfully. This module builds the
request (job directory, manifest properties, instance spec, links), runs the Ruby
program with an argv list, and turns its answer into Python values or a
:class:`RenderError` carrying the Director's message.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

RENDERER = Path(__file__).with_name("render_template.rb")
LOG = logging.getLogger(__name__)

# Generous: rendering a job takes well under a second, but a loaded CI machine
# must not turn into a flaky failure, and a hung Ruby must not hang the suite.
RUBY_TIMEOUT_SECONDS = 60


class RubyNotFoundError(RuntimeError):
    """``ruby`` is not on PATH, so templates cannot be rendered at all."""


class RendererFailedError(RuntimeError):
    """The request was malformed, or Ruby failed outside any template."""


@dataclass(frozen=True)
class TemplateError:
    """One template that failed, as the Director reports it."""

    template: str | None
    line: int | None
    message: str


class RenderError(Exception):
    """A job's templates did not render; ``message`` is the Director's wording.

    ``str(error)`` is the full Director message, e.g.::

        - Unable to render templates for job 'snapshotter'. Errors are:
          - Error filling in template 'config.json.erb' (line 3: Can't find property '["a.b"]')
    """

    def __init__(self, job: str, message: str, errors: Sequence[TemplateError]) -> None:
        super().__init__(message)
        self.job = job
        self.message = message
        self.errors = tuple(errors)


@dataclass(frozen=True)
class InstanceSpec:
    """The ``spec`` a template sees.

    Defaults follow the bosh-template test helper (``InstanceSpec.new``), plus
    the two fields the Director always sets and the helper leaves out:
    ``release`` (added by the renderer) and ``persistent_disk`` (size in MiB, 0
    without a disk). Our jobs sit next to stateful services, so the default
    instance has a disk.
    """

    deployment: str = "my-deployment"
    name: str = "me"
    index: int = 0
    id: str = "xxxxxx-xxxxxxxx-xxxxx"
    az: str | None = "az1"
    bootstrap: bool = False
    address: str = "my.bosh.com"
    ip: str = "192.168.0.0"
    networks: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {"network1": {"foo": "bar", "ip": "192.168.0.0"}}
    )
    persistent_disk: int | None = 1024
    release_name: str = "disk-snapshots"
    release_version: str = "0+dev.1"
    dns_domain_name: str = "bosh"

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "deployment": self.deployment,
            "name": self.name,
            "index": self.index,
            "id": self.id,
            "az": self.az,
            "bootstrap": self.bootstrap,
            "address": self.address,
            "ip": self.ip,
            "networks": _plain(self.networks),
            "dns_domain_name": self.dns_domain_name,
            "job": {"name": self.name},
            "release": {"name": self.release_name, "version": self.release_version},
        }
        # The Director omits the key for groups with several named disks.
        if self.persistent_disk is not None:
            spec["persistent_disk"] = self.persistent_disk
        return spec


@dataclass(frozen=True)
class LinkInstance:
    """One instance of a consumed link; defaults follow the test helper's ``LinkInstance``.

    These are all the fields a template can read: the Director sends no per-instance
    properties (``deployment_plan/links/link.rb`` ``Link#spec``). ``address`` is the
    instance's IP unless the deployment's ``features.use_dns_addresses`` asks for
    DNS names (``network_settings.rb`` ``link_network_address``).
    """

    name: str = "i-name"
    id: str = "jkl8098"
    index: int = 4
    az: str | None = "az4"
    address: str = "link.instance.fake.example.com"
    bootstrap: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "index": self.index,
            "az": self.az,
            "address": self.address,
            "bootstrap": self.bootstrap,
        }


@dataclass(frozen=True)
class Link:
    """A consumed link as the Director hands it to templates (``Link#spec``, filtered
    by ``TemplateSpec#spec``).

    ``properties`` are the provider's exported properties (nested). The provider's
    ``instance_group``, ``default_network``, ``deployment_name`` and ``domain`` make
    ``link(...).address``: the DNS query ``q-s0.<group>.<network>.<deployment>.<domain>``
    (``dns/dns_encoder.rb``). ``address`` is set for manual links only (a manifest's
    ``consumes: {x: {instances: ..., address: ...}}``), and is then what
    ``link(...).address`` returns.
    """

    instances: Sequence[LinkInstance] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)
    instance_group: str = "i-name"
    default_network: str = "default"
    deployment_name: str = "my-deployment"
    domain: str = "bosh"
    use_short_dns_addresses: bool = False
    use_link_dns_names: bool = False
    address: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "instances": [i.to_dict() for i in self.instances],
            "properties": _plain(self.properties),
            "instance_group": self.instance_group,
            "default_network": self.default_network,
            "deployment_name": self.deployment_name,
            "domain": self.domain,
            "use_short_dns_addresses": self.use_short_dns_addresses,
            "use_link_dns_names": self.use_link_dns_names,
        }
        if self.address is not None:
            data["address"] = self.address
        return data


def default_instance_spec(**overrides: Any) -> InstanceSpec:
    """The test helper's default instance, with any field replaced."""
    return InstanceSpec(**overrides)


def undeclared_properties(properties: Mapping[str, Any], declared: Iterable[str]) -> list[str]:
    """Dotted paths set in ``properties`` that no declared property covers.

    The Director silently drops them (``bind_properties`` walks the spec, not
    the manifest), so a typo in a manifest would quietly fall back to the
    default; this is how to notice. A path is covered when a declared name
    equals it or is a prefix of it (``retention`` declared as a whole hash
    covers ``retention.manual.keep_last``). Null values and empty hashes on the
    way to declared names set nothing, so they are not reported.
    """
    names = set(declared)
    found: list[str] = []

    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:n]) in names for n in range(1, len(parts) + 1))

    def leads_to_declared(path: str) -> bool:
        return any(name.startswith(path + ".") for name in names)

    def walk(value: Mapping[str, Any], prefix: str) -> None:
        for key, child in value.items():
            path = f"{prefix}{key}"
            if covered(path):
                continue
            if isinstance(child, Mapping) and child:
                walk(child, path + ".")
            elif (child is None or isinstance(child, Mapping)) and leads_to_declared(path):
                continue
            else:
                found.append(path)

    walk(properties, "")
    return found


def ruby_executable() -> str:
    ruby = shutil.which("ruby")
    if ruby is None:
        raise RubyNotFoundError(
            "ruby is not on PATH: job templates are ERB and render only with Ruby "
            "(Debian: apt-get install ruby)"
        )
    return ruby


def render_job(
    job_dir: Path,
    properties: Mapping[str, Any],
    spec: InstanceSpec | Mapping[str, Any] | None = None,
    links: Mapping[str, Link | Mapping[str, Any]] | None = None,
    *,
    templates: Mapping[str, str] | None = None,
    az_numbers: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Render every template of the job in ``job_dir``, plus its ``monit`` file.

    ``properties`` are the manifest's properties for this job (nested, as in
    the manifest); spec defaults are merged and undeclared ones dropped, as the
    Director does. ``templates`` replaces the spec's source → destination map.
    ``az_numbers`` are the Director's numbers for AZs, which
    ``link(...).address(azs: [...])`` encodes. Links the job's spec does not consume
    are dropped with the Director's warning (logged), as a Director drops them.
    Returns destination path (relative to ``/var/vcap/jobs/<job>``) → content.
    Raises :class:`RenderError` with the Director's message when a template fails.
    """
    request: dict[str, Any] = {
        "mode": "render",
        "job_dir": str(Path(job_dir).resolve()),
        "properties": _plain(properties),
        "spec": _spec_dict(spec),
        "links": {name: _link_dict(link) for name, link in (links or {}).items()},
        "dns": {"azs": dict(az_numbers or {})},
    }
    if templates is not None:
        request["templates"] = dict(templates)
    proc = _run(request)
    if proc.returncode == 0:
        if proc.stderr.strip():
            # The Director's planning warnings, and whatever templates printed: on a
            # Director both land in its log.
            LOG.warning("%s: %s", Path(job_dir).name, proc.stderr.strip())
        rendered = json.loads(proc.stdout)
        if not isinstance(rendered, dict):
            raise RendererFailedError(f"{RENDERER.name} answered {rendered!r}, not an object")
        return {str(dest): str(content) for dest, content in rendered.items()}
    answer = _json_answer(proc) if proc.returncode == 1 else None
    if isinstance(answer, dict) and "error" in answer:
        errors = [
            TemplateError(template=e.get("template"), line=e.get("line"), message=e["message"])
            for e in answer.get("template_errors", [])
        ]
        job = answer.get("job") or Path(job_dir).name
        raise RenderError(str(job), str(answer["error"]), errors)
    raise RendererFailedError(_describe_failure(proc, job_dir))


def check_erb_syntax(job_dir: Path) -> list[str]:
    """Every ``monit``/template of the job whose ERB does not compile (empty when all do).

    Nothing is evaluated, so no properties are needed. Each entry names the
    file and line, e.g. ``snapshotter/config.json.erb:4: syntax error, ...``.
    """
    proc = _run({"mode": "check", "job_dir": str(Path(job_dir).resolve())})
    if proc.returncode != 0:
        raise RendererFailedError(_describe_failure(proc, job_dir))
    answer = json.loads(proc.stdout)
    return [str(e) for e in answer["errors"]]


def _run(request: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # The renderer needs the standard library only; skipping RubyGems
        # halves Ruby's start-up, which is most of a render's cost.
        [ruby_executable(), "--disable-gems", str(RENDERER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
        timeout=RUBY_TIMEOUT_SECONDS,
    )


def _json_answer(proc: subprocess.CompletedProcess[str]) -> Any:
    # Ruby also exits 1 when it dies of an uncaught exception; only a JSON
    # answer is a render failure, anything else is the renderer's own fault.
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None


def _describe_failure(proc: subprocess.CompletedProcess[str], job_dir: Path) -> str:
    detail = proc.stderr.strip() or proc.stdout.strip() or "no output"
    return f"rendering {job_dir} failed (exit {proc.returncode}): {detail}"


def _spec_dict(spec: InstanceSpec | Mapping[str, Any] | None) -> dict[str, Any]:
    if spec is None:
        return InstanceSpec().to_dict()
    if isinstance(spec, InstanceSpec):
        return spec.to_dict()
    return _plain(spec)


def _link_dict(link: Link | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(link, Link):
        return link.to_dict()
    return _plain(link)


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-only deep copy: the request never shares the caller's objects,
    and a value JSON cannot carry fails here, naming its type, not in Ruby."""
    return {str(k): _plain_value(v) for k, v in value.items()}


def _plain_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _plain(value)
    if isinstance(value, list | tuple):
        return [_plain_value(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be passed to a template")
