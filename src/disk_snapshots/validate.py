"""A path-tracking reader for untrusted nested data (rendered job properties, API bodies).

Every problem is recorded with the dotted path of the value it concerns
(``snapshotter.schedules[1].cron``), so an operator reading a failed deploy knows
which property to fix and what is allowed. Problems are collected rather than
raised one at a time: a deploy that fails should name every bad property at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from typing import TypeVar

from disk_snapshots.errors import ReleaseError

T = TypeVar("T")

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ValidationError(ReleaseError, ValueError):
    """One or more invalid values; ``problems`` holds one ``path: message`` line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))

    def report(self, header: str) -> str:
        """``header: problem`` on one line, or ``header:`` then one indented problem per
        line, as hooks and errands print it."""
        if len(self.problems) == 1:
            return f"{header}: {self.problems[0]}"
        return "\n".join([f"{header}:", *(f"  {p}" for p in self.problems)])


@dataclass
class Problems:
    """Collects ``path: message`` lines while a document is read."""

    lines: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        line = f"{path}: {message}"
        # A value read through several accessors must not report the same problem twice.
        if line not in self.lines:
            self.lines.append(line)


def type_name(value: object) -> str:
    """How a JSON/YAML value's type reads to an operator."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m``, ``90s``, ``2w`` → timedelta; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(
            f"{text!r} is not a duration; use a whole number and a unit: 90s, 45m, 12h, 30d, 2w"
        )
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


class Reader:
    """A value at a path. Accessors return a fallback and record a problem on bad input."""

    def __init__(self, value: object, path: str, problems: Problems) -> None:
        self.value = value
        self.path = path
        self.problems = problems

    def _bad(self, expected: str) -> None:
        if self.value is None:
            self.problems.add(self.path, f"is missing; expected {expected}")
        else:
            got = f"{type_name(self.value)} {self.value!r}"
            self.problems.add(self.path, f"expected {expected}, got {got}")

    def fail(self, message: str) -> None:
        self.problems.add(self.path, message)

    @property
    def missing(self) -> bool:
        return self.value is None

    def mapping(self, allowed: Sequence[str] | None = None) -> dict[str, Reader]:
        """The entries of a map; keys outside ``allowed`` (when given) are problems."""
        if not isinstance(self.value, dict):
            self._bad("a map")
            return {}
        entries: dict[str, Reader] = {}
        for key, item in self.value.items():
            sub = f"{self.path}.{key}"
            if allowed is not None and key not in allowed:
                self.problems.add(sub, f"unknown key; allowed: {', '.join(allowed)}")
                continue
            entries[str(key)] = Reader(item, sub, self.problems)
        return entries

    def get(self, key: str) -> Reader:
        """The value under ``key`` of a map (null when absent, a problem when not a map)."""
        if not isinstance(self.value, dict):
            if self.value is not None:
                self._bad("a map")
            return Reader(None, f"{self.path}.{key}", self.problems)
        return Reader(self.value.get(key), f"{self.path}.{key}", self.problems)

    def items(self) -> Iterator[Reader]:
        if not isinstance(self.value, list):
            self._bad("a list")
            return iter(())
        return (Reader(v, f"{self.path}[{i}]", self.problems) for i, v in enumerate(self.value))

    def string(
        self,
        *,
        choices: Sequence[str] | None = None,
        pattern: str | None = None,
        allow_empty: bool = True,
        fallback: str = "",
    ) -> str:
        if not isinstance(self.value, str):
            self._bad("a string")
            return fallback
        if choices is not None and self.value not in choices:
            allowed = ", ".join(choices)
            self.problems.add(self.path, f"{self.value!r} is not allowed; allowed: {allowed}")
            return fallback
        if not allow_empty and not self.value:
            self.problems.add(self.path, "must not be empty")
            return fallback
        if pattern is not None and self.value and not re.fullmatch(pattern, self.value):
            self.problems.add(self.path, f"{self.value!r} does not match {pattern}")
            return fallback
        return self.value

    def integer(
        self, *, minimum: int | None = None, maximum: int | None = None, fallback: int = 0
    ) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            self._bad("an integer")
            return fallback
        if minimum is not None and self.value < minimum:
            self.problems.add(self.path, f"{self.value} is too small; the minimum is {minimum}")
            return fallback
        if maximum is not None and self.value > maximum:
            self.problems.add(self.path, f"{self.value} is too large; the maximum is {maximum}")
            return fallback
        return self.value

    def boolean(self, *, fallback: bool = False) -> bool:
        if not isinstance(self.value, bool):
            self._bad("true or false")
            return fallback
        return self.value

    def pem(self, kind: str) -> str:
        """A PEM text of ``kind`` (CERTIFICATE, PRIVATE KEY), or empty."""
        text = self.string()
        # Keys come as "BEGIN PRIVATE KEY", "BEGIN RSA PRIVATE KEY" or "BEGIN EC PRIVATE KEY".
        if text and not re.search(rf"-----BEGIN [A-Z ]*{kind}-----", text):
            self.fail(f"expected a PEM {kind.lower()} (-----BEGIN {kind}-----)")
        return text

    def argv(self) -> tuple[str, ...]:
        """A command as an argv list (never a shell string: values must not be re-parsed)."""
        if isinstance(self.value, str):
            self.problems.add(
                self.path, "expected an argv list such as [/path/to/cmd, arg], got a string"
            )
            return ()
        if not isinstance(self.value, list) or not all(
            isinstance(a, str) and a for a in self.value
        ):
            self._bad("a list of non-empty strings (argv)")
            return ()
        return tuple(self.value)

    def duration(self) -> timedelta | None:
        if not isinstance(self.value, str):
            self._bad("a duration string such as 30d")
            return None
        try:
            return parse_duration(self.value)
        except ValueError as err:
            self.problems.add(self.path, str(err))
            return None

    def check(self, parse: Callable[[Reader], T], fallback: T) -> T:
        """Run a custom parser that may raise ValueError; record its message."""
        try:
            return parse(self)
        except ValueError as err:
            self.problems.add(self.path, str(err))
            return fallback
