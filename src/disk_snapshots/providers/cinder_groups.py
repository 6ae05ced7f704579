"""Cinder group snapshots for snapshot sets (API 3.14): the successor of ``cg-snapshot``.

The deployment's volumes join its generic volume group (``disk-snapshots:<deployment>``,
created on demand with the configured group type, or the cloud's default group type) for
the moment of one group snapshot, and leave it again: Cinder refuses to delete a volume
that is in a group, and BOSH must stay able to delete its disks. Cinder snapshots every
volume of the group at one instant (with a group type whose
``consistent_group_snapshot_enabled`` the backend honours, in one backend operation); the
member snapshots then get their annotations, each with the set id.

Cinder deletes a member only with its whole group snapshot, so retention releases members
one by one (metadata) and the last release deletes the group snapshot.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Snapshot
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.cinder_api import CinderApi
from disk_snapshots.providers.cinder_api import CinderNotFound
from disk_snapshots.providers.cinder_metadata import MARKER
from disk_snapshots.providers.cinder_metadata import MARKER_KEY
from disk_snapshots.providers.cinder_metadata import RELEASED_KEY
from disk_snapshots.providers.cinder_metadata import check_owner
from disk_snapshots.providers.cinder_metadata import check_uuid
from disk_snapshots.providers.cinder_metadata import cinder_volume_id
from disk_snapshots.providers.cinder_metadata import is_released
from disk_snapshots.providers.cinder_metadata import metadata_dict
from disk_snapshots.providers.cinder_metadata import metadata_of
from disk_snapshots.providers.group_snapshots import VolumeGroup
from disk_snapshots.vm.instance import Disk

log = logging.getLogger(__name__)

GROUP_NAME_PREFIX = "disk-snapshots:"


def read_volume(api: CinderApi, volume_id: str) -> dict[str, Any]:
    try:
        found = api.request("GET", f"/volumes/{volume_id}", f"reading volume {volume_id}")
    except CinderNotFound:
        raise ProviderError(f"volume {volume_id} does not exist in this project") from None
    return dict(found["volume"])


@contextmanager
def volume_group(
    api: CinderApi,
    disks: Sequence[Disk],
    deployment: str,
    *,
    group_type: str,
    timeout: float,
) -> Iterator[VolumeGroup]:
    """The disks' volumes in the deployment's group until exit, and out of it after."""
    if not disks:
        raise ProviderError("a group snapshot needs at least one disk")
    volume_ids = tuple(dict.fromkeys(cinder_volume_id(d) for d in disks))
    volumes = [read_volume(api, v) for v in volume_ids]
    for volume in volumes:
        check_owner(volume, deployment)
        if volume.get("group_id"):
            raise ProviderError(
                f"volume {volume['id']} is already in group {volume['group_id']}; a volume "
                "can be in one group only"
            )
    types = _volume_type_ids(api, volumes)
    zone = str(volumes[0].get("availability_zone") or "")
    group_id = _group_for(api, deployment, types, zone, group_type, timeout)
    try:
        _update_group(api, group_id, timeout, add=volume_ids)
        yield VolumeGroup(id=group_id, deployment=deployment, volume_ids=volume_ids)
    finally:
        _leave_group(api, group_id, volume_ids, timeout)


def _leave_group(api: CinderApi, group_id: str, volume_ids: Sequence[str], timeout: float) -> None:
    """Take back out of the group whichever of the volumes are in it (after any outcome)."""
    # An add that failed half-way leaves the group updating: let it settle first.
    api.wait("group", group_id, "available", timeout, ("updating",))
    members = [v for v in volume_ids if read_volume(api, v).get("group_id") == group_id]
    if members:
        _update_group(api, group_id, timeout, remove=members)


def _volume_type_ids(api: CinderApi, volumes: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of the volumes' types (before 3.61 a volume names its type only)."""
    names = {str(v.get("volume_type") or "") for v in volumes}
    if "" in names:
        raise ProviderError("a volume without a volume type cannot join a group")
    listed = api.request("GET", "/types", "listing volume types").get("volume_types", [])
    known = {str(t.get("name")): str(t.get("id")) for t in listed}
    missing = sorted(names - set(known) - set(known.values()))
    if missing:
        raise ProviderError(
            f"volume type(s) {', '.join(missing)} are not visible to this project, so no "
            "group can take them"
        )
    return sorted({known.get(name, name) for name in names})


def _group_for(
    api: CinderApi,
    deployment: str,
    volume_types: Sequence[str],
    zone: str,
    group_type: str,
    timeout: float,
) -> str:
    """The deployment's available group that takes these volume types; made when none does."""
    name = GROUP_NAME_PREFIX + deployment
    for page in api.pages("/groups/detail", "groups", {"name": name}, "listing groups"):
        for group in page:
            if group.get("name") != name or group.get("status") != "available":
                continue
            if set(volume_types) <= set(group.get("volume_types") or []):
                return check_uuid(group.get("id"), "group")
    request: dict[str, Any] = {
        "name": name,
        "description": f"disk-snapshots: the volumes of {deployment} join it for group snapshots",
        "volume_types": list(volume_types),
        "group_type": group_type or _default_group_type(api),
    }
    if zone:
        request["availability_zone"] = zone
    created = api.request("POST", "/groups", f"creating group {name}", body={"group": request})
    group_id = check_uuid(created["group"].get("id"), "group")
    api.wait("group", group_id, "available", timeout, ("creating",))
    log.info("created volume group %s (%s)", group_id, name)
    return group_id


