"""The snapshot catalog: snapshots as the provider lists them, and queries over them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations

State = Literal["pending", "completed", "error"]


@dataclass(frozen=True)
class Snapshot:
    id: str
    annotations: Annotations
    # "pending" means the point in time is fixed but the provider is still copying
    # (EBS); such a snapshot is already restorable once it completes.
    state: State = "completed"
    size_bytes: int | None = None
    # The backup tier (aws-ebs copy_to_backup): the copy of this snapshot outside its
    # failure domain, listed with the original so the catalog shows one record for both.
    backup_id: str = ""
    backup_region: str = ""

    @property
    def created_at(self) -> datetime:
        return self.annotations.created_at


@dataclass(frozen=True)
class Query:
    """Which snapshots to list; every field that is set must match."""

    deployment: str | None = None
    instance_group: str | None = None
    instance: str | None = None  # "group/index" or an instance id
    role: str | None = None
    trigger: str | None = None
    set_id: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None

    def exact_tags(self) -> dict[str, str]:
        """The fields a provider can match by exact tag value, as tags: it then returns less
        (the rest, instance and time, are matched by ``matches``)."""
        fields = {
            "deployment": self.deployment,
            "instance_group": self.instance_group,
            "role": self.role,
            "trigger": self.trigger,
            "set_id": self.set_id,
        }
        return {TAG_PREFIX + k: v for k, v in fields.items() if v is not None}

    def matches(self, snapshot: Snapshot) -> bool:
        a = snapshot.annotations
        checks = (
            self.deployment is None or a.deployment == self.deployment,
            self.instance_group is None or a.instance_group == self.instance_group,
            self.instance is None or self.instance in (a.instance, a.instance_id),
            self.role is None or a.role == self.role,
            self.trigger is None or a.trigger == self.trigger,
            self.set_id is None or a.set_id == self.set_id,
            self.not_before is None or a.created_at >= self.not_before,
            self.not_after is None or a.created_at <= self.not_after,
        )
        return all(checks)


def select(snapshots: Iterable[Snapshot], query: Query = Query()) -> list[Snapshot]:
    """Matching snapshots, newest first (ties broken by id so the order is stable)."""
    chosen = [s for s in snapshots if query.matches(s)]
    return sorted(chosen, key=lambda s: (s.created_at, s.id), reverse=True)
