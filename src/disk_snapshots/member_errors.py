"""How a member side says no: the errors its set, restore and service operations raise.

The member sides (sets/member.py, restore/member.py, daemon/agent.py) know nothing of
HTTP; the agent API (api/server.py) maps each of these to one status code. The message
is what the coordinator reports, so it says what happened and what to do.
"""

from __future__ import annotations

from disk_snapshots.errors import ReleaseError


class MemberError(ReleaseError, RuntimeError):
    """The member could not do what was asked; the message says why."""


class Invalid(MemberError):
    """The request names something this member will not act on (HTTP 400)."""


class NotFound(MemberError):
    """No such set, journal or snapshot on this member (HTTP 404)."""


class Conflict(MemberError):
    """The request does not fit the member's state now (HTTP 409)."""


class Failed(MemberError):
    """Something the member relies on failed: monit, the provider, a command (HTTP 502)."""


class TimedOut(MemberError):
    """The member gave up waiting at its deadline (HTTP 504)."""
