"""Example manifests by ops files, through the real `bosh int`.

Every manifest under manifests/ (not manifests/local, which the local deployment owns)
must interpolate with each ops file on its own, with `--var-errs --var-errs-unused` and
a vars store, given only the `-v` values in REQUIRED_VARS. Each ops file must also do
what its name says.
"""

from __future__ import annotations

import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store

from localbosh.manifest import InterpolationError
from localbosh.manifest import interpolate

pytestmark = pytest.mark.bosh

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "manifests").glob("*.yml"))
OPS_FILES = sorted((REPO / "manifests" / "operations").glob("*.yml"))

# The `-v` values an operator passes: for every manifest, and per ops file. Anything else
# a manifest needs must come from `variables:` (generated into the vars store).
REQUIRED_VARS: dict[str, Any] = {"deployment_name": "redis"}
OPS_VARS: dict[str, dict[str, Any]] = {
    "aws-ebs.yml": {"aws_region": "eu-west-1", "aws_backup_region": "eu-central-1"},
    "openstack-cinder.yml": {
        "auth_url": "https://keystone.example.com:5000/v3",
        "region": "RegionOne",
        "openstack_domain": "Default",
        "openstack_project": "redis",
        "openstack_username": "bosh",
        "openstack_password": "not-a-real-password",
    },
    "dev-release.yml": {"disk_snapshots_release_dir": "/home/operator/disk-snapshots"},
    "restore-to.yml": {"restore_target": "time:2026-11-29T08:00:00Z"},
}

GROUPS = ("redis-leader", "redis-data")


def vars_for(ops: Path | None) -> dict[str, Any]:
    return {**REQUIRED_VARS, **(OPS_VARS.get(ops.name, {}) if ops else {})}


def var_kvs(values: dict[str, Any]) -> list[str]:
    """The `-v NAME=VALUE` arguments an operator types."""
    return [f"{name}={value}" for name, value in values.items()]


MATRIX = [(m, o) for m in MANIFESTS for o in [None, *OPS_FILES]]
MATRIX_IDS = [f"{m.name}+{o.name if o else 'no-ops'}" for m, o in MATRIX]


def render(manifest: Path, ops: Path | None, store: Path) -> dict[str, Any]:
    return interpolate(
        manifest,
        [ops] if ops else [],
        var_kvs=var_kvs(vars_for(ops)),
        vars_store=store,
        var_errs=True,
        var_errs_unused=True,
    )


def group(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [g for g in doc["instance_groups"] if g["name"] == name]
    return dict(found)


def job(doc: dict[str, Any], group_name: str, job_name: str) -> dict[str, Any]:
    (found,) = [j for j in group(doc, group_name)["jobs"] if j["name"] == job_name]
    return dict(found)


def props(doc: dict[str, Any], group_name: str) -> dict[str, Any]:
    return dict(job(doc, group_name, "snapshotter").get("properties") or {})


def test_there_is_something_to_check() -> None:
    assert [m.name for m in MANIFESTS] == ["disk-snapshots.yml"]
    assert {o.name for o in OPS_FILES} >= {
        "agent-api-tls.yml",
        "aws-ebs.yml",
        "openstack-cinder.yml",
        "scheduled-set.yml",
        "post-stop-snapshot.yml",
        "dev-release.yml",
    }
    assert set(OPS_VARS) <= {o.name for o in OPS_FILES}


@pytest.mark.parametrize(("manifest", "ops"), MATRIX, ids=MATRIX_IDS)
def test_interpolates_with_no_missing_or_unused_variables(
    manifest: Path, ops: Path | None, tmp_path: Path
) -> None:
    doc = render(manifest, ops, tmp_path / "creds.yml")
    # Every `variables:` entry was filled (the CLI drops the ones it found).
    assert doc.get("variables") == []
    assert "((" not in yaml.safe_dump(doc)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: m.name)
def test_vars_store_is_reused(manifest: Path, tmp_path: Path) -> None:
    store = tmp_path / "creds.yml"
    first = render(manifest, None, store)
    assert render(manifest, None, store) == first


def test_base_manifest_shape(tmp_path: Path) -> None:
    doc = render(REPO / "manifests/disk-snapshots.yml", None, tmp_path / "creds.yml")
    assert doc["name"] == "redis"
    assert {r["name"]: r["version"] for r in doc["releases"]} == {
        "disk-snapshots": "latest",
        "redis": "latest",
    }
    assert doc["stemcells"] == [{"alias": "default", "os": "ubuntu-jammy", "version": "latest"}]
    assert {"canaries", "max_in_flight", "canary_watch_time", "update_watch_time"} <= set(
        doc["update"]
    )
    assert [g["name"] for g in doc["instance_groups"]] == list(GROUPS)
    assert [g["instances"] for g in doc["instance_groups"]] == [1, 2]
    released_jobs = {p.name for p in (REPO / "jobs").iterdir()}
    for name in GROUPS:
        g = group(doc, name)
        assert g["stemcell"] == "default"
        assert g["networks"] == [{"name": "default"}]
        assert g["persistent_disk"] > 0
        ours = [j["name"] for j in g["jobs"] if j["release"] == "disk-snapshots"]
        assert ours == ["snapshotter", "take-snapshot", "list-snapshots", "restore"]
        assert set(ours) <= released_jobs
        assert [j["name"] for j in g["jobs"] if j["release"] == "redis"] == ["redis"]
        snap = job(doc, name, "snapshotter")
        # Two groups provide type `snapshotter`: every link is named explicitly.
        assert snap["provides"] == {"snapshotter": {"as": f"{name}-snapshotter"}}
        assert snap["consumes"] == {
            "snapshotter": {"from": "redis-leader-snapshotter"},
            "peers": {"from": "redis-data-snapshotter"},
        }
        # The generated Redis password reaches both Redis and the snapshotter.
        password = job(doc, name, "redis")["properties"]["password"]
        assert len(password) == 20
        assert props(doc, name)["service"]["redis"]["password"] == password


