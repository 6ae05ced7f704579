"""Generate ``docs/properties.md``, the job properties reference, from the job specs.

The specs are the one source of truth for property names, descriptions and
defaults (they are what the Director reads); the reference is derived from them
and a test fails when it falls behind.

    python -m localbosh.docs            # rewrite docs/properties.md
    python -m localbosh.docs --check    # exit 1 with a diff when it is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

DOC_PATH = Path("docs") / "properties.md"
REGENERATE = "python -m localbosh.docs"
_MISSING = object()


def _job_specs(release_dir: Path) -> list[dict[str, Any]]:
    specs = []
    for spec_path in sorted((release_dir / "jobs").glob("*/spec")):
        spec = yaml.safe_load(spec_path.read_text())
        if not isinstance(spec, dict):
            raise ValueError(f"{spec_path.relative_to(release_dir)} is not a YAML mapping")
        spec.setdefault("name", spec_path.parent.name)
        specs.append(spec)

    def is_errand(spec: Mapping[str, Any]) -> bool:
        return "bin/run" in (spec.get("templates") or {}).values()

    # Operators colocate the hook/daemon jobs first and add errands after.
    return sorted(specs, key=lambda s: (is_errand(s), str(s["name"])))


def _one_line(text: str) -> str:
    # Spec descriptions are wrapped YAML blocks; a table cell must be one line.
    return " ".join(text.split())


def _cell(text: str) -> str:
    # Pipes end a table cell even inside code spans; outside code spans, a
    # "<name>" placeholder would be swallowed as an HTML tag.
    parts = _one_line(text).replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _code(value: Any) -> str:
    rendered = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    # A backtick inside the value would end the code span early.
    fence = "``" if "`" in rendered else "`"
    pad = " " if fence == "``" else ""
    return _one_line(f"{fence}{pad}{rendered}{pad}{fence}").replace("|", "\\|")


def _default_cell(definition: Mapping[str, Any]) -> str:
    default = definition.get("default", _MISSING)
    example = definition.get("example", _MISSING)
    parts = []
    if default is not _MISSING:
        parts.append(_code(default))
    else:
        # Without a default, p() raises unless the manifest sets it.
        parts.append("*required*")
    if example is not _MISSING:
        parts.append(f"e.g. {_code(example)}")
    return "<br>".join(parts)


def render(release_dir: Path) -> str:
    """The reference as Markdown: per job, its description and a property table."""
    lines = [
        "# Job properties",
        "",
        f"<!-- Generated from jobs/*/spec by `{REGENERATE}`. Do not edit by hand. -->",
        "",
        "Set these under `jobs[].properties` of a deployment manifest, nested by the dots",
        "(`provider.type` is `provider: {type: ...}`). Properties a job does not declare",
        "are dropped by the Director without a warning.",
        "",
    ]
    specs = _job_specs(release_dir)
    lines += [f"- [`{s['name']}`](#{s['name']})" for s in specs]
    for spec in specs:
        name = str(spec["name"])
        lines += ["", f"## {name}", ""]
        description = spec.get("description")
        if isinstance(description, str) and description.strip():
            lines += [_one_line(description), ""]
        properties = spec.get("properties") or {}
        if not properties:
            lines.append("No properties.")
            continue
        lines += ["| Property | Description | Default |", "|---|---|---|"]
        for prop in sorted(properties):
            definition = properties[prop] if isinstance(properties[prop], Mapping) else {}
            described = definition.get("description")
            text = _cell(described) if isinstance(described, str) and described.strip() else ""
            lines.append(
                f"| `{prop}` | {text or '*(no description)*'} | {_default_cell(definition)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Generate docs/properties.md from the job specs."
    )
    parser.add_argument(
        "--release-dir",
        type=Path,
        default=Path.cwd(),
        help="release checkout (default: the current directory)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the file is out of date; write nothing"
    )
    args = parser.parse_args(argv)
    release_dir: Path = args.release_dir
    if not (release_dir / "jobs").is_dir():
        parser.error(f"{release_dir} has no jobs/ directory (use --release-dir)")
    target = release_dir / DOC_PATH
    wanted = render(release_dir)
    current = target.read_text() if target.exists() else ""
    if args.check:
        if current == wanted:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=f"{DOC_PATH} (committed)",
            tofile=f"{DOC_PATH} (from jobs/*/spec)",
        )
        sys.stderr.writelines(diff)
        print(f"{DOC_PATH} is out of date with jobs/*/spec; run: {REGENERATE}", file=sys.stderr)
        return 1
    if current != wanted:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(wanted)
        print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
