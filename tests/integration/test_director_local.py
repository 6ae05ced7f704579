"""The Director's own backup in the local deployment (issue 14).

A director-like deployment (tests/fixtures/director-release: Debian's PostgreSQL with the
`bosh` database, and a blobstore directory, on one persistent disk) gets the snapshotter
from the real ops file, manifests/director/snapshotter.yml, adjusted for this machine by
the fixture's manifests/local.yml. The data is written the way the Director writes it: a
blob into the blobstore first, then the row that names it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from lbtest import FIXTURES
from lbtest import REPO
from lbtest import LocalBosh
from lbtest import needs_root

from localbosh.state import Layout

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

BASE = FIXTURES / "director-release" / "manifests" / "bosh.yml"
OPS = (REPO / "manifests" / "director" / "snapshotter.yml", BASE.with_name("local.yml"))
BLOBSTORE = "/var/vcap/store/blobstore"
SNAPSHOTS = "/var/vcap/jobs/snapshotter/bin/snapshots"
PSQL = ("psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-tA")


def deploy(lb: LocalBosh, *extra: Path) -> None:
    argv = ["-d", "bosh", "deploy", str(BASE)]
    for ops in (*OPS, *extra):
        argv += ["-o", str(ops)]
    lb.run(*argv)


def on_vm(lb: LocalBosh, command: str) -> str:
    return lb.run("-d", "bosh", "ssh", "bosh/0", "-c", command).stdout


def address(lb: LocalBosh) -> str:
    (instance,) = lb.state("bosh")["instances"]
    return str(instance["address"])


def sql(lb: LocalBosh, query: str) -> list[list[str]]:
    """A query against the instance's PostgreSQL, as the Director connects (TCP, password)."""
    store = yaml.safe_load((Layout(lb.home).deployment("bosh") / "vars-store.yml").read_text())
    proc = subprocess.run(
        [*PSQL, "-h", address(lb), "-U", "postgres", "-d", "bosh", "-F", " ", "-c", query],
        env={"PGPASSWORD": str(store["postgres_password"]), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line.split(" ") for line in proc.stdout.splitlines() if line]


def upload_blobs(lb: LocalBosh, count: int, tag: str) -> None:
    """What the Director does for an upload: the blob first, then the row that names it."""
    names = [f"{tag}-{n:04d}" for n in range(count)]
    script = "\n".join(
        f"head -c {4096 + 997 * n} /dev/urandom > {BLOBSTORE}/{name}"
        for n, name in enumerate(names)
    )
    on_vm(lb, f"set -e\nmkdir -p {BLOBSTORE}\n{script}")
    digests = blob_digests(lb)
    values = ", ".join(f"('{name}', '{digests[name]}')" for name in names)
    sql(lb, "CREATE TABLE IF NOT EXISTS blobs (name text PRIMARY KEY, sha256 text)")
    # Test-made names and hex digests only: nothing to quote.
    sql(lb, f"INSERT INTO blobs VALUES {values}")  # noqa: S608


def blob_digests(lb: LocalBosh) -> dict[str, str]:
    out = on_vm(lb, f"cd {BLOBSTORE} && find . -maxdepth 1 -type f -exec sha256sum {{}} +")
    return {line.split()[1].removeprefix("./"): line.split()[0] for line in out.splitlines()}


def rows(lb: LocalBosh) -> dict[str, str]:
    if sql(lb, "SELECT to_regclass('blobs') IS NOT NULL") != [["t"]]:
        return {}
    return {name: digest for name, digest in sql(lb, "SELECT name, sha256 FROM blobs")}


def catalog(lb: LocalBosh) -> list[dict[str, Any]]:
    return [s["annotations"] for s in json.loads(on_vm(lb, f"{SNAPSHOTS} list --json"))]


def fast_schedule(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            [
                {
                    "type": "replace",
                    "path": "/instance_groups/name=bosh/jobs/name=snapshotter/properties/schedules",
                    "value": [
                        {
                            "name": "fast",
                            "cron": "* * * * * */4",
                            "jitter": 0,
                            "retention": {"keep_last": 2},
                        }
                    ],
                }
            ]
        )
    )
    return path


