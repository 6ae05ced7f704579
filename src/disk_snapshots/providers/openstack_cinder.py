"""The ``openstack-cinder`` provider: snapshots whose Cinder metadata is the catalog (DESIGN §4).

On OpenStack the BOSH disk CID is the Cinder volume id. A snapshot is one
``POST /snapshots`` with ``force`` (the volume is in use) and every annotation as
``disk-snapshots:*`` metadata in the same request, so no snapshot of ours exists without
its annotations. Cinder fixes the point in time when the backend has made the snapshot,
not when the API answers (202), so ``snapshot`` polls until ``available``, with a
deadline, inside the freeze.

Besides the ``Provider`` protocol this module holds the Cinder primitives that the set
coordinator, the backup tier and the replace restore build on:

- group snapshots (``volume_group`` + ``snapshot_group``): the deployment's volumes
  join a generic volume group for the moment of one group snapshot (API 3.14), so the
  cut is consistent at the storage level too; each member snapshot carries the set id;
- backups (``backup``, ``backups``, ``delete_backup``): ``backup-create`` from a
  snapshot, full first and incremental after, with the annotations as backup metadata
  (API 3.43);
- new volumes (``volume_from_snapshot``, ``volume_from_backup``) in a given
  availability zone, tagged with our metadata, waited for until ``available``: what a
  replace restore hands to ``bosh attach-disk``.

A copy restore needs the new volume attached to this VM, which is Nova's
(``os-volume_attachments``); ``materialize`` refuses and points to the replace method.

Requests go through openstacksdk's session (Keystone v3 password or application
credential, the service catalog's block-storage endpoint for the region and interface)
with the microversion pinned. Reads are retried on 5xx, timeouts and refused
connections; a create is retried only when the request cannot have reached Cinder
(or, for snapshots, after looking for the snapshot the lost answer was about).
Credentials reach keystoneauth and nothing else: no log line, message or repr.
"""

from __future__ import annotations

import builtins
import json
import logging
import random
import re
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import AbstractContextManager
from contextlib import contextmanager
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any
from typing import Literal

from keystoneauth1 import exceptions as ks_exceptions

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import State
from disk_snapshots.catalog import select
from disk_snapshots.config import OpenstackSettings
from disk_snapshots.instance import Disk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot

log = logging.getLogger(__name__)

# 3.14 group snapshots, 3.22 snapshot metadata filters, 3.43 backup metadata, 3.47 a
# volume created from a backup (with its zone and metadata): Queens (2018) or later.
MICROVERSION = "3.47"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Cinder limits metadata keys and values to 255 characters (our tags allow 256).
MAX_METADATA_VALUE = 255
# Every snapshot, backup and volume of ours carries this: the list filter, and the
# proof of ownership before anything is changed or deleted.
MARKER_KEY = TAG_PREFIX + "provider"
MARKER = "openstack-cinder"
SCHEMA_KEY = TAG_PREFIX + "schema"
SOURCE_SNAPSHOT_KEY = TAG_PREFIX + "source_snapshot"
SOURCE_BACKUP_KEY = TAG_PREFIX + "source_backup"
# A group-snapshot member that retention let go of (Cinder deletes members only
# together, as their group snapshot).
RELEASED_KEY = TAG_PREFIX + "released"
PROVIDER_KEYS = (MARKER_KEY, SOURCE_SNAPSHOT_KEY, SOURCE_BACKUP_KEY, RELEASED_KEY)
# Free text may be cut to fit; identifiers never are.
TRUNCATABLE = (TAG_PREFIX + "note", TAG_PREFIX + "set_reason")
# The volume metadata the OpenStack CPI writes from the Director's set_disk_metadata.
BOSH_DEPLOYMENT_KEY = "deployment"
GROUP_NAME_PREFIX = "disk-snapshots:"

CINDER_STATES: Mapping[str, State] = {
    "creating": "pending",
    "available": "completed",
    # Still a whole snapshot while Cinder reads it.
    "backing-up": "completed",
    "restoring": "completed",
}

# Statuses worth retrying: the request was not processed (or may be processed again).
GATEWAY = frozenset({429, 502, 503, 504})
SERVER = frozenset({500}) | GATEWAY

Method = Literal["GET", "POST", "PUT", "DELETE"]


def check_uuid(value: object, what: str = "snapshot") -> str:
    """Refuse anything but a Cinder UUID before it reaches a URL."""
    if not isinstance(value, str) or not UUID.match(value):
        message = f"{value!r} is not a Cinder {what} id (a lowercase UUID)"
        if what == "snapshot":
            raise UnknownSnapshot(message)
        raise ProviderError(message)
    return value


def cinder_volume_id(disk: Disk) -> str:
    """The Cinder volume behind a BOSH disk: the agent's hint, else the CID itself."""
    for candidate in (disk.hint.get("volume_id"), disk.hint.get("VolumeID"), disk.cid):
        if isinstance(candidate, str) and UUID.match(candidate):
            return candidate
    raise ProviderError(
        f"disk {disk.cid} has no Cinder volume id (neither the CID nor the agent's hint "
        "volume_id is a UUID): is this instance on OpenStack?"
    )