def _default_group_type(api: CinderApi) -> str:
    try:
        found = api.request("GET", "/group_types/default", "reading the default group type")
    except CinderNotFound:
        raise ProviderError(
            "this cloud has no default group type: set provider.openstack.group_type to a "
            'group type (ideally one with consistent_group_snapshot_enabled="<is> True")'
        ) from None
    return check_uuid(found["group_type"].get("id"), "group type")


def _update_group(
    api: CinderApi,
    group_id: str,
    timeout: float,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> None:
    change = {"add_volumes": ",".join(add)} if add else {"remove_volumes": ",".join(remove)}
    what = "adding volumes to" if add else "removing volumes from"
    api.request(
        "PUT",
        f"/groups/{group_id}",
        f"{what} group {group_id}",
        body={"group": change},
        # The same membership asked for twice is the same membership.
        retry_ambiguous=True,
    )
    api.wait("group", group_id, "available", timeout, ("updating",))


def snapshot_group(
    api: CinderApi,
    group: VolumeGroup,
    members: Sequence[tuple[Disk, Annotations]],
    *,
    timeout: float,
) -> list[Snapshot]:
    """One group snapshot of every volume in ``group``, returned once Cinder made it."""
    by_volume = {cinder_volume_id(d): a for d, a in members}
    if sorted(by_volume) != sorted(group.volume_ids):
        raise ProviderError(
            "the members' volumes are not the group's: "
            f"{sorted(by_volume)} vs {sorted(group.volume_ids)}"
        )
    set_ids = {a.set_id for a in by_volume.values()}
    set_id = set_ids.pop() if len(set_ids) == 1 else ""
    if not set_id:
        raise ProviderError("every member of a group snapshot carries one and the same set id")
    for annotated in by_volume.values():
        if annotated.deployment != group.deployment:
            raise ProviderError(
                f"a member of set {set_id} is annotated with deployment "
                f"{annotated.deployment!r}, the group is {group.deployment!r}'s"
            )
    # Metadata is checked before anything is made: a member Cinder would refuse must not
    # leave a group snapshot behind.
    metadata = {volume_id: metadata_of(a) for volume_id, a in by_volume.items()}
    created = api.request(
        "POST",
        "/group_snapshots",
        f"creating a group snapshot of group {group.id}",
        body={
            "group_snapshot": {
                "group_id": group.id,
                "name": f"disk-snapshots set {set_id}"[:255],
                "description": f"disk-snapshots set {set_id} of {group.deployment}",
            }
        },
    )["group_snapshot"]
    group_snapshot_id = check_uuid(created.get("id"), "group snapshot")
    api.wait("group_snapshot", group_snapshot_id, "available", timeout, ("creating",))
    taken: list[Snapshot] = []
    for volume_id, annotated in by_volume.items():
        member = _member_of(api, volume_id, group_snapshot_id)
        api.request(
            "POST",
            f"/snapshots/{member}/metadata",
            f"annotating group-snapshot member {member}",
            body={"metadata": metadata[volume_id]},
            retry_ambiguous=True,
        )
        taken.append(Snapshot(id=member, annotations=annotated, state="completed"))
    log.info("group snapshot %s of %s: %d members", group_snapshot_id, group.id, len(taken))
    return taken


def _member_of(api: CinderApi, volume_id: str, group_snapshot_id: str) -> str:
    """The group snapshot's member of one volume (the volume's newest snapshots first)."""
    params = {"volume_id": volume_id, "sort": "created_at:desc"}
    for page in api.pages(
        "/snapshots/detail", "snapshots", params, f"finding the snapshot of {volume_id}"
    ):
        for raw in page:
            if raw.get("group_snapshot_id") == group_snapshot_id:
                return check_uuid(raw.get("id"))
    raise ProviderError(
        f"group snapshot {group_snapshot_id} has no member snapshot of volume {volume_id}"
    )


def release_member(api: CinderApi, member: Mapping[str, Any]) -> None:
    """Let go of one group-snapshot member; the last release deletes the group snapshot.

    Each release writes its own mark before it looks at the others, so whichever release
    comes last sees every mark, however instances interleave.
    """
    snapshot_id = check_uuid(member.get("id"))
    group_snapshot_id = check_uuid(member.get("group_snapshot_id"), "group snapshot")
    api.request(
        "POST",
        f"/snapshots/{snapshot_id}/metadata",
        f"releasing group-snapshot member {snapshot_id}",
        body={"metadata": {RELEASED_KEY: "true"}},
        retry_ambiguous=True,
    )
    set_id = metadata_dict(member).get(TAG_PREFIX + "set_id", "")
    wanted = {MARKER_KEY: MARKER} | ({TAG_PREFIX + "set_id": set_id} if set_id else {})
    siblings = [
        raw
        for page in api.pages(
            "/snapshots/detail",
            "snapshots",
            {"metadata": json.dumps(wanted, sort_keys=True)},
            f"listing the members of group snapshot {group_snapshot_id}",
        )
        for raw in page
        if raw.get("group_snapshot_id") == group_snapshot_id
    ]
    if not all(is_released(metadata_dict(s)) for s in siblings):
        return
    path = f"/group_snapshots/{group_snapshot_id}"
    try:
        api.request("DELETE", path, f"deleting group snapshot {group_snapshot_id}")
    except CinderNotFound:
        return
    except ProviderError:
        # Another instance released the last member at the same moment and won the race.
        try:
            now = api.request("GET", path, "reading the group snapshot")["group_snapshot"]
        except CinderNotFound:
            return
        if now.get("status") != "deleting":
            raise
        return
    log.info("group snapshot %s deleted: every member released", group_snapshot_id)
