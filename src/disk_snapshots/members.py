"""The deployment's members, as the ``snapshotter`` and ``peers`` links name them.

Sets, restores and the colocated errands all work on the same members: the instances
of the ``snapshotter`` link (the leader group, or the only group) and of the optional
``peers`` link (the data group), each reachable at its link address and agent API
port. Work that belongs to the deployment as a whole is done by one coordinator: the
bootstrap instance of the ``snapshotter`` link, or of this group when no link is wired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from disk_snapshots.config import SnapshotterConfig

LINKS = ("snapshotter", "peers")


@dataclass(frozen=True)
class Member:
    group: str
    index: int
    id: str
    address: str
    port: int = 0  # its agent API port
    bootstrap: bool = False

    @property
    def label(self) -> str:
        """``group/index`` as operators and ``bosh instances`` name it."""
        return f"{self.group}/{self.index}"

    def matches(self, key: str) -> bool:
        """``group/index`` or ``group/id``, as restore.snapshots keys name an instance."""
        group, _, which = key.partition("/")
        return group == self.group and which in (str(self.index), self.id)


def link_members(config: SnapshotterConfig, link_name: str) -> tuple[Member, ...]:
    """One link's instances in the link's order (none when the link is not wired)."""
    link = config.links.get(link_name)
    if link is None:
        return ()
    return tuple(
        Member(i.name, i.index, i.id, i.address, link.api_port, i.bootstrap) for i in link.instances
    )


def myself(config: SnapshotterConfig) -> Member:
    spec = config.spec
    return Member(spec.name, spec.index, spec.id, spec.address, config.api.port, spec.bootstrap)


def linked(config: SnapshotterConfig) -> tuple[Member, ...]:
    """The ``snapshotter`` link's instances, then the ``peers`` link's, each once; this
    instance alone when neither link is wired."""
    found: dict[str, Member] = {}
    for name in LINKS:
        for member in link_members(config, name):
            found.setdefault(member.id, member)
    return tuple(found.values()) or (myself(config),)


def with_myself(config: SnapshotterConfig) -> tuple[Member, ...]:
    """Every linked instance and this one, sorted by group, index and id."""
    found = {m.id: m for m in linked(config)}
    found.setdefault(config.spec.id, myself(config))
    return tuple(sorted(found.values(), key=lambda m: (m.group, m.index, m.id)))


def bootstrap_of(members: Sequence[Member]) -> Member:
    """The bootstrap instance, else the lowest index."""
    return next((m for m in members if m.bootstrap), min(members, key=lambda m: m.index))


def coordinator(config: SnapshotterConfig) -> tuple[bool, str]:
    """Whether this instance coordinates, and how to name the one that does."""
    group = link_members(config, "snapshotter")
    spec = config.spec
    if not group:
        me = f"{spec.name}/{spec.index} ({spec.id})"
        return spec.bootstrap, me if spec.bootstrap else f"the bootstrap instance of {spec.name}"
    chosen = bootstrap_of(group)
    return chosen.id == spec.id, f"{chosen.label} ({chosen.id})"
