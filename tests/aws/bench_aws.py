"""Benchmarks of the aws-ebs provider against moto's EC2 server, each with a same-run baseline.

- listing the catalog and planning retention over 10,000 tagged snapshots: wall time and
  peak resident memory of a fresh process that does only that (what a daemon or errand
  pays), against a fresh process that pages through the same snapshots with a bare
  boto3 paginator (same tag filter and page size, counting them, no catalog, no plan):
  the floor set by the API and botocore's XML parsing;
- EC2 requests per snapshot taken (prepare + snapshot, counted on the wire with a
  botocore before-send hook, retries included), against a bare tagged CreateSnapshot.

Seeding the 10,000 snapshots goes through the API too; its time is printed separately
and is not part of any figure. moto runs through moto_like_ec2.py, which gives it EC2's
pages (1,000 at most) and a tag lookup that is not quadratic.

Run through scripts/bench-aws (or scripts/bench). BENCH_AWS_SNAPSHOTS changes the count.
Prints ``bench: <name> <value> <unit> baseline=<value> ratio=<value>``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parents[2] / "src")]

import boto3  # noqa: E402

from disk_snapshots.catalog import Query  # noqa: E402
from disk_snapshots.config import Retention  # noqa: E402
from disk_snapshots.providers.aws_ebs import AwsEbsProvider  # noqa: E402
from disk_snapshots.providers.aws_ebs import display_name  # noqa: E402
from disk_snapshots.providers.ec2 import tag_list  # noqa: E402
from disk_snapshots.retention import plan_retention  # noqa: E402
from disk_snapshots.vm.instance import Disk  # noqa: E402
from support.aws import REGION  # noqa: E402
from support.aws import ZONE  # noqa: E402
from support.aws import sample_annotations  # noqa: E402
from support.aws import settings  # noqa: E402
from support.moto import moto_server  # noqa: E402

COUNT = int(os.environ.get("BENCH_AWS_SNAPSHOTS", "10000"))
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


def client(url: str) -> Any:
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def seed(url: str, volume_id: str, count: int) -> None:
    """``count`` snapshots as the snapshotter would tag them: three instances, mostly hourly."""

    def one(i: int) -> None:
        group, index = INSTANCES[i % len(INSTANCES)]
        trigger = "manual" if i % 50 == 0 else "pre-deploy" if i % 97 == 0 else "schedule:hourly"
        a = sample_annotations(
            at=NOW - timedelta(hours=i // len(INSTANCES), minutes=i % 60),
            trigger=trigger,
            group=group,
            index=index,
            disk_cid=volume_id,
            role="leader" if group == "redis-leader" else "follower",
        )
        tags = a.to_tags() | {"Name": display_name(a)}
        clients[i % len(clients)].create_snapshot(
            VolumeId=volume_id,
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
        )

    clients = [client(url) for _ in range(8)]
    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(one, range(count)))
    finally:
        for c in clients:
            c.close()


def measure(url: str, mode: str) -> None:
    """Child process: one of the two measured jobs, then time and peak RSS as JSON."""
    start = time.perf_counter()
    if mode == "catalog":
        with AwsEbsProvider(settings(url, backup_region="")) as provider:
            catalog = provider.list(Query(deployment="redis"))
            plan = plan_retention(catalog, POLICIES, NOW)
        found, deleted = len(catalog), len(plan.delete)
    else:
        c = client(url)
        try:
            pages = c.get_paginator("describe_snapshots").paginate(
                OwnerIds=["self"],
                Filters=[{"Name": "tag-key", "Values": ["disk-snapshots:schema"]}],
                PaginationConfig={"PageSize": 1000},
            )
            found = sum(len(page["Snapshots"]) for page in pages)
        finally:
            c.close()
        deleted = 0
    seconds = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mib": rss_mib, "found": found, "deleted": deleted}))


def child(url: str, mode: str) -> dict[str, Any]:
    env = {**os.environ, "NO_PROXY": "*", "no_proxy": "*"}
    out = subprocess.run(
        [sys.executable, __file__, "--measure", url, mode],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def requests_per_snapshot(url: str, volume_id: str, tmp: Path, rounds: int = 20) -> float:
    sent = [0]

    def count(**_: Any) -> None:
        sent[0] += 1

    with AwsEbsProvider(settings(url, backup_region="")) as provider:
        provider.client().meta.events.register("before-send.ec2", count)
        disk = Disk(cid=volume_id, mount=tmp, hint={})
        for i in range(rounds):
            provider.prepare(disk)
            provider.snapshot(disk, sample_annotations(minutes_ago=i, disk_cid=volume_id))
    return sent[0] / rounds


def bare_requests_per_snapshot(url: str, volume_id: str, rounds: int = 20) -> float:
    sent = [0]

    def count(**_: Any) -> None:
        sent[0] += 1

    c = client(url)
    try:
        c.meta.events.register("before-send.ec2", count)
        for i in range(rounds):
            tags = sample_annotations(minutes_ago=i, disk_cid=volume_id).to_tags()
            c.create_snapshot(
                VolumeId=volume_id,
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
            )
    finally:
        c.close()
    return sent[0] / rounds


def main() -> int:
    with moto_server(like_ec2=True) as url:
        c = client(url)
        try:
            volume_id = c.create_volume(AvailabilityZone=ZONE, Size=100)["VolumeId"]
        finally:
            c.close()
        start = time.perf_counter()
        seed(url, volume_id, COUNT)
        print(f"setup: {COUNT} tagged snapshots created in {time.perf_counter() - start:.1f} s")

        baseline = child(url, "bare")
        ours = child(url, "catalog")
        if ours["found"] != COUNT or baseline["found"] != COUNT:
            print(f"bench-aws: expected {COUNT} snapshots, got {ours} / {baseline}")
            return 1
        print(
            f"aws: catalog of {ours['found']} snapshots, retention would delete "
            f"{ours['deleted']}; baseline: the same pages through a bare boto3 paginator"
        )
        line(f"aws-list-and-plan-{COUNT}", ours["seconds"], "s", baseline["seconds"])
        line(f"aws-list-and-plan-{COUNT}-peak-rss", ours["rss_mib"], "MiB", baseline["rss_mib"])

        # Taken against a fresh volume so the per-volume history does not matter.
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        ours_calls = requests_per_snapshot(url, volume_id, tmp)
        bare_calls = bare_requests_per_snapshot(url, volume_id)
        line("aws-requests-per-snapshot", ours_calls, "requests", bare_calls)
    ok = ours["seconds"] < 10 and ours["rss_mib"] < 200
    if not ok:
        print(f"bench-aws: goal missed (under 10 s and 200 MiB for {COUNT})")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        measure(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
