"""Every entry point, given a bad argument or a broken provider: one line, the documented
exit code (errors.py, README "Exit codes"), no traceback.

Each runs as BOSH or an operator runs it, ``python -m disk_snapshots ...`` in its own
process (cli.main, on a VM root with a real loop disk), so what is printed is exactly
what the agent logs, ``bosh run-errand`` shows or ``bosh ssh`` users read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.errors import EXIT_CONFIG
from disk_snapshots.errors import EXIT_PROVIDER
from disk_snapshots.errors import EXIT_USAGE
from disk_snapshots.snapshot.snapshotter import Paths
from support.configdocs import spec_defaults
from support.disks import write_config
from support.net import free_port

pytestmark = pytest.mark.root

CLI = (
    "import sys; from pathlib import Path; from disk_snapshots import cli; "
    "from disk_snapshots.snapshot.snapshotter import Paths; "
    "sys.exit(cli.main(sys.argv[2:], Paths(root=Path(sys.argv[1]))))"
)
DISK = '{"persistent_disk": 512}'


def run(paths: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, str(paths.root), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"BOSH_JOB_STATE": DISK, "BOSH_JOB_NEXT_STATE": DISK, "PATH": "/usr/bin:/bin"},
    )


def said_once(proc: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    """The exit code, no traceback, and the one line that says ``words``."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if words in line]
    assert len(lines) == 1, text
    # Nothing else claims to be an error: one line says what went wrong.
    others = [line for line in text.splitlines() if " ERROR " in line and words not in line]
    assert others == [], text


BAD_ARGUMENTS = [
    (("nope",), "argument COMMAND: invalid choice: 'nope'"),
    (("hook", "pre-stopp"), "argument name: invalid choice: 'pre-stopp'"),
    (("daemon", "restart"), "argument action: invalid choice: 'restart'"),
    (("errand", "restore-all"), "argument name: invalid choice: 'restore-all'"),
    (("snapshots", "take", "--note", "x" * 10000), "argument --note: is 10000 characters long"),
    (("snapshots", "take", "--note", "a\nb"), "argument --note: must be one line of text"),
    (("snapshots", "show", "../../etc/passwd"), "is not a loopback snapshot id"),
    (("snapshots", "delete", "snap-00000000000000000"), "does not exist"),
    (("snapshots", "list", "--yaml"), "unrecognized arguments: --yaml"),
    (("hook", "drain", "job_exploded"), "job_exploded"),
]


@pytest.mark.parametrize(("argv", "words"), BAD_ARGUMENTS, ids=lambda v: str(v)[:30])
def test_a_bad_argument_is_one_line_and_exit_2(
    vm: tuple[Paths, dict[str, Any]], argv: tuple[str, ...], words: str
) -> None:
    paths, _ = vm
    proc = run(paths, *argv)
    said_once(proc, EXIT_USAGE, words)
    if argv[:2] == ("hook", "drain"):
        assert proc.stdout == ""  # drain prints no integer: the agent fails the stop


@pytest.mark.parametrize(
    "argv",
    [
        ("hook", "pre-start"),
        ("hook", "drain", "job_changed", "hash_changed"),
        ("errand", "take-snapshot"),
        ("errand", "list-snapshots"),
        ("errand", "restore"),
        ("snapshots", "list"),
        ("daemon", "run"),
        ("config", "check"),
    ],
    ids=lambda v: " ".join(v),
)
def test_a_bad_property_is_one_line_and_exit_3(
    vm: tuple[Paths, dict[str, Any]], argv: tuple[str, ...]
) -> None:
    paths, doc = vm
    doc["properties"]["quiesce"]["freeze_timeout"] = 0
    write_config(paths, doc)
    for job, props in (
        ("take-snapshot", {"take_snapshot": {"note": "", "scope": "instance"}}),
        ("list-snapshots", {"list": {"format": "table"}}),
        ("restore", spec_defaults("restore")),
    ):
        path = paths.job_config(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"job": job, "properties": props}))
    if argv[0] == "config":
        argv = (*argv, "--config", str(paths.config))
    proc = run(paths, *argv)
    said_once(proc, EXIT_CONFIG, "snapshotter.quiesce.freeze_timeout: 0 is too small")


@pytest.fixture
def broken_pool(vm: tuple[Paths, dict[str, Any]], tmp_path: Path) -> Paths:
    """A loopback pool whose snapshots directory is a file: every provider call fails."""
    paths, doc = vm
    pool = tmp_path / "broken-pool"
    pool.mkdir()
    (pool / "snapshots").write_text("not a directory")
    doc["properties"]["provider"]["loopback"]["pool"] = str(pool)
    doc["properties"]["post_stop_snapshot"] = True
    write_config(paths, doc)
    for job, props in (
        ("take-snapshot", {"take_snapshot": {"note": "", "scope": "instance"}}),
        ("list-snapshots", {"list": {"format": "table"}}),
    ):
        path = paths.job_config(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"job": job, "properties": props}))
    return paths


@pytest.mark.parametrize(
    "argv",
    [
        ("hook", "pre-start"),
        ("hook", "drain", "job_changed", "hash_changed"),
        ("hook", "post-stop"),
        ("errand", "take-snapshot"),
        ("errand", "list-snapshots"),
        ("snapshots", "list"),
        ("snapshots", "take"),
        ("snapshots", "cleanup"),
    ],
    ids=lambda v: " ".join(v),
)
def test_a_broken_provider_is_one_line_and_exit_4(
    broken_pool: Paths, argv: tuple[str, ...]
) -> None:
    proc = run(broken_pool, *argv)
    said_once(proc, EXIT_PROVIDER, "snapshots is not a directory")
    if argv[:2] == ("hook", "drain"):
        assert proc.stdout == ""


def test_an_unreachable_aws_endpoint_is_one_line_and_exit_4(
    vm: tuple[Paths, dict[str, Any]],
) -> None:
    paths, doc = vm
    doc["properties"]["provider"]["type"] = "aws-ebs"
    aws = doc["properties"]["provider"]["aws"]
    aws.update(
        endpoint=f"http://127.0.0.1:{free_port()}", access_key_id="AKIA", secret_access_key="s"
    )
    write_config(paths, doc)
    said_once(run(paths, "snapshots", "list"), EXIT_PROVIDER, "127.0.0.1")


def test_a_bug_prints_its_traceback_on_stderr_and_exits_70(
    vm: tuple[Paths, dict[str, Any]],
) -> None:
    paths, _ = vm
    # A bug (here: the catalog divides by zero) is not explained away as a failure.
    code = (
        "import sys; from pathlib import Path; from disk_snapshots import cli; "
        "from disk_snapshots.snapshot import snapshotter; "
        "snapshotter.Snapshotter.catalog = lambda self: 1 / 0; "
        "from disk_snapshots.snapshot.snapshotter import Paths; "
        "sys.exit(cli.main(['snapshots', 'list'], Paths(root=Path(sys.argv[1]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(paths.root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 70
    assert "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr
    assert "snapshots list: internal error, a bug" in proc.stderr
