"""What the bosh CLI prints with ``--json``, read into records (pure functions).

The CLI's JSON UI (cloudfoundry/bosh-cli ``ui/json_ui.go``) prints one document when a
command ends: ``{"Tables": [...], "Blocks": [...], "Lines": [...]}``; a table is
``{"Content", "Header": {key: title}, "Rows": [{key: text}], "Notes"}``, its keys the
titles lower-cased with ``_`` for every other character (``ui/table/headers.go``
``KeyifyHeader``), every cell a string (a list is joined with newlines, ``ValueStrings``).
Errors and "Exit code 1" are lines. The tables read here:

- ``instances --details`` (``cmd/instance_table.go``): ``instance`` is ``group/id``, then
  ``process_state``, ``az``, ``ips``, ``deployment``, ``state`` (started, stopped,
  detached), ``vm_cid``, ``vm_type``, ``disk_cids``, ``agent_id``, ``index``,
  ``bootstrap``, ``ignore``;
- ``ssh --results`` (``ssh/results_writer.go``, content ``results``): ``instance``
  (``group/id`` as the Director's SSH setup names the host), ``stdout``, ``stderr``,
  ``exit_code``, ``error``;
- ``disks --orphaned`` (``cmd/disks.go``, content ``disks``): ``disk_cid``, ``size``,
  ``deployment``, ``instance``, ``az``, ``orphaned_at``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass


class ShapeError(ValueError):
    """The CLI's output is not what its source says it prints."""


@dataclass(frozen=True)
class JsonTable:
    content: str
    header: Mapping[str, str]
    rows: tuple[Mapping[str, str], ...]


@dataclass(frozen=True)
class Envelope:
    tables: tuple[JsonTable, ...]
    blocks: tuple[str, ...]
    lines: tuple[str, ...]

    def table(self, content: str) -> JsonTable:
        found = next((t for t in self.tables if t.content == content), None)
        if found is None:
            raise ShapeError(f"the bosh CLI printed no {content!r} table")
        return found

    def message(self) -> str:
        """What explains a failure: the task's errors (the CLI's task reporter prints a
        task's error events as blocks, ``ui/task/reporter.go``), then the lines, without
        the CLI's closing "Exit code N"."""
        said = [b for b in self.blocks if "Error" in b]
        said += [line for line in self.lines if not line.startswith("Exit code")]
        return " ".join(" ".join(line.split()) for line in said) or "(the CLI said nothing)"


def _strings(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ShapeError(f"expected a list, got {type(raw).__name__}")
    return tuple(str(x) for x in raw)


def parse_envelope(text: str) -> Envelope:
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ShapeError(
            f"the bosh CLI's --json output is not JSON ({err}): {text[:200]!r}"
        ) from None
    if not isinstance(raw, dict) or not {"Tables", "Blocks", "Lines"} <= set(raw):
        raise ShapeError(f"not the bosh CLI's --json document: {text[:200]!r}")
    tables = []
    for t in raw["Tables"] or []:
        if not isinstance(t, dict) or not isinstance(t.get("Rows"), list):
            raise ShapeError(f"a table without rows: {str(t)[:200]!r}")
        rows = tuple(
            {str(k): str(v) for k, v in r.items()} for r in t["Rows"] if isinstance(r, dict)
        )
        tables.append(JsonTable(str(t.get("Content", "")), dict(t.get("Header") or {}), rows))
    return Envelope(tuple(tables), _strings(raw["Blocks"]), _strings(raw["Lines"]))


@dataclass(frozen=True)
class Instance:
    group: str
    id: str
    index: int | None
    process_state: str  # running, stopped, failing... ("" without a VM)
    state: str  # the Director's: started, stopped, detached
    az: str
    ips: tuple[str, ...]
    bootstrap: bool
    disk_cids: tuple[str, ...]
    vm_cid: str

    @property
    def slug(self) -> str:
        """``group/id``: the form every bosh command takes (attach-disk takes only this)."""
        return f"{self.group}/{self.id}"

    @property
    def label(self) -> str:
        return f"{self.group}/{self.index}" if self.index is not None else self.slug

    @property
    def has_vm(self) -> bool:
        return self.state != "detached" and bool(self.vm_cid)


def _lines(cell: str) -> tuple[str, ...]:
    return tuple(x for x in cell.split("\n") if x)


def instances(envelope: Envelope) -> list[Instance]:
    """The deployment's instances from ``instances --details``; process rows (``--ps``)
    are skipped."""
    found = []
    for row in envelope.table("instances").rows:
        if row.get("process"):
            continue
        group, _, instance_id = row.get("instance", "").partition("/")
        if not group or not instance_id or "state" not in row:
            raise ShapeError(f"an instances row without an instance or details: {dict(row)}")
        index = row.get("index", "")
        found.append(
            Instance(
                group=group,
                id=instance_id,
                index=int(index) if index.isdigit() else None,
                process_state=row.get("process_state", ""),
                state=row["state"],
                az=row.get("az", ""),
                ips=_lines(row.get("ips", "")),
                bootstrap=row.get("bootstrap") == "true",
                disk_cids=_lines(row.get("disk_cids", "")),
                vm_cid=row.get("vm_cid", ""),
            )
        )
    return found


@dataclass(frozen=True)
class SshResult:
    instance: str  # group/id
    stdout: str
    stderr: str
    exit_code: int
    error: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error


def ssh_results(envelope: Envelope) -> list[SshResult]:
    results = []
    for row in envelope.table("results").rows:
        code = row.get("exit_code", "")
        results.append(
            SshResult(
                instance=row.get("instance", ""),
                stdout=row.get("stdout", ""),
                stderr=row.get("stderr", ""),
                exit_code=int(code) if code.lstrip("-").isdigit() else -1,
                error=row.get("error", ""),
            )
        )
    return results


@dataclass(frozen=True)
class OrphanDisk:
    cid: str
    size: str
    deployment: str
    instance: str  # group/id
    az: str
    orphaned_at: str


def orphaned_disks(envelope: Envelope) -> list[OrphanDisk]:
    return [
        OrphanDisk(
            cid=row.get("disk_cid", ""),
            size=row.get("size", ""),
            deployment=row.get("deployment", ""),
            instance=row.get("instance", ""),
            az=row.get("az", ""),
            orphaned_at=row.get("orphaned_at", ""),
        )
        for row in envelope.table("disks").rows
    ]


def last_json(stdout: str) -> object:
    """What a ``bin/snapshots`` step printed: its whole stdout as JSON, else its last line
    that is (a login banner or a sudo lecture may come first)."""
    try:
        return json.loads(stdout)
    except ValueError:
        pass
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise ShapeError(f"no JSON in the output: {stdout.strip()[-200:]!r}")


def by_instance(results: Sequence[SshResult]) -> dict[str, SshResult]:
    return {r.instance: r for r in results}
