"""copy_tree's one path (empty, cp -a, verify) on plain directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from disk_snapshots.restore.copy import copy_tree
from disk_snapshots.restore.journal import Journal

pytestmark = pytest.mark.root


def test_hard_links_across_top_level_directories_and_the_journal_survive(tmp_path: Path) -> None:
    source, store = tmp_path / "snapshot", tmp_path / "store"
    (source / "a").mkdir(parents=True)
    (source / "b").mkdir()
    (source / "a" / "data").write_bytes(b"x" * 10000)
    os.link(source / "a" / "data", source / "b" / "link")
    (source / ".disk-snapshots").mkdir()
    (source / ".disk-snapshots" / "pending-import.json").write_text("{}")
    store.mkdir()
    (store / "stale").mkdir()
    (store / "stale" / "old").write_text("gone after the copy")
    journal = Journal("restore-20261129T080000Z-abcdef", "snap-1", "snap-s", "planned")
    journal.write(store, "planned")
    copy_tree(source, store, journal)
    assert (store / "a" / "data").samefile(store / "b" / "link")
    assert not (store / "stale").exists()
    # The snapshot's own bookkeeping is not copied; this disk's journal stays.
    assert not (store / ".disk-snapshots" / "pending-import.json").exists()
    recorded = Journal.read(store)
    assert recorded is not None and recorded.phase == "copied"
