"""Pure parts that touch no process: monit's XML status and link resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from localbosh.agent import Identity
from localbosh.deployment import ManifestError
from localbosh.deployment import link_for_template
from localbosh.deployment import parse_groups
from localbosh.deployment import resolve_links
from localbosh.deployment import resolve_releases
from localbosh.monit import monitrc
from localbosh.monit import parse_status
from localbosh.state import Layout
from localbosh.state import LockError
from localbosh.state import address
from localbosh.state import deployment_lock

REPO = Path(__file__).resolve().parents[2]

STATUS2 = """<?xml version="1.0" encoding="ISO-8859-1"?>
<monit id="x" incarnation="1795953665" version="5.33.0"><server><uptime>9</uptime></server>
<services>
<service name="vm"><type>5</type><status>0</status><monitor>1</monitor></service>
<service name="redis"><type>3</type><status>0</status><monitor>1</monitor>
 <pendingaction>0</pendingaction><pid>42</pid></service>
<service name="snapshotter"><type>3</type><status>0</status><monitor>0</monitor>
 <pendingaction>0</pendingaction></service>
<service name="other"><type>3</type><status>512</status><monitor>1</monitor>
 <pendingaction>1</pendingaction><pid>-1</pid></service>
</services>
<servicegroups><servicegroup name="vcap"><service>redis</service>
<service>snapshotter</service></servicegroup></servicegroups></monit>"""


def test_parse_status_reads_incarnation_groups_and_states() -> None:
    st = parse_status(STATUS2)
    assert st.incarnation == 1795953665
    assert [s.name for s in st.services] == ["redis", "snapshotter", "other"]
    vcap = {s.name: s for s in st.in_group("vcap")}
    assert set(vcap) == {"redis", "snapshotter"}  # `other` is not in group vcap
    assert vcap["redis"].status == "running" and vcap["redis"].monitored
    assert vcap["snapshotter"].status == "not monitored" and not vcap["snapshotter"].monitored
    other = next(s for s in st.services if s.name == "other")
    assert other.pending and other.status == "failing"


def test_monitrc_binds_the_instance_address_and_includes_job_files() -> None:
    rc = monitrc("127.77.1.10", "pw")
    assert "use address 127.77.1.10" in rc
    assert "include /var/vcap/monit/job/*.monitrc" in rc
    assert "set onreboot nostart" in rc
    # Per-instance state files, or instances would share ~/.monit.*
    assert "set statefile /var/vcap/monit/monit.state" in rc


def _groups(manifest: dict[str, object]) -> list[object]:
    releases = resolve_releases(manifest, REPO / "manifests" / "local")
    return parse_groups(manifest, releases)  # type: ignore[return-value]


def _redis_manifest(data_consumes: object) -> dict[str, object]:
    return {
        "name": "r",
        "releases": [{"name": "redis", "version": "create"}],
        "instance_groups": [
            {
                "name": "leader",
                "instances": 1,
                "jobs": [
                    {
                        "name": "redis",
                        "release": "redis",
                        "provides": {"redis": {"as": "the-leader"}},
                        "consumes": {"leader": {"from": "the-leader"}},
                        "properties": {"port": 7000},
                    }
                ],
            },
            {
                "name": "data",
                "instances": 2,
                "jobs": [{"name": "redis", "release": "redis", "consumes": data_consumes}],
            },
        ],
    }


def test_links_resolve_explicit_from_and_export_provider_properties() -> None:
    groups = _groups(_redis_manifest({"leader": {"from": "the-leader"}}))
    links = resolve_links(groups)  # type: ignore[arg-type]
    provider = links[("data", "redis")]["leader"]
    assert provider is not None and provider.group == "leader"
    idents = [
        Identity("r", "leader", 0, "L0", "z1", address(1, 0), True),
        Identity("r", "data", 0, "D0", "z1", address(1, 1), True),
    ]
    link = link_for_template(provider, idents)
    assert [i["address"] for i in link["instances"]] == ["127.77.1.10"]
    assert link["properties"] == {"port": 7000, "password": ""}  # default filled from spec


def test_ambiguous_implicit_link_fails_like_the_director() -> None:
    groups = _groups(_redis_manifest({}))
    with pytest.raises(ManifestError, match="Multiple link providers found"):
        resolve_links(groups)  # type: ignore[arg-type]


def test_nil_consumes_blocks_implicit_linking() -> None:
    groups = _groups(_redis_manifest({"leader": None}))
    assert resolve_links(groups)[("data", "redis")]["leader"] is None  # type: ignore[arg-type]


def test_deployment_lock_is_exclusive_with_director_wording(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with (
        deployment_lock(layout, "d", "run errand e from deployment d"),
        pytest.raises(LockError) as err,
        deployment_lock(layout, "d", "stop instances", timeout=0.3),
    ):
        pass
    msg = str(err.value)
    assert msg.startswith("Failed to acquire lock for lock:deployment:d uid:")
    assert "description: 'run errand e from deployment d'" in msg
