"""The repository and its release blobs, for the release tier."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
