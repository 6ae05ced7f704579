"""replace-vs-copy: the restore time of one instance by both methods, at 1, 4 and 16 GiB.

One instance on the local deployment with an 18 GiB disk holding N GiB of incompressible
data; a manual snapshot; then ``disk-snapshots restore --method copy`` and ``--method
replace`` of that snapshot, each timed end to end (bosh stop, the clean safety snapshot,
the disk step, bosh start and the wait included) and by its disk step alone (the copy
onto the disk; making the new disk and bosh attach-disk). The copy is the baseline.
Replace should stay flat: the loopback provider clones the snapshot's image (reflink),
as an IaaS makes a volume from a snapshot without reading it; copy grows with the data.

The copy needs room for a second copy of the data (the snapshot keeps the first), so a
size needs 2 N + 4 GiB free where the state dir is; a size that does not fit is not
measured and the line says why. ``BENCH_SIZES`` (GiB, e.g. "1 4") chooses the sizes.

Run as root through scripts/bench. Prints ``bench: <name> <value> <unit> baseline=<v> ratio=<r>``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DISK_MIB = 18 * 1024
GIB = 2**30
TLS = {
    "ca": "((agent_tls.ca))",
    "certificate": "((agent_tls.certificate))",
    "private_key": "((agent_tls.private_key))",
}


def manifest() -> dict[str, Any]:
    return {
        "name": "rvc",
        "releases": [{"name": "disk-snapshots", "version": "create", "url": f"file://{REPO}"}],
        "update": {
            "canaries": 1,
            "max_in_flight": 1,
            "canary_watch_time": "1000-30000",
            "update_watch_time": "1000-30000",
        },
        "instance_groups": [
            {
                "name": "store",
                "instances": 1,
                "azs": ["z1"],
                "persistent_disk": DISK_MIB,
                "networks": [{"name": "default"}],
                "jobs": [
                    {
                        "name": "snapshotter",
                        "release": "disk-snapshots",
                        "properties": {
                            "provider": {"type": "loopback"},
                            "service": {
                                "profile": "command",
                                "jobs": [],
                                "command": {"role": ["/bin/echo", "standalone"]},
                            },
                            "api": {"tls": TLS},
                        },
                    }
                ],
            }
        ],
        "variables": [
            {
                "name": "agent_ca",
                "type": "certificate",
                "options": {"is_ca": True, "common_name": "agent-ca"},
            },
            {
                "name": "agent_tls",
                "type": "certificate",
                "options": {
                    "ca": "agent_ca",
                    "common_name": "agent",
                    "alternative_names": ["localhost"],
                    "extended_key_usage": ["server_auth", "client_auth"],
                },
            },
        ],
    }


def run(home: Path, argv: list[str], timeout: float = 3600) -> str:
    env = {
        **os.environ,
        "LOCALBOSH_HOME": str(home),
        "LOCALBOSH_POOL_SIZE": "48G",
        "DISK_SNAPSHOTS_BOSH": str(REPO / "scripts" / "localbosh"),
        "BOSH_DEPLOYMENT": "rvc",
    }
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:6])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def localbosh(home: Path, *args: str) -> str:
    return run(home, [sys.executable, "-m", "localbosh", "-d", "rvc", *args])


def operator(home: Path, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    out = run(home, [sys.executable, "-m", "disk_snapshots.operator", *args])
    return time.monotonic() - started, out


def disk_step(out: str, method: str) -> float:
    """The disk step's own time, as the restore printed it."""
    if method == "copy":
        return float(re.search(r"copied in ([0-9.]+)s", out).group(1))  # type: ignore[union-attr]
    made = re.search(r"making new disks.*?\n\s+done in ([0-9.]+)s", out, re.S)
    attached = re.search(r"attaching disk-.*?\n\s+done in ([0-9.]+)s", out, re.S)
    return float(made.group(1)) + float(attached.group(1))  # type: ignore[union-attr]


def measure(home: Path, gib: int, workdir: Path) -> dict[str, tuple[float, float]]:
    path = workdir / "rvc.yml"
    path.write_text(yaml.safe_dump(manifest()))
    localbosh(home, "deploy", str(path))
    # Incompressible, unique data, written faster than /dev/urandom gives it.
    stream = "openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:bench < /dev/zero 2>/dev/null"
    fill = (
        f"mkdir -p /var/vcap/store/data && {stream} | head -c {gib * GIB} "
        "> /var/vcap/store/data/blob && sync"
    )
    localbosh(home, "ssh", "store/0", "-c", fill)
    taken = run(
        home,
        [sys.executable, "-m", "disk_snapshots.operator", "take-snapshot", "--note", f"{gib} GiB"],
    )
    snapshot_id = re.search(r"taken: (snap-[0-9a-f]+)", taken).group(1)  # type: ignore[union-attr]
    results = {}
    for method in ("copy", "replace"):
        seconds, out = operator(
            home, "restore", "--yes", "--method", method, "--snapshot", f"store/0={snapshot_id}"
        )
        results[method] = (seconds, disk_step(out, method))
    return results


def free_gib(path: Path) -> float:
    return shutil.disk_usage(path).free / GIB


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (the local deployment)", file=sys.stderr)
        return 1
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "1 4 16").split()]
    status = 0
    for gib in sizes:
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-replace-vs-copy-{gib}-", dir="/var/tmp"))
        home = workdir / "home"
        needed = 2 * gib + 4
        if free_gib(workdir) < needed:
            print(
                f"bench: replace-vs-copy-{gib}GiB not measured: needs {needed} GiB free in "
                f"{workdir.parent}, {free_gib(workdir):.0f} GiB are"
            )
            shutil.rmtree(workdir)
            status = 1
            continue
        try:
            results = measure(home, gib, workdir)
        finally:
            subprocess.run(
                [sys.executable, "-m", "localbosh", "-d", "rvc", "delete-deployment", "--force"],
                env={**os.environ, "LOCALBOSH_HOME": str(home)},
                capture_output=True,
                check=False,
            )
            shutil.rmtree(workdir, ignore_errors=True)
        (copy_total, copy_step), (replace_total, replace_step) = results["copy"], results["replace"]
        print(
            f"bench: replace-vs-copy-{gib}GiB-restore {replace_total:.1f} s "
            f"baseline={copy_total:.1f} ratio={replace_total / copy_total:.2f}"
        )
        print(
            f"bench: replace-vs-copy-{gib}GiB-disk-step {replace_step:.2f} s "
            f"baseline={copy_step:.2f} ratio={replace_step / copy_step:.3f}"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
