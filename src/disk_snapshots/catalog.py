"""The catalog: snapshots and their backups as the provider lists them, and queries over them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from typing import TypeVar

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

    @property
    def created_at(self) -> datetime:
        return self.annotations.created_at


@dataclass(frozen=True)
class Backup:
    """A full copy of one of our snapshots outside the snapshot's failure domain.

    It carries the source snapshot's annotations unchanged (its ``created_at`` is the
    point in time the backup holds) and outlives the snapshot: ``source_snapshot`` may
    name a snapshot that is gone, which is when a backup matters.
    """

    id: str  # the provider's own id (loopback bkp-..., an EBS snapshot in the backup region)
    source_snapshot: str
    annotations: Annotations
    # "pending": still being copied (EBS copies on its own; loopback while its process
    # runs); "error": failed or interrupted, never restorable.
    state: State
    started_at: datetime | None = None
    completed_at: datetime | None = None
    size_bytes: int | None = None
    location: str = ""  # where it lives, in the provider's words: a directory, a region
    detail: str = ""  # why it failed, or how far it got

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

    def matches(self, record: Snapshot | Backup) -> bool:
        a = record.annotations
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


Record = TypeVar("Record", Snapshot, Backup)


def select(records: Iterable[Record], query: Query = Query()) -> list[Record]:
    """Matching snapshots (or backups), newest point in time first, ties broken by id so
    the order is stable."""
    chosen = [r for r in records if query.matches(r)]
    return sorted(chosen, key=lambda r: (r.created_at, r.id), reverse=True)
