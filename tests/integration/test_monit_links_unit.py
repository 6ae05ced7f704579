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

# Real: the stemcell's monit 5.2.5 with redis running, snapshotter unmonitored and
# broken, whose start program fails (tests/unit/test_monit_summary.py tells how).
STATUS2 = (REPO / "tests" / "fixtures" / "monit" / "status2-5.2.5.xml").read_text()


def test_parse_status_reads_incarnation_groups_and_states_like_the_agent() -> None:
    st = parse_status(STATUS2)
    assert st.incarnation == 1796228058
    assert [s.name for s in st.services] == ["redis", "snapshotter", "broken"]  # no system
    vcap = {s.name: s for s in st.in_group("vcap")}
    assert set(vcap) == {"redis", "snapshotter", "broken"}
    assert vcap["redis"].status == "running" and vcap["redis"].monitored
    # bosh-agent monit/status.go: unmonitored is "unknown"; a failed start is an error
    # (status and message) even after 5.2.5 stopped monitoring it.
    assert vcap["snapshotter"].status == "unknown" and not vcap["snapshotter"].monitored
    assert not vcap["snapshotter"].errored
    assert vcap["broken"].errored and not vcap["broken"].pending


def test_monitrc_is_the_stemcells_with_the_instance_address_and_own_state_files() -> None:
    rc = monitrc("127.77.1.10")
    assert "set daemon 10\n" in rc  # the stemcell's 10 s cycle
    assert "set httpd port 2822 and use address 127.77.1.10\n" in rc
    assert "allow cleartext /var/vcap/monit/monit.user" in rc
    assert "include /var/vcap/monit/job/*.monitrc" in rc
    # Per-instance state files, or instances would share root's ~/.monit.*
    assert "set statefile /var/vcap/monit/monit.state" in rc
    assert "set pidfile /var/vcap/monit/monit.pid" in rc


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