def test_agent_api_tls(tmp_path: Path) -> None:
    store = tmp_path / "creds.yml"
    doc = render(
        REPO / "manifests/disk-snapshots.yml",
        REPO / "manifests/operations/agent-api-tls.yml",
        store,
    )
    # Generated private keys: never readable by others (the CLI keeps the file's mode).
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    stored = yaml.safe_load(store.read_text())
    ca = x509.load_pem_x509_certificate(stored["snapshotter_agent_ca"]["certificate"].encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    builder = PolicyBuilder().store(Store([ca]))
    for name in GROUPS:
        tls = props(doc, name)["api"]["tls"]
        assert tls["ca"] == stored["snapshotter_agent_ca"]["certificate"]
        assert tls["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
        leaf = x509.load_pem_x509_certificate(tls["certificate"].encode())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"*.{name}.default.redis.bosh" in san.get_values_for_type(x509.DNSName)
        # Any instance of the group (BOSH DNS: <id>.<group>.<network>.<deployment>.bosh),
        # as a server and as a client.
        address = f"{uuid.uuid4()}.{name}.default.redis.bosh"
        builder.build_server_verifier(x509.DNSName(address)).verify(leaf, [])
        builder.build_client_verifier().verify(leaf, [])


def test_aws_ebs(tmp_path: Path) -> None:
    doc = render(
        REPO / "manifests/disk-snapshots.yml",
        REPO / "manifests/operations/aws-ebs.yml",
        tmp_path / "creds.yml",
    )
    for name in GROUPS:
        assert props(doc, name)["provider"] == {
            "type": "aws-ebs",
            "aws": {"region": "eu-west-1", "backup_region": "eu-central-1"},
        }
    # Backups to that region on a schedule, the same on both groups.
    backups = [props(doc, name)["backups"] for name in GROUPS]
    assert backups[0] == backups[1] and backups[0]["cron"] == "15 3 * * *"


def test_openstack_cinder(tmp_path: Path) -> None:
    doc = render(
        REPO / "manifests/disk-snapshots.yml",
        REPO / "manifests/operations/openstack-cinder.yml",
        tmp_path / "creds.yml",
    )
    for name in GROUPS:
        assert props(doc, name)["provider"] == {
            "type": "openstack-cinder",
            "openstack": {
                "auth_url": "https://keystone.example.com:5000/v3",
                "region": "RegionOne",
                "domain": "Default",
                "project": "redis",
                "username": "bosh",
                "api_key": "not-a-real-password",
            },
        }


def test_scheduled_set(tmp_path: Path) -> None:
    doc = render(
        REPO / "manifests/disk-snapshots.yml",
        REPO / "manifests/operations/scheduled-set.yml",
        tmp_path / "creds.yml",
    )
    schedules = [props(doc, name)["schedules"] for name in GROUPS]
    assert schedules[0] == schedules[1]
    assert {s["scope"] for s in schedules[0]} == {"instance", "set"}
    assert len({s["name"] for s in schedules[0]}) == len(schedules[0])


def test_post_stop_snapshot(tmp_path: Path) -> None:
    doc = render(
        REPO / "manifests/disk-snapshots.yml",
        REPO / "manifests/operations/post-stop-snapshot.yml",
        tmp_path / "creds.yml",
    )
    assert [props(doc, name)["post_stop_snapshot"] for name in GROUPS] == [True, True]


def test_dev_release(tmp_path: Path) -> None:
    doc = render(
        REPO / "manifests/disk-snapshots.yml",
        REPO / "manifests/operations/dev-release.yml",
        tmp_path / "creds.yml",
    )
    (release,) = [r for r in doc["releases"] if r["name"] == "disk-snapshots"]
    assert release == {
        "name": "disk-snapshots",
        "version": "create",
        "url": "file:///home/operator/disk-snapshots",
    }


def test_a_missing_required_var_is_named(tmp_path: Path) -> None:
    with pytest.raises(InterpolationError) as err:
        interpolate(
            REPO / "manifests/disk-snapshots.yml",
            [REPO / "manifests/operations/aws-ebs.yml"],
            var_kvs=var_kvs(REQUIRED_VARS),
            vars_store=tmp_path / "creds.yml",
            var_errs=True,
        )
    # The CLI's words, passed on as they are.
    assert str(err.value) == (
        "bosh int failed: - Expected to find variables:\n    - aws_backup_region\n    - aws_region"
    )
