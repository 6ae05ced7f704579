"""``restore.target``: what state to restore, parsed once (config.py reads it with this)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from disk_snapshots.annotations import SET_ID


@dataclass(frozen=True)
class Target:
    kind: Literal["latest", "set", "time"]
    set_id: str = ""
    moment: datetime | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        """``latest``, ``set:<id>`` or ``time:<ISO 8601 with zone>``; ValueError otherwise."""
        if text == "latest":
            return cls("latest")
        kind, _, rest = text.partition(":")
        if kind == "set" and re.fullmatch(SET_ID, rest):
            return cls("set", set_id=rest)
        if kind == "time":
            try:
                moment = datetime.fromisoformat(rest.replace("Z", "+00:00"))
            except ValueError:
                moment = None
            if moment is not None and moment.tzinfo is not None:
                return cls("time", moment=moment)
            raise ValueError(
                f"{json.dumps(text)}: time needs an ISO 8601 timestamp with a zone, "
                "e.g. time:2026-11-29T08:00:00Z"
            )
        # The schema (schema.json) refuses other forms before a template renders.
        raise ValueError(
            f"{json.dumps(text)} is not latest, set:<set id> or time:<ISO 8601 with zone>"
        )

    def describe(self) -> str:
        if self.kind == "set":
            return f"set {self.set_id}"
        if self.kind == "time" and self.moment is not None:
            return f"the newest state at or before {self.moment.isoformat()}"
        return "the newest state"
