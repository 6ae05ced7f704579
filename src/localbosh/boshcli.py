"""The real bosh CLI, the one implementation of what the CLI does.

Found the way scripts/bootstrap installs it: `bosh` on PATH first, else the one
bootstrap put into this checkout's .venv/bin. Every call runs the
way reference/packaging-and-style.md §1.6 says: `-n` (never prompt), `--json`
(the CLI's own machine-readable output: `Blocks` for what it prints, `Lines`
for messages and errors), and a throw-away HOME, because the CLI keeps a cache
and config under ~/.bosh that a run must neither read nor leave behind.

Standard library only: scripts/update-blobs imports it before any venv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BoshCliError", "Output", "find", "run"]

# Where scripts/bootstrap installs the CLI when none is on PATH.
BOOTSTRAPPED = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "bosh"

# create-release of a release with a CPython source blob takes seconds; anything
# near this means the CLI hangs (a prompt despite -n, a stuck git).
TIMEOUT_S = 1800


class BoshCliError(Exception):
    """The CLI is missing, or it failed; the message is the CLI's own."""


@dataclass(frozen=True)
class Output:
    """What `bosh --json` printed: blocks (e.g. `int`'s YAML), lines, and tables."""

    blocks: tuple[str, ...]
    lines: tuple[str, ...]
    tables: tuple[Mapping[str, Any], ...]


def find() -> str:
    """Path of the bosh CLI, or BoshCliError saying how to get one."""
    on_path = shutil.which("bosh")
    if on_path is not None:
        return on_path
    if os.access(BOOTSTRAPPED, os.X_OK):
        return str(BOOTSTRAPPED)
    raise BoshCliError(
        f"the bosh CLI is neither on PATH nor at {BOOTSTRAPPED}: run scripts/bootstrap "
        "(it installs bosh 7.10.6), or put bosh on PATH"
    )


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> Output:
    """`bosh -n --json ARGS...` with a temporary HOME; BoshCliError if it fails.

    env: extra environment variables for the CLI (it runs git and tar itself).
    """
    cli = find()
    argv = [cli, "-n", "--json", *args]
    with tempfile.TemporaryDirectory(prefix="localbosh-bosh-home-") as home:
        try:
            proc = subprocess.run(
                argv,
                env={**os.environ, **(env or {}), "HOME": home},
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BoshCliError(f"bosh {' '.join(args)}: no answer after {timeout:.0f}s") from exc
    output = _parse(proc.stdout)
    if proc.returncode != 0 or output is None:
        # --json puts the error into Lines; stderr has what the CLI printed before it
        # got that far (flag parsing, a crash).
        said = [line for line in (output.lines if output else ()) if line != "Exit code 1"]
        detail = "\n".join([*said, proc.stderr.strip()] if proc.stderr.strip() else said)
        if output is None and not detail:
            detail = proc.stdout.strip()
        command = next((a for a in args if not a.startswith("-")), "")
        raise BoshCliError(f"bosh {command} failed: {detail or 'no output'}")
    return output


def _parse(stdout: str) -> Output | None:
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    return Output(
        blocks=tuple(str(b) for b in doc.get("Blocks") or ()),
        lines=tuple(str(line) for line in doc.get("Lines") or ()),
        tables=tuple(t for t in doc.get("Tables") or () if isinstance(t, dict)),
    )
