"""The Director's backup (issue 14): our snapshot against a BBR-style backup, in one run.

The director-like local deployment (tests/fixtures/director-release, the snapshotter
colocated by manifests/director/snapshotter.yml) gets a PostgreSQL database of >= 1 GiB
(pgbench's tables) and a blobstore of >= 1 GiB on its one persistent disk. One client
(pgbench, one connection, one INSERT per transaction, each committed) writes to
PostgreSQL throughout; its longest transaction is the longest write pause it saw.

- ours: `snapshots take` on the VM (CHECKPOINT, fsfreeze, reflink clone, thaw), 3 times;
- baseline: what BBR does for a Director: the writes are locked out (here an EXCLUSIVE
  lock on the client's table, which pg_dump's reads do not conflict with), `pg_dump
  --format=custom` of the database and a copy of the blobstore are taken, then the lock
  goes.

Prints ``bench: <name> <value> <unit> baseline=<v> ratio=<r>``: the longest write pause
and the time each backup takes. Goal: pause <= 1/100 of the baseline's.
Run as root through scripts/bench (about 5 minutes, 8 GiB free under /tmp).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "tests" / "fixtures" / "director-release" / "manifests" / "bosh.yml"
OPS = (REPO / "manifests" / "director" / "snapshotter.yml", BASE.with_name("local.yml"))
GIB = 1024**3
# pgbench scale 1 is about 15 MiB of tables and indexes.
PGBENCH_SCALE = 75
BLOB_FILES = 256  # of 4 MiB each
SNAPSHOTS = 3
SETTLE_SECONDS = 15
QUIET_SECONDS = 4


def report(name: str, value: float, unit: str, baseline: float) -> None:
    ratio = value / baseline if baseline else float("inf")
    print(f"bench: {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={ratio:.3g}", flush=True)


def note(text: str) -> None:
    print(f"bench director-backup: {text}", file=sys.stderr, flush=True)


@dataclass
class Director:
    home: Path
    work: Path

    def localbosh(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "localbosh", "-d", "bosh", *args],
            env={**os.environ, "LOCALBOSH_HOME": str(self.home)},
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"localbosh {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def on_vm(self, command: str) -> str:
        return self.localbosh("ssh", "bosh/0", "-c", command)

    @property
    def address(self) -> str:
        state = yaml.safe_load((self.home / "deployments" / "bosh" / "state.json").read_text())
        return str(state["instances"][0]["address"])

    @property
    def env(self) -> dict[str, str]:
        store = yaml.safe_load((self.home / "deployments" / "bosh" / "vars-store.yml").read_text())
        return {
            **os.environ,
            "PGHOST": self.address,
            "PGUSER": "postgres",
            "PGDATABASE": "bosh",
            "PGPASSWORD": str(store["postgres_password"]),
        }

    def run(self, *argv: str, timeout: float = 1800) -> str:
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, check=True, timeout=timeout
        ).stdout

    def sql(self, query: str) -> str:
        return self.run("psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-tAc", query).strip()


def deploy(director: Director) -> None:
    bench_ops = director.work / "bench.yml"
    group = "/instance_groups/name=bosh"
    bench_ops.write_text(
        yaml.safe_dump(
            [
                {"type": "replace", "path": f"{group}/persistent_disk", "value": 5120},
                # Only the snapshots this bench takes.
                {
                    "type": "replace",
                    "path": f"{group}/jobs/name=snapshotter/properties/schedules",
                    "value": [],
                },
            ]
        )
    )
    argv = ["deploy", str(BASE)]
    for ops in (*OPS, bench_ops):
        argv += ["-o", str(ops)]
    director.localbosh(*argv)


def fill(director: Director) -> tuple[int, int]:
    """>= 1 GiB of database and >= 1 GiB of blobs on the one disk."""
    director.run("pgbench", "-i", "-q", "-s", str(PGBENCH_SCALE))
    director.sql("CREATE TABLE director_writes (id bigserial PRIMARY KEY, at timestamptz)")
    director.on_vm(
        "set -e; mkdir -p /var/vcap/store/blobstore; cd /var/vcap/store/blobstore; "
        f"for i in $(seq 1 {BLOB_FILES}); do head -c 4M /dev/urandom > blob-$i; done"
    )
    database = int(director.sql("SELECT pg_database_size('bosh')"))
    blobs = int(director.on_vm("du -sb /var/vcap/store/blobstore | cut -f1").strip())
    # Let the load's own writeback finish, so that neither backup is charged for it.
    director.sql("CHECKPOINT")
    director.on_vm("sync -f /var/vcap/store")
    time.sleep(SETTLE_SECONDS)
    return database, blobs


@dataclass(frozen=True)
class Transaction:
    start: float
    seconds: float


def write_while(director: Director, seconds: int, tag: str) -> subprocess.Popen[str]:
    """One pgbench client committing one INSERT per transaction, logging each one."""
    script = director.work / "write.sql"
    script.write_text("INSERT INTO director_writes (at) VALUES (clock_timestamp());\n")
    return subprocess.Popen(
        [
            *("pgbench", "-n", "-c", "1", "-T", str(seconds), "-f", str(script)),
            *("-l", f"--log-prefix={director.work / tag}"),
        ],
        env=director.env,
        cwd=director.work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def transactions(director: Director, client: subprocess.Popen[str], tag: str) -> list[Transaction]:
    out, err = client.communicate(timeout=1800)
    if client.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{out}\n{err}")
    found = []
    for log in director.work.glob(f"{tag}.*"):
        # client_id transaction_no latency_us script_no epoch_s epoch_us (pgbench -l)
        for line in log.read_text().splitlines():
            fields = line.split()
            end = int(fields[4]) + int(fields[5]) / 1e6
            latency = int(fields[2]) / 1e6
            found.append(Transaction(end - latency, latency))
    if not found:
        raise RuntimeError(f"pgbench logged no transactions under {director.work}/{tag}.*")
    return found


def longest_in(found: list[Transaction], start: float, end: float) -> float:
    overlapping = [t.seconds for t in found if t.start <= end and t.start + t.seconds >= start]
    return max(overlapping)


def ours(director: Director) -> tuple[float, float]:
    client = write_while(director, 12 + 6 * SNAPSHOTS, "ours")
    quiet = time.time()
    time.sleep(QUIET_SECONDS)
    windows = []
    for _ in range(SNAPSHOTS):
        started = time.time()
        director.on_vm("/var/vcap/jobs/snapshotter/bin/snapshots take --note bench")
        windows.append((started, time.time()))
        time.sleep(5)
    found = transactions(director, client, "ours")
    # For reading the figures: what this machine does to a commit with no backup at all.
    noise = longest_in(found, quiet + 1, quiet + QUIET_SECONDS)
    note(f"longest write with no backup running: {noise * 1000:.0f} ms")
    pause = max(longest_in(found, start, end) for start, end in windows)
    return pause, max(end - start for start, end in windows)


def bbr_style(director: Director) -> tuple[float, float]:
    client = write_while(director, 8, "bbr")
    time.sleep(3)
    started = time.time()
    # BBR's lock: the writers are kept out for the whole backup.
    locker = subprocess.Popen(
        [
            "psql",
            "--no-psqlrc",
            "-c",
            "BEGIN; LOCK TABLE director_writes IN EXCLUSIVE MODE; SELECT pg_sleep(86400)",
        ],
        env=director.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        granted = "SELECT count(*) FROM pg_locks WHERE granted AND mode = 'ExclusiveLock' "
        granted += "AND relation = 'director_writes'::regclass"
        while director.sql(granted) != "1":
            time.sleep(0.01)
        dump = director.work / "bosh.dump"
        director.run("pg_dump", "--format=custom", f"--file={dump}", "bosh")
        director.on_vm(
            "rm -rf /var/vcap/data/bbr && cp -a /var/vcap/store/blobstore /var/vcap/data/bbr"
        )
    finally:
        director.sql(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep(86400)%' AND pid <> pg_backend_pid()"
        )
        locker.wait(timeout=60)
    finished = time.time()
    director.on_vm("rm -rf /var/vcap/data/bbr")
    found = transactions(director, client, "bbr")
    return longest_in(found, started, finished), finished - started


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (the local deployment)", file=sys.stderr)
        return 1
    for tool in ("pgbench", "pg_dump", "psql"):
        if shutil.which(tool) is None:
            print(
                f"bench: {tool} not on PATH (scripts/bootstrap installs postgresql)",
                file=sys.stderr,
            )
            return 1
    director = Director(
        home=Path(tempfile.mkdtemp(prefix="bench-director-")),
        work=Path(tempfile.mkdtemp(prefix="bench-director-work-")),
    )
    try:
        deploy(director)
        database, blobs = fill(director)
        note(f"database {database / GIB:.2f} GiB, blobstore {blobs / GIB:.2f} GiB, one disk")
        if database < GIB or blobs < GIB:
            raise RuntimeError("the bench needs >= 1 GiB of database and of blobs")
        pause, took = ours(director)
        base_pause, base_took = bbr_style(director)
        report("director-backup-write-pause-max", pause * 1000, "ms", base_pause * 1000)
        report("director-backup-seconds", took, "s", base_took)
    finally:
        subprocess.run(
            [sys.executable, "-m", "localbosh", "-d", "bosh", "delete-deployment", "--force"],
            env={**os.environ, "LOCALBOSH_HOME": str(director.home)},
            capture_output=True,
            check=False,
        )
        shutil.rmtree(director.home, ignore_errors=True)
        shutil.rmtree(director.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
