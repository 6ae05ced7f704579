"""Cinder group snapshots for snapshot sets (API 3.14): the successor of ``cg-snapshot``.

The deployment's volumes join its generic volume group (``disk-snapshots:<deployment>``,
created on demand with the configured group type, or the cloud's default group type) for
the moment of one group snapshot, and leave it again: Cinder refuses to delete a volume
that is in a group, and BOSH must stay able to delete its disks. Cinder snapshots every
volume of the group at one instant (with a group type whose
``consistent_group_snapshot_enabled`` the backend honours, in one backend operation); the
member snapshots are marked with the set id at once, and each instance then claims its
own and writes its annotations (sets/group.py); what nobody claims is released.

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
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Snapshot
from disk_snapshots.providers.base import Leftover
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.cinder_api import CinderApi
from disk_snapshots.providers.cinder_api import CinderNotFound
from disk_snapshots.providers.cinder_metadata import MARKER
from disk_snapshots.providers.cinder_metadata import MARKER_KEY
from disk_snapshots.providers.cinder_metadata import RELEASED_KEY
from disk_snapshots.providers.cinder_metadata import check_owner
from disk_snapshots.providers.cinder_metadata import check_uuid
from disk_snapshots.providers.cinder_metadata import cinder_volume_id
from disk_snapshots.providers.cinder_metadata import gib_to_bytes
from disk_snapshots.providers.cinder_metadata import is_ours
from disk_snapshots.providers.cinder_metadata import is_released
from disk_snapshots.providers.cinder_metadata import metadata_dict
from disk_snapshots.providers.cinder_metadata import metadata_of
from disk_snapshots.providers.cinder_metadata import timestamp
from disk_snapshots.providers.group_snapshots import VolumeGroup
from disk_snapshots.vm.instance import Disk

log = logging.getLogger(__name__)

GROUP_NAME_PREFIX = "disk-snapshots:"
SET_ID_KEY = TAG_PREFIX + "set_id"


def read_volume(api: CinderApi, volume_id: str) -> dict[str, Any]:
    try:
        found = api.request("GET", f"/volumes/{volume_id}", f"reading volume {volume_id}")
    except CinderNotFound:
        raise ProviderError(f"volume {volume_id} does not exist in this project") from None
    return dict(found["volume"])


def read_snapshot(api: CinderApi, snapshot_id: str) -> dict[str, Any]:
    """A snapshot as Cinder shows it, whoever made it; UnknownSnapshot when absent."""
    check_uuid(snapshot_id)
    try:
        found = api.request("GET", f"/snapshots/{snapshot_id}", f"reading snapshot {snapshot_id}")
    except CinderNotFound:
        raise UnknownSnapshot(f"snapshot {snapshot_id} does not exist in this project") from None
    return dict(found["snapshot"])


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
    api: CinderApi, group: VolumeGroup, set_id: str, *, timeout: float
) -> dict[str, str]:
    """One group snapshot of every volume in ``group``, once Cinder made it: the member
    snapshot of each volume (volume id → snapshot id), marked with the set id but not yet
    annotated (``claim_member`` does that, by the instance whose disk it is)."""
    if not set_id:
        raise ProviderError("a group snapshot belongs to a set: the set id is empty")
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
    pending = {MARKER_KEY: MARKER, SET_ID_KEY: set_id}
    members: dict[str, str] = {}
    for volume_id in group.volume_ids:
        member = _member_of(api, volume_id, group_snapshot_id)
        # Findable by set id (release_member, cleanup) before its instance annotates it.
        api.add_metadata("snapshot", member, pending)
        members[volume_id] = member
    log.info("group snapshot %s of %s: %d members", group_snapshot_id, group.id, len(members))
    return members


def claim_member(
    api: CinderApi, snapshot_id: str, disk: Disk, annotations: Annotations
) -> Snapshot:
    """Annotate the member snapshot of this disk's volume in the set's group snapshot.

    Refused unless the snapshot is of this disk's volume, belongs to a group snapshot,
    carries the set's id and was not released: an instance annotates its own cut only.
    """
    raw = read_snapshot(api, snapshot_id)
    metadata = metadata_dict(raw)
    volume_id = cinder_volume_id(disk)
    problem = ""
    if raw.get("volume_id") != volume_id:
        problem = f"it is a snapshot of volume {raw.get('volume_id')}, this disk is {volume_id}"
    elif not raw.get("group_snapshot_id") or metadata.get(MARKER_KEY) != MARKER:
        problem = "it is not a member of a disk-snapshots group snapshot"
    elif metadata.get(SET_ID_KEY) != annotations.set_id:
        problem = f"it belongs to set {metadata.get(SET_ID_KEY)!r}, not {annotations.set_id!r}"
    elif is_released(metadata) or raw.get("status") != "available":
        problem = f"it is {'released' if is_released(metadata) else raw.get('status')!r}"
    if problem:
        raise ProviderError(f"snapshot {snapshot_id} is not this disk's cut: {problem}")
    # The instant of the cut is the group snapshot's, the same for every member.
    moment = timestamp(raw.get("created_at")) or annotations.created_at
    annotated = replace(annotations, created_at=moment)
    api.add_metadata("snapshot", snapshot_id, metadata_of(annotated))
    return Snapshot(
        id=snapshot_id,
        annotations=annotated,
        state="completed",
        size_bytes=gib_to_bytes(raw.get("size")),
    )


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
    api.add_metadata("snapshot", snapshot_id, {RELEASED_KEY: "true"})
    set_id = metadata_dict(member).get(SET_ID_KEY, "")
    wanted = {MARKER_KEY: MARKER} | ({SET_ID_KEY: set_id} if set_id else {})
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


def release_unclaimed(api: CinderApi, snapshot_id: str) -> None:
    """Release a member no instance claimed (it failed, or never got the request), so the
    group snapshot goes once its last member does. A claimed member is its instance's to
    keep or delete, and is left alone."""
    try:
        raw = read_snapshot(api, snapshot_id)
    except UnknownSnapshot:
        return  # gone already: released is what was asked for
    metadata = metadata_dict(raw)
    if metadata.get(MARKER_KEY) != MARKER or not raw.get("group_snapshot_id"):
        raise ProviderError(
            f"snapshot {snapshot_id} is not a member of a disk-snapshots group snapshot"
        )
    if is_ours(metadata) or is_released(metadata):
        return
    release_member(api, raw)


def cleanup_leftovers(
    api: CinderApi, min_age: timedelta, timeout: float, *, release: bool = True
) -> list[Leftover]:
    """What a set whose coordinator died half-way leaves in the project, older than
    ``min_age`` (no set in flight is that old: a freeze lasts 300 s at most): group-snapshot
    members nobody claimed, released; volumes still in a disk-snapshots group, taken out
    (BOSH cannot delete a disk in a group). With ``release`` false, only listed."""
    cutoff = datetime.now(UTC) - min_age

    def old(raw: Mapping[str, Any]) -> bool:
        moment = timestamp(raw.get("updated_at") or raw.get("created_at"))
        return moment is not None and moment < cutoff

    found: list[Leftover] = []
    marked = {"metadata": json.dumps({MARKER_KEY: MARKER}, sort_keys=True)}
    for page in api.pages("/snapshots/detail", "snapshots", marked, "listing our snapshots"):
        for raw in page:
            metadata = metadata_dict(raw)
            unclaimed = raw.get("group_snapshot_id") and not is_ours(metadata)
            if unclaimed and not is_released(metadata) and old(raw):
                if release:
                    release_member(api, raw)
                found.append(
                    Leftover(
                        "unclaimed group-snapshot member",
                        str(raw["id"]),
                        f"of group snapshot {raw['group_snapshot_id']}",
                    )
                )
    for page in api.pages("/groups/detail", "groups", {}, "listing groups"):
        for group in page:
            if not str(group.get("name", "")).startswith(GROUP_NAME_PREFIX) or not old(group):
                continue
            group_id = check_uuid(group.get("id"), "group")
            members = [str(v["id"]) for v in _volumes_in(api, group_id)]
            if members and group.get("status") == "available":
                if release:
                    _update_group(api, group_id, timeout, remove=members)
                found.extend(
                    Leftover("volume in a disk-snapshots group", m, f"group {group_id}")
                    for m in members
                )
    return found


def _volumes_in(api: CinderApi, group_id: str) -> list[dict[str, Any]]:
    params = {"group_id": group_id}
    action = f"listing the volumes of group {group_id}"
    return [v for page in api.pages("/volumes/detail", "volumes", params, action) for v in page]
