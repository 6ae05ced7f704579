"""config/blobs.yml: written by `bosh add-blob` (scripts/update-blobs --record) and
pinned to the committed sources, so a fresh clone fetches exactly these bytes."""

from __future__ import annotations

import re
from typing import Any

import yaml

from conftest import REPO


def test_blobs_yml_is_the_clis_and_every_blob_is_pinned() -> None:
    text = (REPO / "config" / "blobs.yml").read_text()
    listed: dict[str, Any] = yaml.safe_load(text)
    # what yaml.v2 marshals from the CLI's schema: keys sorted, size then sha, no object_id
    # for local blobs (so `bosh blobs` shows them as local and never downloads them)
    assert list(listed) == sorted(listed)
    for path, entry in listed.items():
        assert list(entry) == ["size", "sha"], path
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry["sha"]), path
        assert f"{path}:\n  size: {entry['size']}\n  sha: {entry['sha']}\n" in text

    lock_hashes = {
        h
        for lock in ("requirements.txt", "build-requirements.txt")
        for h in re.findall(
            r"--hash=sha256:([0-9a-f]{64})", (REPO / "src" / "python-deps" / lock).read_text()
        )
    }
    deps_blobs = {
        e["sha"].removeprefix("sha256:") for p, e in listed.items() if p.startswith("python-deps/")
    }
    assert deps_blobs == lock_hashes, (
        "blobs.yml and the python-deps locks disagree: run scripts/update-blobs --record"
    )
    for path in listed:
        if path.startswith("python-deps/") and path.endswith(".whl"):
            assert path.endswith("-none-any.whl"), f"{path}: only pure-Python wheels"

    for line in (REPO / "src" / "python3" / "sources.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, sha256, _url = line.split()
            assert listed[path]["sha"] == f"sha256:{sha256}"
