"""End-to-end restore time of the three-instance local deployment (issue #6).

Deploys manifests/local/redis-ha.yml in a state dir of its own, writes 20,000 keys,
takes a manual snapshot, and times `run-errand restore` (safety snapshots, stop
followers and leader, copy, start leader, start followers, all waits included).
Baseline, measured in the same run: `stop` then `start` of the whole deployment, the
outage a restore by hand would cost before any data is copied.

Run as root through scripts/bench. Prints ``bench: <name> <value> <unit> baseline=<v> ratio=<r>``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "manifests" / "local" / "redis-ha.yml"


def localbosh(home: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "localbosh", "-d", "redis", *args],
        env={**os.environ, "LOCALBOSH_HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"localbosh {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def timed(home: Path, *args: str) -> float:
    started = time.monotonic()
    localbosh(home, *args)
    return time.monotonic() - started


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (the local deployment)", file=sys.stderr)
        return 1
    home = Path(tempfile.mkdtemp(prefix="bench-restore-e2e-"))
    try:
        localbosh(home, "deploy", str(MANIFEST))
        state = yaml.safe_load((home / "deployments" / "redis" / "state.json").read_text())
        leader = next(i["address"] for i in state["instances"] if i["group"] == "redis-leader")
        store = yaml.safe_load((home / "deployments" / "redis" / "vars-store.yml").read_text())
        cli = ["redis-cli", "-h", leader, "-a", str(store["redis_password"]), "--no-auth-warning"]
        commands = "".join(f"SET bench:{n} {'x' * 100}\n" for n in range(20_000))
        subprocess.run(cli, input=commands, capture_output=True, text=True, check=True)
        localbosh(home, "run-errand", "take-snapshot")
        restore = timed(home, "run-errand", "restore")
        baseline = timed(home, "stop") + timed(home, "start")
        print(
            f"bench: restore-e2e-three-instances {restore:.4g} s baseline={baseline:.4g} "
            f"ratio={restore / baseline:.3g}",
            flush=True,
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "localbosh", "-d", "redis", "delete-deployment", "--force"],
            env={**os.environ, "LOCALBOSH_HOME": str(home)},
            capture_output=True,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
