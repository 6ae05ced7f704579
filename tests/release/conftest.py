"""Shared fixtures for the release tier: the repo's blobs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.release import REPO
from support.release import missing_blobs


@pytest.fixture(scope="session")
def release_blobs() -> Path:
    """The repo's blobs/ dir with exactly the listed blobs, fetched when missing
    (scripts/update-blobs --fetch-only: pip + deb.debian.org)."""
    if missing_blobs():
        subprocess.run([str(REPO / "scripts" / "update-blobs"), "--fetch-only"], check=True)
    still = missing_blobs()
    assert not still, f"scripts/update-blobs did not provide {still}"
    return REPO / "blobs"
