"""Shared fixtures for the release tier: the repo root and its blobs."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def missing_blobs(release_dir: Path = REPO) -> list[str]:
    """Blobs config/blobs.yml lists that are absent or do not match their sha."""
    listed = yaml.safe_load((release_dir / "config" / "blobs.yml").read_text()) or {}
    missing = []
    for path, entry in listed.items():
        blob = release_dir / "blobs" / path
        if not blob.is_file() or blob.stat().st_size != entry["size"]:
            missing.append(path)
            continue
        algo, _, want = str(entry["sha"]).rpartition(":")
        if hashlib.new(algo or "sha1", blob.read_bytes()).hexdigest() != want:
            missing.append(path)
    return missing


@pytest.fixture(scope="session")
def release_blobs() -> Path:
    """The repo's blobs/ dir with exactly the listed blobs, fetched when missing
    (scripts/update-blobs --fetch-only: pip + deb.debian.org)."""
    if missing_blobs():
        subprocess.run([str(REPO / "scripts" / "update-blobs"), "--fetch-only"], check=True)
    still = missing_blobs()
    assert not still, f"scripts/update-blobs did not provide {still}"
    return REPO / "blobs"
