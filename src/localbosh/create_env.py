"""Render a job's templates the way ``bosh create-env`` does, with the bosh CLI's own renderer.

``bosh create-env`` (how a Director itself is deployed) does not render like a
Director. The CLI builds a JSON context in Go (bosh-cli
``templatescompiler/job_evaluation_context.go``, ``RootContext``) and runs its own
Ruby script, embedded in the ``bosh`` binary (``templatescompiler/erbrenderer/
erb_renderer.rb``, ``go:embed``), once per template:
``ruby erb_renderer.rb CONTEXT.json SRC DST`` (``erb_renderer.go`` ``Render``).

This module does the same with the real CLI's script, read out of the ``bosh``
binary on PATH, so what renders here is what the CLI renders; only the JSON
context is built here, field by field as ``RootContext`` is. What templates see
there, unlike on a Director:

- ``spec.name``, ``spec.release``, ``spec.persistent_disk``, ``spec.ip`` are absent
  (nil), and ``spec.job.name`` is the *job's* name, not the instance group's;
- ``spec.index`` 0, ``spec.bootstrap`` true, ``spec.az`` ``unknown``, ``spec.id`` a
  new random UUID for every template;
- ``spec.networks`` is ``{"default": {"ip": "", "netmask": "", "gateway": ""}}``;
- no ``link``; ``if_link`` returns false without yielding (so ``.else`` fails);
- properties are the manifest's job properties (or, without them, the instance
  group's merged over the global ones), each declared name copied with its spec
  default; every hash's keys are sorted, inside arrays too (Go's ``json.Marshal``
  sorts map keys).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from localbosh.templates import RUBY_TIMEOUT_SECONDS
from localbosh.templates import RenderError
from localbosh.templates import TemplateError
from localbosh.templates import ruby_executable

# The script's first line and its last statement (erb_renderer.rb as of CLI 7.x): the
# embedded file lies between them, byte for byte, in the binary's read-only data.
SCRIPT_START = b"# Based on common/properties/template_evaluation_context.rb\n"
SCRIPT_END = b"  renderer.render(erb_template_path, rendered_template_path)\nend\n"


class CreateEnvRendererError(RuntimeError):
    """The bosh CLI, or the renderer inside it, cannot be had."""


def bosh_executable() -> str:
    bosh = shutil.which("bosh")
    if bosh is None:
        raise CreateEnvRendererError(
            "bosh is not on PATH: create-env renders templates with the renderer built into "
            "the bosh CLI (scripts/bootstrap installs the CLI)"
        )
    return bosh


@functools.cache
def _script_in(binary: Path, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only: a replaced binary is read again
    data = binary.read_bytes()
    start = data.find(SCRIPT_START)
    end = data.find(SCRIPT_END, start)
    if start < 0 or end < 0:
        raise CreateEnvRendererError(
            f"{binary} does not embed the create-env template renderer (erb_renderer.rb) "
            "where bosh CLI 7 does; this CLI version renders differently"
        )
    return data[start : end + len(SCRIPT_END)].decode()


def cli_renderer_script(bosh: str | None = None) -> str:
    """The text of ``erb_renderer.rb`` as embedded in the ``bosh`` binary."""
    binary = Path(bosh or bosh_executable()).resolve()
    stat = binary.stat()
    return _script_in(binary, stat.st_size, stat.st_mtime_ns)


def create_env_context(
    job_spec: Mapping[str, Any],
    job_properties: Mapping[str, Any] | None,
    *,
    deployment: str,
    address: str = "",
    instance_group_properties: Mapping[str, Any] | None = None,
    global_properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON ``RootContext.MarshalJSON`` builds for one template of one job.

    ``job_properties`` is the manifest's ``jobs[].properties`` of this job (None
    when the manifest has no ``properties:`` key: then the CLI's Ruby merges the
    instance group's over the global ones). ``address`` is the default network's
    IP (``deployment/instance/state/builder.go`` ``defaultAddress``); empty leaves
    it out, as ``omitempty`` does.
    """
    declared = job_spec.get("properties") or {}
    context: dict[str, Any] = {
        "index": 0,
        "id": str(uuid.uuid4()),  # uuidGen.Generate() on every MarshalJSON
        "az": "unknown",
        "bootstrap": True,
        "job": {"name": job_spec["name"]},
        "deployment": deployment,
        "networks": {"default": {"ip": "", "netmask": "", "gateway": ""}},
        "global_properties": dict(global_properties or {}),
        "cluster_properties": (
            dict(instance_group_properties) if instance_group_properties is not None else None
        ),
        "job_properties": dict(job_properties) if job_properties is not None else None,
        "default_properties": {
            name: (definition or {}).get("default") for name, definition in declared.items()
        },
    }
    if address:
        context["address"] = address
    return context


