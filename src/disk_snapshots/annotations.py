"""What every snapshot says about itself, stored as the provider's own tags (docs/catalog.md).

The catalog is rebuilt from these tags at any time; there is no second database to
disagree with the provider. Tag values are untrusted on the way back in (anyone
with IaaS access can edit a tag), so ``from_tags`` validates every field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import fields
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from typing import Literal
from typing import cast

from disk_snapshots import triggers
from disk_snapshots.errors import ReleaseError

SCHEMA = 1
TAG_PREFIX = "disk-snapshots:"
# EC2 allows 256 characters in a tag value and Cinder 255 in a metadata value; every
# provider takes the smaller, so that a catalog moves between providers unchanged. It is
# the one limit of free text (take_snapshot.note in schema.json, --note, API bodies).
MAX_TAG_VALUE = 255

Consistency = Literal["clean", "app", "fs", "crash"]
Role = Literal["leader", "follower", "standalone", "unknown"]
SetState = Literal["", "complete", "incomplete"]
CONSISTENCIES: tuple[Consistency, ...] = ("clean", "app", "fs", "crash")
ROLES: tuple[Role, ...] = ("leader", "follower", "standalone", "unknown")
SET_STATES: tuple[SetState, ...] = ("", "complete", "incomplete")
# Set ids end up in URL paths, file names and tags: no "/", no leading dot.
SET_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


class AnnotationError(ReleaseError, ValueError):
    """A snapshot's tags are missing or hold a value this release would not have written."""


@dataclass(frozen=True)
class Annotations:
    deployment: str
    instance_group: str
    instance_id: str
    index: int
    az: str
    disk_cid: str
    job: str
    created_at: datetime
    trigger: str
    consistency: Consistency
    role: Role
    release_version: str
    note: str = ""
    set_id: str = ""
    set_size: int = 0
    # Written after the fact by the set coordinator: "complete" only when every member's
    # snapshot succeeded; restore planning skips incomplete sets.
    set_state: SetState = ""
    set_reason: str = ""
    schema: int = SCHEMA
    # A restore's plan hold (restore/hold.py): until this UTC time (ISO 8601), retention on
    # every instance keeps the snapshot, whoever's it is; empty when nothing holds it.
    hold_until: str = ""
    hold_by: str = ""

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise AnnotationError("; ".join(problems))

    @property
    def instance(self) -> str:
        """``group/index`` as operators and ``bosh instances`` name it."""
        return f"{self.instance_group}/{self.index}"

    def with_set_state(self, state: SetState, reason: str = "") -> Annotations:
        return replace(self, set_state=state, set_reason=reason[:MAX_TAG_VALUE])

    def with_hold(self, until: datetime | None, by: str = "") -> Annotations:
        """Held until ``until`` by ``by`` (a restore id); None releases the hold."""
        if until is None:
            return replace(self, hold_until="", hold_by="")
        return replace(self, hold_until=_utc_text(until), hold_by=by)

    def held(self, now: datetime) -> bool:
        return bool(self.hold_until) and parse_timestamp(self.hold_until) > now

    def to_tags(self) -> dict[str, str]:
        tags: dict[str, str] = {}
        for name, value in asdict(self).items():
            if isinstance(value, datetime):
                text = _utc_text(value)
            elif isinstance(value, bool):
                text = str(value).lower()
            else:
                text = str(value)
            tags[TAG_PREFIX + name] = text
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Annotations:
        """Read our tags back (other tags are ignored); AnnotationError names what is wrong."""
        ours = {k[len(TAG_PREFIX) :]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
        schema = ours.get("schema", "")
        if not schema.isdigit():
            raise AnnotationError(f"tag {TAG_PREFIX}schema is missing or not a number: {schema!r}")
        if int(schema) > SCHEMA:
            raise AnnotationError(
                f"annotation schema {schema} is newer than this release understands ({SCHEMA}); "
                "upgrade disk-snapshots to read it"
            )
        values: dict[str, object] = {}
        for field in fields(cls):
            if field.name not in ours:
                if field.default is not MISSING:
                    continue
                raise AnnotationError(f"tag {TAG_PREFIX}{field.name} is missing")
            raw = ours[field.name]
            if field.name == "created_at":
                values[field.name] = parse_timestamp(raw)
            elif field.name in ("index", "set_size", "schema"):
                if not raw.isdigit():
                    raise AnnotationError(f"tag {TAG_PREFIX}{field.name}: {raw!r} is not a number")
                values[field.name] = int(raw)
            else:
                values[field.name] = raw
        return cls(**values)  # type: ignore[arg-type]


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AnnotationError(f"{text!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise AnnotationError(f"{text!r} has no time zone; created_at is always UTC")
    return moment.astimezone(UTC)


def validate(a: Annotations) -> list[str]:
    problems: list[str] = []
    for name in ("deployment", "instance_group", "instance_id", "disk_cid", "job"):
        value = cast(str, getattr(a, name))
        if not _IDENT.match(value):
            problems.append(f"{name}: {value!r} is not a valid identifier")
    if not triggers.is_trigger(a.trigger):
        problems.append(f"trigger: {a.trigger!r} is not one of {triggers.describe()}")
    if a.consistency not in CONSISTENCIES:
        problems.append(f"consistency: {a.consistency!r} is not one of {', '.join(CONSISTENCIES)}")
    if a.role not in ROLES:
        problems.append(f"role: {a.role!r} is not one of {', '.join(ROLES)}")
    if a.set_state not in SET_STATES:
        problems.append(f"set_state: {a.set_state!r} is not one of complete, incomplete")
    if a.index < 0 or a.set_size < 0:
        problems.append("index and set_size must not be negative")
    if a.set_id and not _IDENT.match(a.set_id):
        problems.append(f"set_id: {a.set_id!r} is not a valid identifier")
    if bool(a.set_id) != (a.set_size > 0):
        problems.append("set_id and set_size go together")
    if a.created_at.tzinfo is None:
        problems.append("created_at must carry a time zone")
    if a.hold_until:
        try:
            parse_timestamp(a.hold_until)
        except AnnotationError as err:
            problems.append(f"hold_until: {err}")
    if bool(a.hold_until) != bool(a.hold_by) or (a.hold_by and not _IDENT.match(a.hold_by)):
        problems.append(f"hold_by: {a.hold_by!r} must name what holds it, with hold_until")
    for name in ("note", "set_reason", "az", "release_version"):
        problem = text_problem(cast(str, getattr(a, name)))
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def text_problem(value: str, limit: int = MAX_TAG_VALUE) -> str:
    """Why free text (a note, a reason) cannot be a tag value; "" when it can. Checked
    before a snapshot is started, so a long note never costs a flush and a freeze."""
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit}"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "must be one line of text (no newlines, tabs or other control characters)"
    return ""
