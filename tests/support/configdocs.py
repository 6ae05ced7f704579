"""Rendered config.json documents built from the job specs' defaults, for tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def spec_defaults(job: str) -> dict[str, Any]:
    """The nested properties a Director would bind from the job spec's defaults alone."""
    spec = yaml.safe_load((ROOT / "jobs" / job / "spec").read_text())
    nested: dict[str, Any] = {}
    for name, prop in spec["properties"].items():
        node = nested
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(prop.get("default"))
    return nested


def snapshotter_doc() -> dict[str, Any]:
    return {
        "job": "snapshotter",
        "spec": {
            "deployment": "redis",
            "name": "redis-leader",
            "index": 0,
            "id": "0d9c6e9e-8b1a-4d5e-9f55-2f8a4c1e6b01",
            "az": "z1",
            "bootstrap": True,
            "address": "127.0.0.11",
            "persistent_disk": 1024,
            "release": {"name": "disk-snapshots", "version": "0.1.0+dev.1"},
        },
        "properties": spec_defaults("snapshotter"),
        "links": {"snapshotter": None, "peers": None},
    }
