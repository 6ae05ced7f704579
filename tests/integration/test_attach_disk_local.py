"""``attach-disk`` and ``disks --orphaned`` of the local Director, as bosh-director's
``jobs/attach_disk.rb`` and ``orphan_disk_manager.rb`` do them: only a stopped or detached
instance, found by its uuid; the old disk orphaned with its size; the new disk recorded at
1 MiB, or at the old disk's size with ``copy``, or un-orphaned with its own; a
soft-stopped instance gets it mounted now, a detached one on its next start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lbtest import LocalBosh
from lbtest import needs_root
from lbtest import recorder_manifest

from localbosh.disks import Pool
from localbosh.state import Layout

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]


def node(lb: LocalBosh, index: int) -> dict[str, Any]:
    return next(i for i in lb.state("rec")["instances"] if i["index"] == index)


def orphans(lb: LocalBosh) -> list[dict[str, str]]:
    document = json.loads(lb.run("--json", "disks", "--orphaned").stdout)
    return list(document["Tables"][0]["Rows"])


def mounted_cid(lb: LocalBosh, slug: str) -> str:
    out = lb.run("-d", "rec", "ssh", slug, "-c", "cat /var/vcap/bosh/managed_disk_settings.json")
    return out.stdout.strip()


def test_attach_disk_to_a_stopped_instance_orphans_the_old_disk_and_back(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    manifest = recorder_manifest(tmp_path / "rec.yml", record_log, instances=2, disk=64)
    localbosh.run("-d", "rec", "deploy", str(manifest))
    first = node(localbosh, 0)
    slug, old = f"node/{first['id']}", first["disk_cid"]
    new = Pool(Layout(localbosh.home)).create(64)

    started = localbosh.run("--json", "-d", "rec", "attach-disk", slug, new, check=False)
    assert started.returncode == 1
    lines = json.loads(started.stdout)["Lines"]
    assert lines == [
        f"Instance '{slug}' in deployment 'rec' must be in 'bosh stopped' state",
        "Exit code 1",
    ]
    by_index = localbosh.run("-d", "rec", "attach-disk", "node/0", new, check=False)
    assert "Instance 'node/0' in deployment 'rec' was not found" in by_index.stderr
    assert node(localbosh, 0)["disk_cid"] == old and orphans(localbosh) == []

    localbosh.run("-d", "rec", "stop", slug)
    unknown = localbosh.run("-d", "rec", "attach-disk", slug, "disk-0000", check=False)
    assert "Disk 'disk-0000' not found" in unknown.stderr
    localbosh.run("-d", "rec", "attach-disk", slug, new, "--disk-properties=copy")
    # Soft-stopped: attached and mounted at once; the old disk orphaned, with its size.
    assert mounted_cid(localbosh, slug) == new
    assert (node(localbosh, 0)["disk_cid"], node(localbosh, 0)["disk_size"]) == (new, 64)
    (orphan,) = orphans(localbosh)
    assert (orphan["disk_cid"], orphan["size"], orphan["instance"]) == (old, "64 MiB", slug)
    localbosh.run("-d", "rec", "start", slug)
    # The recorded size is the manifest's: no migration on start.
    assert node(localbosh, 0)["disk_cid"] == new and mounted_cid(localbosh, slug) == new

    # The way back: the orphan attached again is un-orphaned with its own size.
    localbosh.run("-d", "rec", "stop", slug)
    localbosh.run("-d", "rec", "attach-disk", slug, old)
    assert (node(localbosh, 0)["disk_cid"], node(localbosh, 0)["disk_size"]) == (old, 64)
    assert [o["disk_cid"] for o in orphans(localbosh)] == [new]
    localbosh.run("-d", "rec", "start", slug)
    assert mounted_cid(localbosh, slug) == old


def test_attach_disk_to_a_detached_instance_is_attached_at_its_next_start(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    manifest = recorder_manifest(tmp_path / "rec.yml", record_log, instances=1, disk=64)
    localbosh.run("-d", "rec", "deploy", str(manifest))
    slug, old = f"node/{node(localbosh, 0)['id']}", node(localbosh, 0)["disk_cid"]
    new = Pool(Layout(localbosh.home)).create(64)
    localbosh.run("-d", "rec", "stop", slug, "--hard")
    localbosh.run("-d", "rec", "attach-disk", slug, new, "--disk-properties", "copy")
    assert node(localbosh, 0)["state"] == "detached" and node(localbosh, 0)["disk_cid"] == new
    assert [o["disk_cid"] for o in orphans(localbosh)] == [old]
    localbosh.run("-d", "rec", "start", slug)
    assert mounted_cid(localbosh, slug) == new