def lose_the_disk(lb: LocalBosh) -> None:
    """The Director's disk is gone: the VM and its disk are deleted (drain still takes its
    pre-delete snapshot, as delete-env's does), and a new one comes up empty, made with
    the same credentials: create-env runs again with the operator's creds.yml, so the
    restored database's passwords are the ones the new VM's jobs are configured with."""
    creds = Layout(lb.home).deployment("bosh") / "vars-store.yml"
    kept = creds.read_text()
    lb.run("-d", "bosh", "delete-deployment")
    lb.run("clean-up", "--all")
    creds.parent.mkdir(parents=True, exist_ok=True)
    creds.touch(mode=0o600)
    creds.write_text(kept)
    deploy(lb)


def test_snapshots_of_a_director_like_instance_outlive_its_disk(
    localbosh: LocalBosh, tmp_path: Path
) -> None:
    deploy(localbosh, fast_schedule(tmp_path / "fast.yml"))
    upload_blobs(localbosh, 20, "release")
    assert len(rows(localbosh)) == 20

    out = on_vm(localbosh, f"{SNAPSHOTS} take --note before-upgrade")
    assert "manual" in out and "app" in out, out
    deadline = time.monotonic() + 60
    while Counter(a["trigger"] for a in catalog(localbosh))["schedule:fast"] < 2:
        assert time.monotonic() < deadline, f"the schedule did not run: {catalog(localbosh)}"
        time.sleep(2)
    time.sleep(9)  # more runs, each followed by retention
    before = catalog(localbosh)
    triggers = Counter(a["trigger"] for a in before)
    assert triggers["schedule:fast"] == 2, "retention keeps keep_last scheduled snapshots"
    assert triggers["manual"] == 1
    for a in before:
        # The postgres profile flushed (CHECKPOINT) and the filesystem was frozen.
        assert (a["deployment"], a["instance_group"], a["index"]) == ("bosh", "bosh", "0")
        assert (a["consistency"], a["role"]) == ("app", "standalone"), a
    (manual,) = [a for a in before if a["trigger"] == "manual"]
    assert manual["note"] == "before-upgrade"
    old_id = manual["instance_id"]

    lose_the_disk(localbosh)
    assert rows(localbosh) == {} and blob_digests(localbosh) == {}, "the new disk is empty"
    # A new VM with a new instance id and disk CID finds the old one's snapshots: the
    # catalog is the provider's, and is matched by deployment, group and index.
    after = catalog(localbosh)
    mine = [a for a in after if a["instance_id"] == old_id]
    assert Counter(a["trigger"] for a in mine) == Counter(
        {"schedule:fast": 2, "manual": 1, "pre-delete": 1}
    )
    new_id = lb_instance_id(localbosh)
    assert new_id != old_id
    assert {(a["instance_group"], a["index"]) for a in after} == {("bosh", "0")}


def lb_instance_id(lb: LocalBosh) -> str:
    (instance,) = lb.state("bosh")["instances"]
    return str(instance["id"])


def test_restore_latest_on_a_new_empty_disk_brings_back_every_row_and_blob(
    localbosh: LocalBosh,
) -> None:
    deploy(localbosh)
    upload_blobs(localbosh, 30, "release")
    on_vm(localbosh, f"{SNAPSHOTS} take --note before-loss")
    upload_blobs(localbosh, 10, "compiled")
    wanted_rows, wanted_blobs = rows(localbosh), blob_digests(localbosh)
    assert len(wanted_rows) == 40

    lose_the_disk(localbosh)
    assert rows(localbosh) == {}

    planned = on_vm(localbosh, f"{SNAPSHOTS} restore --latest --dry-run")
    assert "nothing was stopped, snapshotted or written" in planned
    assert rows(localbosh) == {}
    out = on_vm(localbosh, f"{SNAPSHOTS} restore --latest")
    print(out)
    # The pre-delete snapshot delete-deployment's drain took: the newest, with every row.
    assert "done: bosh/0 restored snapshot" in out and "(pre-delete, " in out, out
    assert "postgres answers as standalone" in out, out
    assert rows(localbosh) == wanted_rows
    blobs = blob_digests(localbosh)
    assert blobs == wanted_blobs
    # Consistent with each other: every blob the database names is there, intact.
    assert all(blobs.get(name) == digest for name, digest in wanted_rows.items())
