"""Sample annotations for provider tests (aws-ebs, openstack-cinder)."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

from disk_snapshots.annotations import Annotations


def sample_annotations(
    *,
    minutes_ago: float = 0,
    at: datetime | None = None,
    trigger: str = "manual",
    index: int = 0,
    deployment: str = "redis",
    group: str = "redis-leader",
    consistency: str = "app",
    role: str = "leader",
    note: str = "",
    disk_cid: str = "vol-0123456789abcdef0",
) -> Annotations:
    moment = at or datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return Annotations(
        deployment=deployment,
        instance_group=group,
        instance_id=f"0000000{index}-aaaa-bbbb-cccc-dddddddddddd",
        index=index,
        az="z1",
        disk_cid=disk_cid,
        job="redis",
        created_at=moment,
        trigger=trigger,
        consistency=consistency,  # type: ignore[arg-type]
        role=role,  # type: ignore[arg-type]
        release_version="0.1.0+dev.1",
        note=note,
    )