def render_job_create_env(
    job_dir: Path,
    job_properties: Mapping[str, Any] | None,
    *,
    deployment: str = "bosh",
    address: str = "10.0.0.6",
    instance_group_properties: Mapping[str, Any] | None = None,
    global_properties: Mapping[str, Any] | None = None,
    templates: Mapping[str, str] | None = None,
    bosh: str | None = None,
) -> dict[str, str]:
    """Render the job's templates and ``monit`` as ``bosh create-env`` would.

    The defaults are bosh-deployment's (deployment ``bosh``, ``internal_ip``
    10.0.0.6). Returns destination → content. The CLI stops at the first template
    that fails; so does this, raising :class:`RenderError` with the Ruby error line
    the CLI reports.
    """
    job_dir = Path(job_dir).resolve()
    spec = yaml.safe_load((job_dir / "spec").read_text())
    listed: Mapping[str, str] = templates if templates is not None else spec.get("templates") or {}
    pairs = [(job_dir / "templates" / src, src, dest) for src, dest in listed.items()]
    pairs.append((job_dir / "monit", "monit", "monit"))
    script = cli_renderer_script(bosh)
    rendered: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="create-env-render-") as tmp:
        work = Path(tmp)
        (work / "erb_renderer.rb").write_text(script)
        for n, (source, src, dest) in enumerate(pairs):
            context = create_env_context(
                spec,
                job_properties,
                deployment=deployment,
                address=address,
                instance_group_properties=instance_group_properties,
                global_properties=global_properties,
            )
            context_path = work / f"context-{n}.json"
            # sort_keys: Go's json.Marshal writes map keys sorted, at every depth.
            context_path.write_text(json.dumps(context, sort_keys=True))
            out = work / f"out-{n}"
            proc = subprocess.run(
                [
                    ruby_executable(),
                    str(work / "erb_renderer.rb"),
                    str(context_path),
                    str(source),
                    str(out),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=RUBY_TIMEOUT_SECONDS,
            )
            if proc.returncode != 0:
                raise _render_error(spec["name"], src, dest, proc.stderr)
            rendered[dest] = out.read_text()
    return rendered


def _render_error(job: str, src: str, dest: str, stderr: str) -> RenderError:
    # erb_renderer.rb raises "Error filling in template '<path>' for <job>/<index>
    # (line N: #<Error: message>)"; the CLI wraps it with the template's src and dst.
    # Ruby prints an uncaught error's class after the first line of its message and the
    # backtrace after the last ("\n\tfrom ..."); a message may span lines.
    found = re.search(r"Error filling in template .*?(?=\n\tfrom |\Z)", stderr, re.DOTALL)
    detail = found.group(0).replace(" (RuntimeError)", "") if found else stderr.strip()
    line = re.search(r"\(line (\d+):", detail)
    message = f"Rendering template src: {src}, dst: {dest}: {detail}"
    error = TemplateError(template=src, line=int(line.group(1)) if line else None, message=message)
    return RenderError(job, message, [error])
