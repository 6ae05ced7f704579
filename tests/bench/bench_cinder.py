"""Benchmarks of the openstack-cinder provider against a real Cinder, each with a same-run
baseline.

- a 3-member snapshot set: the storage work inside the freeze when the set is one group
  snapshot (``snapshot_group`` plus the three members' claims, in parallel, as the set
  protocol does them), against three single snapshots taken in parallel (what each member
  does with a provider without group snapshots). Median of several rounds; gathering the
  volumes in their group happens before the freeze and is printed apart;
- listing the catalog and planning retention over 1,000 snapshots with our metadata:
  wall time and peak resident memory of a fresh process that does only that (what a
  daemon or errand pays), against a fresh process that pages through the same snapshots
  with bare HTTP requests (same metadata filter and page size, counting them).

The Cinder is the one scripts/test started (CINDER_LOCAL_ENV) or, as root, one this run
starts with scripts/cinder-local and stops at the end. Its version is printed first.
BENCH_CINDER_SNAPSHOTS changes the 1,000. Prints
``bench: <name> <value> <unit> baseline=<value> ratio=<value>``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import requests  # noqa: E402

from disk_snapshots.catalog import Query  # noqa: E402
from disk_snapshots.config import Retention  # noqa: E402
from disk_snapshots.providers.cinder_metadata import display_name  # noqa: E402
from disk_snapshots.providers.cinder_metadata import metadata_filter  # noqa: E402
from disk_snapshots.providers.cinder_metadata import metadata_of  # noqa: E402
from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider  # noqa: E402
from disk_snapshots.retention import plan_retention  # noqa: E402
from disk_snapshots.vm.instance import Disk  # noqa: E402
from support.annotations import sample_annotations  # noqa: E402
from support.cinder import MICROVERSION  # noqa: E402
from support.cinder import Admin  # noqa: E402
from support.cinder import CinderLocal  # noqa: E402
from support.cinder import noauth_settings  # noqa: E402
from support.cinder import reachable  # noqa: E402

COUNT = int(os.environ.get("BENCH_CINDER_SNAPSHOTS", "1000"))
ROUNDS = 5
NOW = datetime(2026, 6, 1, tzinfo=UTC)
INSTANCES = (("redis-leader", 0), ("redis-data", 0), ("redis-data", 1))
POLICIES = {
    "schedule:hourly": Retention(keep_hourly=24, keep_daily=7, keep_weekly=4),
    "manual": Retention(keep_last=20),
    "pre-deploy": Retention(keep_last=10),
}


def line(name: str, value: float, unit: str, baseline: float) -> None:
    ratio = f"{value / baseline:.2f}" if baseline > 0 else "inf"
    print(f"bench: {name} {value:.2f} {unit} baseline={baseline:.2f} ratio={ratio}", flush=True)


def provider(endpoint: str, **settings: Any) -> OpenstackCinderProvider:
    return OpenstackCinderProvider(noauth_settings(endpoint, **settings), poll_interval=0.1)


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def parallel(work: Callable[[int], object], count: int) -> None:
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(work, range(count)))


def sets(local: CinderLocal, admin: Admin) -> None:
    deployment = f"bench-{uuid.uuid4().hex[:8]}"
    disks = [
        Disk(cid=v, mount=Path("/var/vcap/store"), hint={})
        for v in admin.create_volumes(3, deployment)
    ]
    members = [
        sample_annotations(deployment=deployment, disk_cid=d.cid, group=g, index=i)
        for d, (g, i) in zip(disks, INSTANCES, strict=True)
    ]
    grouped, single, gathering = [], [], []
    with provider(local.endpoint, group_type=admin.create_group_type("bench")) as p:
        for n in range(ROUNDS):
            set_id = f"bench-{n}"
            annotated = [replace(a, set_id=set_id, set_size=3) for a in members]
            start = time.perf_counter()
            with p.volume_group(disks, deployment) as group:
                gathering.append(time.perf_counter() - start)
                start = time.perf_counter()
                taken = p.snapshot_group(group, set_id)
                parallel(
                    lambda i, t=taken, a=annotated: p.claim_group_member(
                        t[disks[i].cid], disks[i], a[i]
                    ),
                    3,
                )
                grouped.append(time.perf_counter() - start)
            single.append(timed(lambda: parallel(lambda i: p.snapshot(disks[i], members[i]), 3)))
    print(
        f"cinder: 3-member set, median of {ROUNDS}: gathering the volumes in their group "
        f"(before the freeze) {statistics.median(gathering):.2f} s"
    )
    line("cinder-set-3-group-snapshot", statistics.median(grouped), "s", statistics.median(single))


def seed(local: CinderLocal, admin: Admin, deployment: str, count: int) -> None:
    """``count`` snapshots with our metadata, as the snapshotter would write it, spread
    over ten volumes (the NFS driver chains every snapshot of a volume as an overlay)."""
    volumes = admin.create_volumes(10, deployment)
    sessions = [Admin(local) for _ in range(8)]

    def one(i: int) -> None:
        group, index = INSTANCES[i % len(INSTANCES)]
        trigger = "manual" if i % 50 == 0 else "pre-deploy" if i % 97 == 0 else "schedule:hourly"
        a = sample_annotations(
            at=NOW - timedelta(hours=i // len(INSTANCES), minutes=i % 60),
            trigger=trigger,
            group=group,
            index=index,
            deployment=deployment,
            disk_cid=volumes[i % len(volumes)],
            role="leader" if group == "redis-leader" else "follower",
        )
        body = {
            "snapshot": {
                "volume_id": volumes[i % len(volumes)],
                "name": display_name(a),
                "force": True,
                "metadata": metadata_of(a),
            }
        }
        sessions[i % len(sessions)].call("POST", "/snapshots", json=body)

    try:
        with ThreadPoolExecutor(len(sessions)) as pool:
            list(pool.map(one, range(count)))
        deadline = time.monotonic() + 1800
        query = {"metadata": json.dumps(metadata_filter(Query(deployment=deployment)))}
        while time.monotonic() < deadline:
            listed = admin.call("GET", "/snapshots/detail", params=query | {"limit": 1000})
            if all(s["status"] == "available" for s in listed["snapshots"]):
                break
            time.sleep(2)
    finally:
        for session in sessions:
            session.close()


def measure(endpoint: str, deployment: str, mode: str) -> None:
    """Child process: one of the two measured jobs, then time and peak RSS as JSON."""
    start = time.perf_counter()
    if mode == "catalog":
        with provider(endpoint) as p:
            catalog = p.list(Query(deployment=deployment))
            plan = plan_retention(catalog, POLICIES, NOW)
        found, deleted = len(catalog), len(plan.delete)
    else:
        params: dict[str, Any] = {
            "metadata": json.dumps(metadata_filter(Query(deployment=deployment))),
            "limit": 1000,
        }
        found, deleted = 0, 0
        with requests.Session() as session:
            session.trust_env = False
            headers = {"OpenStack-API-Version": MICROVERSION}
            while True:
                page = session.get(
                    f"{endpoint}/snapshots/detail", params=params, headers=headers, timeout=60
                ).json()["snapshots"]
                found += len(page)
                if len(page) < 1000:
                    break
                params["marker"] = page[-1]["id"]
    seconds = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mib": rss_mib, "found": found, "deleted": deleted}))


def child(endpoint: str, deployment: str, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", endpoint, deployment, mode],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_PROXY": "*", "no_proxy": "*"},
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def catalog(local: CinderLocal, admin: Admin) -> bool:
    deployment = f"bench-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    seed(local, admin, deployment, COUNT)
    print(f"setup: {COUNT} snapshots with our metadata in {time.perf_counter() - start:.1f} s")
    baseline = child(local.endpoint, deployment, "bare")
    ours = child(local.endpoint, deployment, "catalog")
    if ours["found"] != COUNT or baseline["found"] != COUNT:
        print(f"bench-cinder: expected {COUNT} snapshots, got {ours} / {baseline}")
        return False
    print(
        f"cinder: catalog of {ours['found']} snapshots, retention would delete "
        f"{ours['deleted']}; baseline: the same pages through bare HTTP requests"
    )
    line(f"cinder-list-and-plan-{COUNT}", ours["seconds"], "s", baseline["seconds"])
    line(f"cinder-list-and-plan-{COUNT}-peak-rss", ours["rss_mib"], "MiB", baseline["rss_mib"])
    return True


def main() -> int:
    with reachable() as (local, reason):
        if local is None:
            print(f"bench-cinder: not run: {reason}")
            return 0
        admin = Admin(local)
        try:
            root = local.endpoint.rsplit("/v3/", 1)[0] + "/"
            versions = requests.get(root, timeout=30).json()["versions"]
            highest = max(str(v.get("version") or "") for v in versions)
            print(
                f"cinder: Cinder {local.version} (Debian), block-storage API up to {highest}, "
                "NFS driver on a local directory"
            )
            sets(local, admin)
            return 0 if catalog(local, admin) else 1
        finally:
            admin.close()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        measure(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    sys.exit(main())
