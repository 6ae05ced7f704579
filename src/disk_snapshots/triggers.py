"""Why a snapshot was taken: the trigger vocabulary, spelled here and nowhere else.

Every snapshot records one trigger (docs/annotations.md): ``manual``, one of drain's
``pre-*`` events, ``pre-restore``, ``schedule:<name>`` for a schedule's own snapshots or
``set:<name>`` for a snapshot set. Config validation, annotations, retention, the
scheduler, sets and the agent API build and check triggers with what is here.
"""

from __future__ import annotations

import re

MANUAL = "manual"
PRE_RESTORE = "pre-restore"
# drain.snapshot_on event -> the trigger recorded on the snapshot
EVENT_TRIGGERS = {
    "deploy": "pre-deploy",
    "stop": "pre-stop",
    "delete": "pre-delete",
    "disk-change": "pre-disk-change",
}
DRAIN_EVENTS = tuple(EVENT_TRIGGERS)
# Triggers that name no schedule or set.
PLAIN = (MANUAL, *EVENT_TRIGGERS.values(), PRE_RESTORE)
# Each plain trigger may have a retention rule of its own; listed as the property's docs do.
RETENTION_KEYS = (*EVENT_TRIGGERS.values(), MANUAL, PRE_RESTORE)

# A schedule's (or a set's) name: it ends up in provider tags and file names.
NAME = r"[a-z0-9][a-z0-9_-]{0,62}"
SCHEDULE_PREFIX = "schedule:"
SET_PREFIX = "set:"
SCHEDULE_TRIGGER = SCHEDULE_PREFIX + NAME
SET_TRIGGER = SET_PREFIX + NAME
_ANY = re.compile("|".join([*(re.escape(t) for t in PLAIN), SCHEDULE_TRIGGER, SET_TRIGGER]))


def schedule_trigger(name: str) -> str:
    """The trigger of a ``scope: instance`` schedule's snapshots."""
    return SCHEDULE_PREFIX + name


def set_trigger(name: str) -> str:
    """The trigger of a set's snapshots: the schedule's name, or ``manual``."""
    return SET_PREFIX + name


def is_trigger(text: str) -> bool:
    return _ANY.fullmatch(text) is not None


def describe() -> str:
    """The allowed triggers, as an error message lists them."""
    return f"{', '.join(PLAIN)}, {SCHEDULE_PREFIX}<name>, {SET_PREFIX}<name>"