def display_name(a: Annotations) -> str:
    moment = a.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{a.deployment}/{a.instance_group}/{a.index} {a.trigger} {moment}"[:255]


def metadata_of(annotations: Annotations) -> dict[str, str]:
    """The annotations as Cinder metadata, with our marker."""
    metadata = annotations.to_tags()
    for key, value in metadata.items():
        if len(value) <= MAX_METADATA_VALUE:
            continue
        if key not in TRUNCATABLE:
            raise ProviderError(
                f"annotation {key} is {len(value)} characters long; Cinder keeps at most "
                f"{MAX_METADATA_VALUE}"
            )
        metadata[key] = value[: MAX_METADATA_VALUE - 1] + "…"
    return metadata | {MARKER_KEY: MARKER}


def annotation_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Our keys minus the provider's bookkeeping: what a backup or a new volume carries."""
    return {
        k: v for k, v in metadata.items() if k.startswith(TAG_PREFIX) and k not in PROVIDER_KEYS
    }


def state_of(status: object) -> State:
    return CINDER_STATES.get(str(status), "error")


def metadata_filter(query: Query) -> dict[str, str]:
    """The query fields Cinder can match exactly in metadata, so less comes back."""
    fields = {
        "deployment": query.deployment,
        "instance_group": query.instance_group,
        "role": query.role,
        "trigger": query.trigger,
        "set_id": query.set_id,
    }
    return {MARKER_KEY: MARKER} | {TAG_PREFIX + k: v for k, v in fields.items() if v is not None}


def is_ours(metadata: Mapping[str, str]) -> bool:
    return metadata.get(MARKER_KEY) == MARKER and SCHEMA_KEY in metadata


def _gib(size: object) -> int | None:
    return size * 2**30 if isinstance(size, int) and not isinstance(size, bool) else None


def _timestamp(text: object) -> datetime | None:
    """Cinder's ``created_at`` (ISO 8601, UTC, usually without a zone)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _cinder_message(body: object) -> str:
    """Cinder's error text from ``{"badRequest": {"message": ..., "code": 400}}``."""
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])
    return ""


@dataclass(frozen=True)
class Backup:
    """A backup of one of our snapshots: its own id, and what it was taken of."""

    id: str
    snapshot_id: str
    volume_id: str
    annotations: Annotations
    state: State
    incremental: bool
    size_bytes: int | None
    created_at: datetime | None
    availability_zone: str


@dataclass(frozen=True)
class NewVolume:
    """A volume made from a snapshot or backup, available and not attached anywhere."""

    id: str
    availability_zone: str
    size_bytes: int | None
    source_id: str


@dataclass(frozen=True)
class VolumeGroup:
    """The deployment's generic volume group while its volumes are members."""

    id: str
    deployment: str
    volume_ids: tuple[str, ...]


