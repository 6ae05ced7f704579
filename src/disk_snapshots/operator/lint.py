"""``disk-snapshots lint MANIFEST [-o OPS]... [-v NAME=VALUE]...``: catch what the Director
would drop without a word.

The Director passes a job only the properties its spec declares and drops the rest
silently (bosh-director deployment_plan/job.rb ``bind_properties``): a typo such as
``restore.restor`` deploys, and the restore then runs with the default. The real
``bosh int`` interpolates the manifest and its ops files (so the manifest means here
what it means to the Director), then every job of this release, in instance groups and
addons, is checked against its spec: an undeclared key is an error naming the job, the
key, the closest declared names and why it matters; a declared property's parent that
is not a map is an error too.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from disk_snapshots.operator.errors import OperatorError
from disk_snapshots.operator.specs import ReleaseSpecs


@dataclass(frozen=True)
class Problem:
    where: str  # instance_groups/<group>/jobs/<job>/properties
    key: str  # the dotted property, as an operator writes it
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.message}"


@dataclass(frozen=True)
class JobUse:
    where: str
    job: str
    properties: object


def _jobs(manifest: Mapping[str, Any], release: str) -> Iterator[JobUse]:
    for section in ("instance_groups", "addons"):
        for holder in manifest.get(section) or []:
            if not isinstance(holder, dict):
                continue
            for job in holder.get("jobs") or []:
                if isinstance(job, dict) and job.get("release") == release:
                    where = f"{section}/{holder.get('name')}/jobs/{job.get('name')}/properties"
                    yield JobUse(where, str(job.get("name")), job.get("properties") or {})


def _walk(value: object, path: str, declared: Sequence[str], use: JobUse) -> Iterator[Problem]:
    if path in declared:
        return
    below = sorted(d for d in declared if d.startswith(path + "."))
    if below:
        if isinstance(value, dict):
            for key, child in value.items():
                yield from _walk(child, f"{path}.{key}", declared, use)
        else:
            yield Problem(use.where, path, f"must be a map holding {', '.join(below)}")
        return
    close = difflib.get_close_matches(path, declared, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    yield Problem(
        use.where,
        path,
        f"is not a property of the {use.job} job: the Director drops it without a word and "
        f"the job runs with its default{hint}",
    )


def check(manifest: Mapping[str, Any], specs: ReleaseSpecs) -> tuple[list[Problem], int]:
    """Every problem with this release's jobs' properties, and how many jobs were checked."""
    problems: list[Problem] = []
    checked = 0
    for use in _jobs(manifest, specs.release):
        declared = specs.jobs.get(use.job)
        if declared is None:
            known = ", ".join(sorted(specs.jobs))
            problems.append(
                Problem(
                    use.where, use.job, f"the {specs.release} release has no such job ({known})"
                )
            )
            continue
        checked += 1
        if not isinstance(use.properties, dict):
            problems.append(Problem(use.where, "properties", "must be a map"))
            continue
        for key, value in use.properties.items():
            problems.extend(_walk(value, str(key), declared, use))
    return problems, checked


def parse(text: str) -> dict[str, Any]:
    import yaml  # a jumpbox install has it; the VMs never lint

    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise OperatorError("the interpolated manifest is not a YAML map")
    return doc
