"""What localbosh prints, the bosh CLI's way: human tables, or with ``--json`` one JSON
document of tables, blocks and lines.

The JSON follows the bosh CLI's own (cloudfoundry/bosh-cli ``ui/json_ui.go``): one
object ``{"Tables": [...], "Blocks": [...], "Lines": [...]}`` printed when the command
ends, each table ``{"Content", "Header": {key: title}, "Rows": [{key: text}], "Notes"}``
with keys made from the titles as ``ui/table/headers.go`` ``KeyifyHeader`` makes them;
every line the command prints (progress, errors, "Exit code 1") goes into ``Lines``. A
tool that reads the real CLI's ``--json`` reads localbosh's the same way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import TextIO


def keyify(title: str) -> str:
    """The JSON key of a column title (bosh-cli ``KeyifyHeader``): lower-case letters and
    digits, every other character a separator, the words joined with ``_``."""
    cleaned = "".join(c.lower() if c.isalnum() else " " for c in title)
    return "_".join(cleaned.split()) or "_"


@dataclass
class Table:
    content: str
    titles: Sequence[str]
    rows: Sequence[Sequence[str]]
    notes: Sequence[str] = ()

    def to_json(self) -> dict[str, object]:
        keys = [keyify(t) for t in self.titles]
        return {
            "Content": self.content,
            "Header": dict(zip(keys, self.titles, strict=True)),
            "Rows": [dict(zip(keys, row, strict=True)) for row in self.rows],
            "Notes": list(self.notes),
        }

    def render(self) -> str:
        """Columns two spaces apart; a cell's later lines continue under it."""
        titles = [t.replace("\n", " ") for t in self.titles]
        cells = [[c.split("\n") for c in row] for row in self.rows]
        widths = [
            max([len(t), *(len(line) for row in cells for line in row[i])])
            for i, t in enumerate(titles)
        ]
        out = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip()]
        for row in cells:
            for n in range(max(len(c) for c in row)):
                parts = [
                    (c[n] if n < len(c) else "").ljust(w) for c, w in zip(row, widths, strict=True)
                ]
                out.append("  ".join(parts).rstrip())
        return "\n".join(out)


@dataclass
class UI:
    """Lines and tables for the human, or collected for ``--json``."""

    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    tables: list[Table] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def line(self, text: str) -> None:
        if self.json:
            self.lines.append(text)
        else:
            print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        """An error line: stderr for the human, ``Lines`` in JSON (the CLI has no other)."""
        if self.json:
            self.lines.append(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def table(self, table: Table) -> None:
        if self.json:
            self.tables.append(table)
        else:
            print(table.render(), file=self.out, flush=True)

    def block(self, text: str) -> None:
        if self.json:
            self.blocks.append(text)
        else:
            self.out.write(text)
            self.out.flush()

    def flush(self) -> None:
        if not self.json:
            return
        document = {
            "Tables": [t.to_json() for t in self.tables] or None,
            "Blocks": self.blocks or None,
            "Lines": self.lines or None,
        }
        self.out.write(json.dumps(document, indent=4))
        self.out.flush()


class LineWriter:
    """A text stream whose lines go to the UI (the Director's progress log)."""

    def __init__(self, ui: UI) -> None:
        self.ui = ui
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self.ui.line(line)
        return len(text)

    def flush(self) -> None:
        """Lines are passed on as they complete."""