class OpenstackCinderProvider:
    name = "openstack-cinder"

    def __init__(
        self,
        settings: OpenstackSettings,
        *,
        session_factory: Callable[[OpenstackSettings, float, Path | None], Any] | None = None,
        timeout: float = 30.0,
        attempts: int = 4,
        retry_delays: Sequence[float] = (1.0, 2.0, 4.0),
        poll_interval: float = 0.5,
        snapshot_timeout: float = 300.0,
        backup_timeout: float = 3600.0,
        volume_timeout: float = 600.0,
        page_size: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.auth_url and not settings.endpoint:
            raise ProviderError(
                "provider.openstack.auth_url is required for the openstack-cinder provider"
            )
        self.settings = settings
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.retry_delays = tuple(retry_delays)
        self.poll_interval = poll_interval
        self.snapshot_timeout = snapshot_timeout
        self.backup_timeout = backup_timeout
        self.volume_timeout = volume_timeout
        self.page_size = page_size
        self.sleep = sleep
        self._session_factory = session_factory or connect
        self._adapter: Any = None
        self._ca_dir: tempfile.TemporaryDirectory[str] | None = None
        self._checked_version = False
        # Volumes looked at by prepare(), so snapshot() inside the freeze needs one request.
        self._prepared: dict[str, Mapping[str, Any]] = {}

    @classmethod
    def from_config(cls, settings: OpenstackSettings) -> OpenstackCinderProvider:
        return cls(settings)

    def __repr__(self) -> str:
        where = self.settings.endpoint or self.settings.auth_url
        return f"OpenstackCinderProvider({where!r}, region={self.settings.region!r})"

    def __enter__(self) -> OpenstackCinderProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._adapter is not None:
            self._adapter.session.session.close()
            self._adapter = None
        if self._ca_dir is not None:
            self._ca_dir.cleanup()
            self._ca_dir = None

    # -- transport ------------------------------------------------------------------------

    def _block_storage(self) -> Any:
        if self._adapter is None:
            ca_file: Path | None = None
            if self.settings.ca_cert:
                self._ca_dir = tempfile.TemporaryDirectory(prefix="disk-snapshots-ca-")
                ca_file = Path(self._ca_dir.name) / "ca.pem"
                ca_file.write_text(self.settings.ca_cert)
            try:
                self._adapter = self._session_factory(self.settings, self.timeout, ca_file)
            except Exception as err:  # openstacksdk's config raises its own types
                raise ProviderError(f"cannot set up the OpenStack connection: {err}") from None
        return self._adapter

    def _scrub(self, text: str) -> str:
        for secret in (self.settings.api_key, self.settings.application_credential_secret):
            if secret:
                text = text.replace(secret, "<secret>")
        return text

    def _auth_error(self, action: str, err: Exception) -> ProviderError:
        if isinstance(err, ks_exceptions.Unauthorized):
            if self.settings.application_credential_id:
                which = "provider.openstack.application_credential_id/application_credential_secret"
            else:
                which = "provider.openstack.username/api_key/domain/project"
            return ProviderError(
                f"{action}: Keystone at {self.settings.auth_url} rejected the credentials "
                f"(HTTP 401); check {which}"
            )
        if isinstance(err, ks_exceptions.EndpointNotFound):
            return ProviderError(
                f"{action}: the service catalog has no block-storage (Cinder v3) endpoint for "
                f"region {self.settings.region or '(any)'!r} and interface "
                f"{self.settings.interface!r}; check provider.openstack.region/interface, or "
                "set provider.openstack.endpoint"
            )
        return ProviderError(f"{action}: authentication failed: {self._scrub(str(err))}")

    def _request(
        self,
        method: Method,
        path: str,
        action: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        ok: Sequence[int] = (200, 202),
        retry_ambiguous: bool | None = None,
    ) -> Any:
        """One API call with retries; the parsed JSON body, or ProviderError/UnknownSnapshot.

        ``retry_ambiguous``: whether a 500 or a timeout may be retried, i.e. whether doing
        the call twice is harmless (default: only for GET).
        """
        if retry_ambiguous is None:
            retry_ambiguous = method == "GET"
        adapter = self._block_storage()
        if not self._checked_version:
            self._check_version(adapter)
        delays = iter(self.retry_delays)
        attempt = 0
        while True:
            attempt += 1
            problem: str
            try:
                response = adapter.request(
                    path,
                    method,
                    json=body,
                    params=dict(params or {}),
                    headers={
                        "OpenStack-API-Version": f"volume {MICROVERSION}",
                        "Accept": "application/json",
                    },
                    raise_exc=False,
                    connect_retries=0,
                )
            except (ks_exceptions.Unauthorized, ks_exceptions.EndpointNotFound) as err:
                raise self._auth_error(action, err) from None
            except ks_exceptions.ConnectFailure as err:
                # Refused or reset before an answer: nothing to lose by sending it again
                # only when the connection was never made; keystoneauth does not say
                # which, so a create is retried only when that is harmless.
                problem = f"cannot connect ({self._scrub(str(err))})"
                retryable = retry_ambiguous or "refused" in str(err).lower()
            except ks_exceptions.ConnectTimeout as err:
                problem = f"no answer within {self.timeout:.0f}s ({self._scrub(str(err))})"
                retryable = retry_ambiguous
            except ks_exceptions.ClientException as err:
                raise self._auth_error(action, err) from None
            else:
                status = int(response.status_code)
                if status in ok:
                    if not response.content:
                        return {}
                    try:
                        return response.json()
                    except ValueError:
                        raise ProviderError(
                            f"{action}: Cinder answered {status} with a body that is not JSON"
                        ) from None
                try:
                    message = _cinder_message(response.json())
                except ValueError:
                    message = ""
                message = self._scrub(message or response.text[:200])
                if status == 404:
                    raise UnknownSnapshot(f"{action}: not found ({message})")
                if status == 401:
                    raise ProviderError(
                        f"{action}: Cinder rejected the token (HTTP 401: {message}); check "
                        "the provider.openstack credentials"
                    )
                if status == 403:
                    raise ProviderError(
                        f"{action}: the credentials lack permission (HTTP 403: {message}); "
                        "the project's member role is needed for snapshots, groups and backups"
                    )
                problem = f"HTTP {status}: {message}"
                retryable = status in GATEWAY or (retry_ambiguous and status in SERVER)
                if status not in SERVER:
                    raise ProviderError(f"{action}: Cinder refused: {problem}")
            delay = next(delays, None) if attempt < self.attempts else None
            if not retryable or delay is None:
                tried = f" after {attempt} attempts" if attempt > 1 else ""
                raise ProviderError(f"{action} failed{tried}: {problem}")
            # Jitter, so that instances failing together do not retry together.
            wait = delay * (0.5 + random.random() / 2)  # noqa: S311 - not cryptographic
            log.warning("%s: %s; retrying in %.1fs", action, problem, wait)
            self.sleep(wait)

    def _check_version(self, adapter: Any) -> None:
        """Refuse a Cinder older than the microversion every call here asks for."""
        try:
            # keystoneauth's version discovery (cached in the session).
            data = adapter.get_endpoint_data()
        except (ks_exceptions.Unauthorized, ks_exceptions.EndpointNotFound) as err:
            raise self._auth_error("connecting to Cinder", err) from None
        except ks_exceptions.ClientException:
            # A fault on the way is for the real call to report, with its retries.
            return
        highest = getattr(data, "max_microversion", None)
        if highest is not None and tuple(highest) < _version_tuple(MICROVERSION):
            raise ProviderError(
                "this Cinder supports the block-storage API up to "
                f"{'.'.join(map(str, highest))}; the openstack-cinder provider needs "
                f"{MICROVERSION} (OpenStack Queens or later)"
            )
        self._checked_version = True

    def _wait(
        self,
        kind: Literal["snapshot", "backup", "volume", "group", "group_snapshot"],
        resource_id: str,
        want: str,
        timeout: float,
        transitional: Sequence[str],
    ) -> dict[str, Any]:
        """Poll ``resource_id`` until its status is ``want``; error states raise with the fault."""
        path = {
            "snapshot": "/snapshots/",
            "backup": "/backups/",
            "volume": "/volumes/",
            "group": "/groups/",
            "group_snapshot": "/group_snapshots/",
        }[kind] + resource_id
        deadline = time.monotonic() + timeout
        while True:
            resource = self._request("GET", path, f"reading {kind} {resource_id}")[kind]
            status = str(resource.get("status", ""))
            if status == want:
                return dict(resource)
            if status not in transitional:
                fault = self._fault(resource_id) or resource.get("fail_reason") or ""
                raise ProviderError(
                    f"{kind} {resource_id} went into status {status!r}"
                    + (f": {fault}" if fault else " (Cinder recorded no reason)")
                )
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"{kind} {resource_id} is still {status!r} after {timeout:.0f}s"
                )
            self.sleep(self.poll_interval)

    def _fault(self, resource_id: str) -> str:
        """Cinder's user messages about a resource (its fault, as the API tells it)."""
        try:
            messages = self._request(
                "GET",
                "/messages",
                "reading Cinder's messages",
                params={"resource_uuid": resource_id},
            ).get("messages", [])
        except ProviderError:
            return ""
        return "; ".join(str(m.get("user_message", "")) for m in messages if m.get("user_message"))

    def _pages(
        self, path: str, key: str, params: Mapping[str, str | int], action: str
    ) -> Iterator[builtins.list[dict[str, Any]]]:
        """Every page of a list, by ``marker``/``limit`` (the last id of a page is the marker)."""
        marker = ""
        while True:
            page_params: dict[str, str | int] = {**params, "limit": self.page_size}
            if marker:
                page_params["marker"] = marker
            body = self._request("GET", path, action, params=page_params)
            page = body.get(key, [])
            yield page
            if len(page) < self.page_size or not body.get(f"{key}_links"):
                return
            marker = str(page[-1]["id"])

    # -- volumes --------------------------------------------------------------------------

    def _volume(self, volume_id: str) -> dict[str, Any]:
        try:
            return dict(
                self._request("GET", f"/volumes/{volume_id}", f"reading volume {volume_id}")[
                    "volume"
                ]
            )
        except UnknownSnapshot:
            raise ProviderError(f"volume {volume_id} does not exist in this project") from None

    def _check_deployment(self, volume: Mapping[str, Any], deployment: str) -> None:
        owner = (volume.get("metadata") or {}).get(BOSH_DEPLOYMENT_KEY, "")
        if owner and owner != deployment:
            raise ProviderError(
                f"volume {volume.get('id')} belongs to deployment {owner!r}, not {deployment!r}: "
                "refusing to snapshot another deployment's disk"
            )

    def prepare(self, disk: Disk) -> None:
        """Authentication, the endpoint and the volume, before the freeze."""
        volume_id = cinder_volume_id(disk)
        self._prepared = {volume_id: self._volume(volume_id)}

    # -- snapshots ------------------------------------------------------------------------

    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        """A snapshot with the annotations as metadata, returned once Cinder made it."""
        volume_id = cinder_volume_id(disk)
        volume = self._prepared.pop(volume_id, None) or self._volume(volume_id)
        self._check_deployment(volume, annotations.deployment)
        metadata = metadata_of(annotations)
        request = {
            "snapshot": {
                "volume_id": volume_id,
                "name": display_name(annotations),
                "description": f"disk-snapshots {annotations.trigger} of {annotations.instance}",
                # The volume is attached (in-use): Cinder wants force before 3.66.
                "force": True,
                "metadata": metadata,
            }
        }
        action = f"creating a snapshot of volume {volume_id}"
        try:
            created = self._request("POST", "/snapshots", action, body=request)["snapshot"]
        except ProviderError as err:
            # A lost answer may hide a snapshot that was made: find it before giving up.
            found = self._find_snapshot(volume_id, annotations)
            if found is None:
                raise ProviderError(f"{err}; no snapshot of {volume_id} was taken") from None
            log.warning("%s: the answer was lost, but snapshot %s exists", action, found)
            created = {"id": found}
        snapshot_id = check_uuid(created.get("id"))
        raw = self._wait("snapshot", snapshot_id, "available", self.snapshot_timeout, ("creating",))
        return self._record(raw)

    def _find_snapshot(self, volume_id: str, annotations: Annotations) -> str | None:
        """The snapshot a create request with these annotations made, if it did."""
        tags = annotations.to_tags()
        wanted = {
            MARKER_KEY: MARKER,
            TAG_PREFIX + "instance_id": tags[TAG_PREFIX + "instance_id"],
            TAG_PREFIX + "created_at": tags[TAG_PREFIX + "created_at"],
        }
        try:
            for page in self._pages(
                "/snapshots/detail",
                "snapshots",
                {"volume_id": volume_id, "metadata": json.dumps(wanted)},
                f"looking for the snapshot of {volume_id} just requested",
            ):
                for raw in page:
                    return check_uuid(raw.get("id"))
        except ProviderError:
            return None
        return None

    def _record(self, raw: Mapping[str, Any]) -> Snapshot:
        metadata = {str(k): str(v) for k, v in (raw.get("metadata") or {}).items()}
        return Snapshot(
            id=check_uuid(raw.get("id")),
            annotations=Annotations.from_tags(metadata),
            state=state_of(raw.get("status")),
            size_bytes=_gib(raw.get("size")),
        )

    def _ours(self, snapshot_id: str) -> dict[str, Any]:
        check_uuid(snapshot_id)
        try:
            raw = dict(
                self._request(
                    "GET", f"/snapshots/{snapshot_id}", f"reading snapshot {snapshot_id}"
                )["snapshot"]
            )
        except UnknownSnapshot:
            raise UnknownSnapshot(
                f"snapshot {snapshot_id} does not exist in this project"
            ) from None
        metadata = raw.get("metadata") or {}
        if not is_ours(metadata):
            raise UnknownSnapshot(
                f"snapshot {snapshot_id} has no {MARKER_KEY}={MARKER} and {SCHEMA_KEY} "
                "metadata: it was not taken by disk-snapshots, so this release will not read, "
                "change or delete it"
            )
        if metadata.get(RELEASED_KEY) == "true":
            raise UnknownSnapshot(
                f"snapshot {snapshot_id} was deleted (a group-snapshot member Cinder keeps "
                "until every member is released)"
            )
        return raw

    def get(self, snapshot_id: str) -> Snapshot:
        raw = self._ours(snapshot_id)
        try:
            return self._record(raw)
        except AnnotationError as err:
            raise ProviderError(f"snapshot {snapshot_id} has damaged metadata: {err}") from None

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        """Rewrite the annotation metadata (every field, so none goes stale)."""
        raw = self._ours(snapshot_id)
        metadata = metadata_of(annotations)
        self._request(
            "POST",
            f"/snapshots/{snapshot_id}/metadata",
            f"updating the metadata of snapshot {snapshot_id}",
            body={"metadata": metadata},
            retry_ambiguous=True,  # setting the same keys twice is harmless
        )
        return self._record({**raw, "metadata": {**(raw.get("metadata") or {}), **metadata}})

    def delete(self, snapshot_id: str) -> None:
        """Delete a snapshot of ours; a group-snapshot member is released instead.

        Cinder deletes the members of a group snapshot only together, so a member is
        marked released (and disappears from the catalog); the group snapshot goes when
        its last member is released.
        """
        raw = self._ours(snapshot_id)
        group_snapshot_id = raw.get("group_snapshot_id")
        if not group_snapshot_id:
            # Gone already (another instance's retention): what was asked for holds.
            with suppress(UnknownSnapshot):
                self._request(
                    "DELETE", f"/snapshots/{snapshot_id}", f"deleting snapshot {snapshot_id}"
                )
            return
        self._request(
            "POST",
            f"/snapshots/{snapshot_id}/metadata",
            f"releasing group-snapshot member {snapshot_id}",
            body={"metadata": {RELEASED_KEY: "true"}},
            retry_ambiguous=True,
        )
        self._delete_released_group_snapshot(str(group_snapshot_id), raw)

    def _delete_released_group_snapshot(
        self, group_snapshot_id: str, member: Mapping[str, Any]
    ) -> None:
        # Every member carries the same set id; each release checks after writing its own
        # mark, so the last one to be released always sees every mark.
        set_id = (member.get("metadata") or {}).get(TAG_PREFIX + "set_id", "")
        if not set_id:
            return
        members = [
            raw
            for page in self._pages(
                "/snapshots/detail",
                "snapshots",
                {"metadata": json.dumps({MARKER_KEY: MARKER, TAG_PREFIX + "set_id": set_id})},
                f"listing the members of group snapshot {group_snapshot_id}",
            )
            for raw in page
            if raw.get("group_snapshot_id") == group_snapshot_id
        ]
        if any((m.get("metadata") or {}).get(RELEASED_KEY) != "true" for m in members):
            return
        try:
            self._request(
                "DELETE",
                f"/group_snapshots/{group_snapshot_id}",
                f"deleting group snapshot {group_snapshot_id}, every member released",
            )
        except UnknownSnapshot:
            pass
        except ProviderError as err:
            # Another instance released the last member at the same time and won.
            if "status must be available or error" not in str(err):
                raise

    def list(self, query: Query | None = None) -> builtins.list[Snapshot]:
        """Our snapshots, from their metadata alone, newest first."""
        query = query or Query()
        found: builtins.list[Snapshot] = []
        skipped = 0
        params = {"metadata": json.dumps(metadata_filter(query), sort_keys=True)}
        for page in self._pages("/snapshots/detail", "snapshots", params, "listing snapshots"):
            for raw in page:
                metadata = raw.get("metadata") or {}
                if not is_ours(metadata) or metadata.get(RELEASED_KEY) == "true":
                    continue
                try:
                    found.append(self._record(raw))
                except (AnnotationError, UnknownSnapshot) as err:
                    # A damaged snapshot: skipped, but never silently.
                    skipped += 1
                    log.warning("ignoring Cinder snapshot %s: %s", raw.get("id"), err)
        if skipped:
            log.warning(
                "%d Cinder snapshot(s) with damaged disk-snapshots metadata ignored", skipped
            )
        return select(found, query)

    def materialize(self, snapshot_id: str, az: str = "") -> AbstractContextManager[Path]:
        """Refused: a copy restore needs the new volume attached here, which is Nova's job."""
        raise ProviderError(
            f"openstack-cinder cannot restore snapshot {snapshot_id} by copying: attaching a "
            "volume made from it to this VM needs Nova (os-volume_attachments), which this "
            "release does not drive. Restore with --method replace instead: the snapshotter "
            "makes a new volume from the snapshot and the operator's command attaches it "
            "with bosh attach-disk"
        )

    # -- group snapshots (sets) -----------------------------------------------------------

    @contextmanager
    def volume_group(self, disks: Sequence[Disk], deployment: str) -> Iterator[VolumeGroup]:
        """The deployment's volumes in its generic volume group, for one group snapshot.

        Done before the freeze. The volumes leave the group on exit, always: Cinder
        refuses to delete a volume that is in a group, and BOSH must stay able to delete
        its disks.
        """
        if not disks:
            raise ProviderError("a group snapshot needs at least one disk")
        volume_ids = tuple(dict.fromkeys(cinder_volume_id(d) for d in disks))
        volumes = [self._volume(v) for v in volume_ids]
        for volume in volumes:
            self._check_deployment(volume, deployment)
            if volume.get("group_id"):
                raise ProviderError(
                    f"volume {volume['id']} is already in group {volume['group_id']}: a volume "
                    "can be in one group only; remove it from that group first"
                )
        types = sorted({str(v.get("volume_type_id") or "") for v in volumes} - {""})
        if len(types) < len(volumes) and any(not v.get("volume_type_id") for v in volumes):
            raise ProviderError("a volume without a volume type cannot join a group")
        group = self._group_for(deployment, types, volumes[0].get("availability_zone") or "")
        added = False
        try:
            self._update_group(group, add=volume_ids)
            added = True
            yield VolumeGroup(id=group, deployment=deployment, volume_ids=volume_ids)
        finally:
            if added:
                self._update_group(group, remove=volume_ids)

    def _group_for(self, deployment: str, volume_types: Sequence[str], zone: str) -> str:
        """The deployment's group that takes these volume types, made when there is none."""
        name = GROUP_NAME_PREFIX + deployment
        for page in self._pages("/groups/detail", "groups", {"name": name}, "listing groups"):
            for group in page:
                if group.get("name") != name or group.get("status") != "available":
                    continue
                if set(volume_types) <= set(group.get("volume_types") or []):
                    return check_uuid(group.get("id"), "group")
        request: dict[str, Any] = {
            "name": name,
            "description": f"disk-snapshots: the volumes of deployment {deployment} "
            "join it for a group snapshot",
            "volume_types": list(volume_types),
        }
        if self.settings.group_type:
            request["group_type"] = self.settings.group_type
        else:
            request["group_type"] = self._default_group_type()
        if zone:
            request["availability_zone"] = zone
        created = self._request(
            "POST", "/groups", f"creating group {name}", body={"group": request}
        )
        group_id = check_uuid(created["group"].get("id"), "group")
        self._wait("group", group_id, "available", self.volume_timeout, ("creating",))
        log.info("created volume group %s (%s)", group_id, name)
        return group_id

    def _default_group_type(self) -> str:
        try:
            found = self._request("GET", "/group_types/default", "reading the default group type")
        except UnknownSnapshot:
            raise ProviderError(
                "this cloud has no default group type: set provider.openstack.group_type to a "
                'group type (ideally with consistent_group_snapshot_enabled="<is> True")'
            ) from None
        return check_uuid(found["group_type"].get("id"), "group type")

    def _update_group(
        self, group_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        change = {"add_volumes": ",".join(add)} if add else {"remove_volumes": ",".join(remove)}
        what = "adding volumes to" if add else "removing volumes from"
        self._request(
            "PUT",
            f"/groups/{group_id}",
            f"{what} group {group_id}",
            body={"group": change},
            retry_ambiguous=True,  # the same membership twice is the same membership
        )
        self._wait("group", group_id, "available", self.volume_timeout, ("updating",))

    def snapshot_group(
        self, group: VolumeGroup, members: Sequence[tuple[Disk, Annotations]]
    ) -> builtins.list[Snapshot]:
        """One group snapshot of every volume in ``group``; returns once Cinder made it.

        ``members`` pairs each disk with its annotations; all carry the same set id and
        set size. Each member snapshot gets its annotations as metadata.
        """
        by_volume = {cinder_volume_id(d): a for d, a in members}
        if set(by_volume) != set(group.volume_ids):
            raise ProviderError(
                "the members' volumes are not the group's: "
                f"{sorted(by_volume)} vs {sorted(group.volume_ids)}"
            )
        set_ids = {a.set_id for a in by_volume.values()}
        if len(set_ids) != 1 or not next(iter(set_ids)):
            raise ProviderError("every member of a group snapshot carries one and the same set id")
        set_id = next(iter(set_ids))
        for annotated in by_volume.values():
            if annotated.deployment != group.deployment:
                raise ProviderError(
                    f"a member of set {set_id} is annotated with deployment "
                    f"{annotated.deployment!r}, the group is {group.deployment!r}'s"
                )
        created = self._request(
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
        self._wait(
            "group_snapshot", group_snapshot_id, "available", self.snapshot_timeout, ("creating",)
        )
        taken: builtins.list[Snapshot] = []
        for volume_id, wanted in by_volume.items():
            member = self._group_member(volume_id, group_snapshot_id)
            metadata = metadata_of(wanted)
            self._request(
                "POST",
                f"/snapshots/{member}/metadata",
                f"annotating group-snapshot member {member}",
                body={"metadata": metadata},
                retry_ambiguous=True,
            )
            taken.append(Snapshot(id=member, annotations=wanted, state="completed"))
        return taken

    def _group_member(self, volume_id: str, group_snapshot_id: str) -> str:
        params = {"volume_id": volume_id, "sort": "created_at:desc"}
        for page in self._pages(
            "/snapshots/detail", "snapshots", params, f"finding the snapshot of {volume_id}"
        ):
            for raw in page:
                if raw.get("group_snapshot_id") == group_snapshot_id:
                    return check_uuid(raw.get("id"))
        raise ProviderError(
            f"group snapshot {group_snapshot_id} has no member snapshot of volume {volume_id}"
        )

    # -- backups --------------------------------------------------------------------------

    def backup(self, snapshot_id: str, *, incremental: bool | None = None) -> Backup:
        """``backup-create`` from one of our snapshots, returned once available.

        Incremental when the volume already has an available backup (Cinder chains it to
        the newest one), full otherwise; ``incremental`` forces the choice. The live
        volume is not read: Cinder backs up the snapshot.
        """
        raw = self._ours(snapshot_id)
        snapshot = self._record(raw)
        if snapshot.state != "completed":
            raise ProviderError(f"snapshot {snapshot_id} is {raw.get('status')!r}: not backed up")
        volume_id = check_uuid(raw.get("volume_id"), "volume")
        if incremental is None:
            incremental = any(b.state == "completed" for b in self.backups(volume_id=volume_id))
        metadata = annotation_metadata(raw.get("metadata") or {}) | {
            MARKER_KEY: MARKER,
            SOURCE_SNAPSHOT_KEY: snapshot_id,
        }
        created = self._request(
            "POST",
            "/backups",
            f"creating a backup of snapshot {snapshot_id}",
            body={
                "backup": {
                    "volume_id": volume_id,
                    "snapshot_id": snapshot_id,
                    "incremental": incremental,
                    "force": True,
                    "name": (display_name(snapshot.annotations) + " backup")[:255],
                    "description": f"disk-snapshots backup of snapshot {snapshot_id}",
                    "metadata": metadata,
                }
            },
        )["backup"]
        backup_id = check_uuid(created.get("id"), "backup")
        done = self._wait("backup", backup_id, "available", self.backup_timeout, ("creating",))
        return self._backup_record(done)

    def _backup_record(self, raw: Mapping[str, Any]) -> Backup:
        metadata = {str(k): str(v) for k, v in (raw.get("metadata") or {}).items()}
        return Backup(
            id=check_uuid(raw.get("id"), "backup"),
            snapshot_id=metadata.get(SOURCE_SNAPSHOT_KEY, ""),
            volume_id=str(raw.get("volume_id") or ""),
            annotations=Annotations.from_tags(metadata),
            state=state_of(raw.get("status")),
            incremental=bool(raw.get("is_incremental")),
            size_bytes=_gib(raw.get("size")),
            created_at=_timestamp(raw.get("created_at")),
            availability_zone=str(raw.get("availability_zone") or ""),
        )

    def backups(
        self, query: Query | None = None, *, volume_id: str | None = None
    ) -> builtins.list[Backup]:
        """Our backups, newest first (Cinder cannot filter backups by metadata: all pages)."""
        params: dict[str, str | int] = {}
        if volume_id:
            params["volume_id"] = check_uuid(volume_id, "volume")
        found: builtins.list[Backup] = []
        for page in self._pages("/backups/detail", "backups", params, "listing backups"):
            for raw in page:
                metadata = raw.get("metadata") or {}
                if not is_ours(metadata):
                    continue
                try:
                    backup = self._backup_record(raw)
                except (AnnotationError, ProviderError) as err:
                    log.warning("ignoring Cinder backup %s: %s", raw.get("id"), err)
                    continue
                if query is None or query.matches(
                    Snapshot(id=backup.snapshot_id or backup.id, annotations=backup.annotations)
                ):
                    found.append(backup)
        moment = datetime.min.replace(tzinfo=UTC)
        return sorted(found, key=lambda b: (b.created_at or moment, b.id), reverse=True)

    def get_backup(self, backup_id: str) -> Backup:
        check_uuid(backup_id, "backup")
        try:
            raw = self._request("GET", f"/backups/{backup_id}", f"reading backup {backup_id}")[
                "backup"
            ]
        except UnknownSnapshot:
            raise UnknownSnapshot(f"backup {backup_id} does not exist in this project") from None
        if not is_ours(raw.get("metadata") or {}):
            raise UnknownSnapshot(
                f"backup {backup_id} has no {MARKER_KEY}={MARKER} metadata: it was not made by "
                "disk-snapshots, so this release will not restore or delete it"
            )
        return self._backup_record(raw)

    def delete_backup(self, backup_id: str) -> None:
        """Delete one of our backups (Cinder refuses while incrementals depend on it)."""
        self.get_backup(backup_id)
        try:
            self._request("DELETE", f"/backups/{backup_id}", f"deleting backup {backup_id}")
        except UnknownSnapshot:
            return

    # -- new volumes (replace restore) ----------------------------------------------------

    def volume_from_snapshot(self, snapshot_id: str, az: str = "") -> NewVolume:
        """A new volume holding the snapshot's data, in ``az`` (default: the source's zone)."""
        raw = self._ours(snapshot_id)
        snapshot = self._record(raw)
        if snapshot.state != "completed":
            raise ProviderError(f"snapshot {snapshot_id} is {raw.get('status')!r}: no volume made")
        metadata = annotation_metadata(raw.get("metadata") or {}) | {
            MARKER_KEY: MARKER,
            SOURCE_SNAPSHOT_KEY: snapshot_id,
        }
        return self._new_volume(
            {"snapshot_id": snapshot_id, "size": raw.get("size")},
            snapshot.annotations,
            metadata,
            az,
            snapshot_id,
        )

    def volume_from_backup(self, backup_id: str, az: str = "") -> NewVolume:
        """A new volume restored from one of our backups, in ``az`` (API 3.47)."""
        backup = self.get_backup(backup_id)
        if backup.state != "completed":
            raise ProviderError(f"backup {backup_id} is not available: no volume made")
        metadata = backup.annotations.to_tags() | {
            MARKER_KEY: MARKER,
            SOURCE_BACKUP_KEY: backup_id,
        }
        if backup.snapshot_id:
            metadata[SOURCE_SNAPSHOT_KEY] = backup.snapshot_id
        return self._new_volume(
            {"backup_id": backup_id, "size": (backup.size_bytes or 0) // 2**30 or None},
            backup.annotations,
            metadata,
            az,
            backup_id,
        )

    def _new_volume(
        self,
        source: Mapping[str, Any],
        annotations: Annotations,
        metadata: Mapping[str, str],
        az: str,
        source_id: str,
    ) -> NewVolume:
        request = {k: v for k, v in source.items() if v is not None} | {
            "name": f"disk-snapshots restore of {annotations.instance} from {source_id}"[:255],
            "description": f"made by disk-snapshots from {source_id}",
            "metadata": dict(metadata),
        }
        if az:
            request["availability_zone"] = az
        created = self._request(
            "POST", "/volumes", f"creating a volume from {source_id}", body={"volume": request}
        )["volume"]
        volume_id = check_uuid(created.get("id"), "volume")
        done = self._wait(
            "volume",
            volume_id,
            "available",
            self.volume_timeout,
            ("creating", "downloading", "restoring-backup"),
        )
        log.info(
            "volume %s made from %s in %s", volume_id, source_id, done.get("availability_zone")
        )
        return NewVolume(
            id=volume_id,
            availability_zone=str(done.get("availability_zone") or ""),
            size_bytes=_gib(done.get("size")),
            source_id=source_id,
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def connect(settings: OpenstackSettings, timeout: float, ca_file: Path | None) -> Any:
    """openstacksdk's block-storage adapter for these settings (nothing from clouds.yaml/env)."""
    from openstack import connection

    verify: bool | str = str(ca_file) if ca_file else True
    if settings.insecure:
        verify = False
    options: dict[str, Any] = {
        "load_yaml_config": False,
        "load_envvars": False,
        "app_name": "disk-snapshots",
        "verify": verify,
        "api_timeout": timeout,
        "block_storage_api_version": "3",
        "interface": settings.interface,
    }
    if settings.region:
        options["region_name"] = settings.region
    if settings.endpoint:
        options["block_storage_endpoint_override"] = settings.endpoint
    if not settings.auth_url:
        # A Cinder without Keystone (noauth): the endpoint alone.
        options |= {"auth_type": "none", "auth": {"endpoint": settings.endpoint}}
    elif settings.application_credential_id:
        options |= {
            "auth_type": "v3applicationcredential",
            "auth": {
                "auth_url": settings.auth_url,
                "application_credential_id": settings.application_credential_id,
                "application_credential_secret": settings.application_credential_secret,
            },
        }
    else:
        options |= {
            "auth_type": "password",
            "auth": {
                "auth_url": settings.auth_url,
                "username": settings.username,
                "password": settings.api_key,
                "user_domain_name": settings.domain,
                "project_name": settings.project,
                "project_domain_name": settings.project_domain or settings.domain,
            },
        }
    return connection.Connection(**options).block_storage
