"""A stand-in for the ``ssh`` client (and the VM behind it) that the real bosh CLI runs for
``bosh ssh -c CMD``: it records its argv and answers the ``bin/snapshots`` step the
command names from a table of canned answers (FAKE_SSH_ANSWERS: action → [exit code,
stdout, stderr]), so the CLI's own ``--results`` table is what the test reads.

Run as ``python fake_ssh.py ARGS...`` by an ``ssh`` shim on PATH (install()).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

SNAPSHOTS = "/var/vcap/jobs/snapshotter/bin/snapshots"


def install(directory: Path, answers: dict[str, tuple[int, str, str]], log: Path) -> dict[str, str]:
    """An ``ssh`` on a PATH of its own; the environment the CLI needs to find it."""
    directory.mkdir(parents=True, exist_ok=True)
    table = directory / "answers.json"
    table.write_text(json.dumps(answers))
    shim = directory / "ssh"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(__file__)} "$@"\n')
    shim.chmod(0o755)
    return {
        "PATH": f"{directory}:{os.environ.get('PATH', '')}",
        "FAKE_SSH_ANSWERS": str(table),
        "FAKE_SSH_LOG": str(log),
    }


def main(argv: list[str]) -> int:
    with Path(os.environ["FAKE_SSH_LOG"]).open("a") as log:
        log.write(json.dumps(argv) + "\n")
    answers = json.loads(Path(os.environ["FAKE_SSH_ANSWERS"]).read_text())
    words = shlex.split(argv[-1]) if argv else []
    action = words[words.index(SNAPSHOTS) + 1] if SNAPSHOTS in words else argv[-1]
    code, out, err = answers.get(action, [127, "", f"sh: 1: {action}: not found\n"])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
