"""The Director's own backup (issue 14): manifests/director/*.yml on bosh-deployment's bosh.yml.

Each combination is interpolated by the real bosh CLI (`bosh int --var-errs`, with a vars
store for bosh.yml's `variables:` as create-env keeps one), the snapshotter's templates are
rendered from the result with the CLI's own create-env renderer, and the config loader
accepts what they render. bosh-deployment is read, unmodified, from ../shared/reference
beside the checkout; where that is absent (a user's machine) these tests say so and skip.
Marker `bosh`: these need the real CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from disk_snapshots.config import SnapshotterConfig
from disk_snapshots.config import load_snapshotter_config
from localbosh.create_env import render_job_create_env
from localbosh.manifest import InterpolationError
from localbosh.manifest import interpolate as bosh_int
from template_specs import JOBS_DIR
from template_specs import RELEASE_DIR

pytestmark = pytest.mark.bosh

BOSH_DEPLOYMENT = RELEASE_DIR.parent / "shared" / "reference" / "bosh-deployment"
OURS = RELEASE_DIR / "manifests" / "director"

# What an operator passes to create-env for bosh.yml and each bosh-deployment ops file
# used here (everything else is generated into the vars store from `variables:`).
OPERATOR_VARS = {
    "director_name": "bosh-1",
    "internal_cidr": "10.0.0.0/24",
    "internal_gw": "10.0.0.1",
    "internal_ip": "10.0.0.6",
    "access_key_id": "AKIAEXAMPLE",
    "secret_access_key": "example-secret",
    "region": "eu-west-1",
    "az": "eu-west-1a",
    "default_key_name": "bosh",
    "default_security_groups": "[bosh]",
    "subnet_id": "subnet-0123456789abcdef0",
    # openstack/cpi.yml (region, az, default_key_name and default_security_groups above)
    "auth_url": "https://keystone.example.com:5000/v3",
    "openstack_username": "bosh",
    "openstack_password": "example-password",
    "openstack_domain": "Default",
    "openstack_project": "bosh",
    "net_id": "6a3e5c3e-0000-4000-8000-000000000001",
    "disk_snapshots_release_url": "file:///tmp/disk-snapshots.tgz",
    "disk_snapshots_release_sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
}

# (bosh-deployment ops files, ours), each a create-env command line an operator may run.
COMBINATIONS = [
    (["aws/cpi.yml"], ["snapshotter.yml"]),
    (["aws/cpi.yml"], ["snapshotter.yml", "aws-ebs.yml"]),
    (
        ["aws/cpi.yml", "uaa.yml", "credhub.yml", "jumpbox-user.yml"],
        ["snapshotter.yml", "aws-ebs.yml", "uaa.yml", "credhub.yml"],
    ),
    (
        ["aws/cpi.yml", "uaa.yml", "credhub.yml", "jumpbox-user.yml"],
        ["snapshotter.yml", "uaa.yml", "credhub.yml"],
    ),
    (["openstack/cpi.yml"], ["snapshotter.yml", "openstack-cinder.yml"]),
]
IDS = ["+".join([*theirs, *("ours-" + o for o in ours)]) for theirs, ours in COMBINATIONS]


@pytest.fixture(scope="module")
def bosh_deployment() -> Path:
    if not (BOSH_DEPLOYMENT / "bosh.yml").is_file():
        pytest.skip(
            f"bosh-deployment is not at {BOSH_DEPLOYMENT} (../shared/reference beside the "
            "checkout, present in CI): the Director ops files were not checked against it"
        )
    if shutil.which("bosh") is None:
        pytest.fail("bosh CLI not on PATH: scripts/bootstrap installs it")
    return BOSH_DEPLOYMENT


def interpolate(
    base: Path,
    theirs: list[str],
    ours: list[str],
    store: Path,
    variables: dict[str, str] = OPERATOR_VARS,
) -> dict[str, Any]:
    """`bosh int bosh.yml -o THEIRS... -o OURS... -v ... --vars-store STORE --var-errs`."""
    return bosh_int(
        base / "bosh.yml",
        [base / name for name in theirs] + [OURS / name for name in ours],
        var_kvs=[f"{key}={value}" for key, value in variables.items()],
        vars_store=store,
        var_errs=True,
    )


Interpolated = tuple[dict[str, Any], dict[str, Any], SnapshotterConfig]
_done: dict[tuple[str, ...], Interpolated] = {}


def director(base: Path, theirs: list[str], ours: list[str], tmp: Path) -> Interpolated:
    """The interpolated manifest, the vars store create-env would keep, and the
    snapshotter's config as create-env renders it (each combination once per run)."""
    key = (*theirs, "--", *ours)
    if key not in _done:
        store = tmp / "creds.yml"
        manifest = interpolate(base, theirs, ours, store)
        _done[key] = (manifest, yaml.safe_load(store.read_text()), rendered_config(manifest))
    return _done[key]


def group(manifest: dict[str, Any]) -> dict[str, Any]:
    (bosh,) = [g for g in manifest["instance_groups"] if g["name"] == "bosh"]
    return bosh


def rendered_config(manifest: dict[str, Any]) -> SnapshotterConfig:
    """The snapshotter's templates as create-env renders them from this manifest."""
    bosh = group(manifest)
    (job,) = [j for j in bosh["jobs"] if j["name"] == "snapshotter"]
    files = render_job_create_env(
        JOBS_DIR / "snapshotter",
        job.get("properties"),
        deployment=manifest["name"],
        address=OPERATOR_VARS["internal_ip"],
        instance_group_properties=bosh.get("properties") or {},
    )
    return load_snapshotter_config(json.loads(files["config/config.json"]))


@pytest.mark.parametrize(("theirs", "ours"), COMBINATIONS, ids=IDS)
def test_create_env_renders_the_snapshotter_against_the_directors_postgres(
    bosh_deployment: Path, theirs: list[str], ours: list[str], tmp_path: Path
) -> None:
    manifest, creds, config = director(bosh_deployment, theirs, ours, tmp_path)
    release = {r["name"]: r for r in manifest["releases"]}["disk-snapshots"]
    assert release["url"] == OPERATOR_VARS["disk_snapshots_release_url"]
    pg = config.service.postgres
    director_db = group(manifest)["properties"]["director"]["db"]
    # The profile reaches the database the Director itself uses, as it connects.
    assert (config.service.profile, pg.host, pg.port, pg.user, pg.database) == (
        "postgres",
        director_db["host"],
        5432,
        director_db["user"],
        director_db["database"],
    )
    assert pg.password == creds["postgres_password"] == director_db["password"]
    # create-env: one instance, named after the deployment, with an id that is the same
    # on every render (the CLI's spec.id is a new UUID each time).
    assert (config.spec.deployment, config.spec.name, config.spec.index) == ("bosh", "bosh", 0)
    assert config.spec.id == rendered_config(manifest).spec.id == "bosh-0"
    assert [s.name for s in config.schedules] == ["hourly"]
    assert config.schedules[0].retention.keep_last == 24
    # drain snapshots every create-env; those are kept by count too.
    assert config.retention["pre-stop"].keep_last == 10
    if "aws-ebs.yml" in ours:
        aws = config.provider.aws
        assert (config.provider.type, aws.region) == ("aws-ebs", OPERATOR_VARS["region"])
        # The same credentials the AWS CPI is given by aws/cpi.yml.
        cpi = group(manifest)["properties"]["aws"]
        assert (aws.access_key_id, aws.secret_access_key) == (
            cpi["access_key_id"],
            cpi["secret_access_key"],
        )
    elif "openstack-cinder.yml" in ours:
        openstack = config.provider.openstack
        assert config.provider.type == "openstack-cinder"
        # The same Keystone credentials and region the OpenStack CPI is given by cpi.yml.
        cpi = group(manifest)["properties"]["openstack"]
        keys = ("auth_url", "username", "api_key", "domain", "project", "region")
        assert [getattr(openstack, k) for k in keys] == [cpi[k] for k in keys]
    else:
        assert config.provider.type == "loopback"


@pytest.mark.parametrize(("theirs", "ours"), COMBINATIONS, ids=IDS)
def test_the_directors_processes_stop_in_a_safe_order(
    bosh_deployment: Path, theirs: list[str], ours: list[str], tmp_path: Path
) -> None:
    manifest, _, config = director(bosh_deployment, theirs, ours, tmp_path)
    jobs = list(config.service.jobs)
    assert len(jobs) == len(set(jobs)), jobs
    props = group(manifest)["properties"]
    # One worker_N per director.workers (the bosh release's jobs/director/monit), and
    # director_sync_dns only where local DNS is on: the list follows bosh.yml.
    workers = [j for j in jobs if j.startswith("worker_")]
    assert workers == [f"worker_{n}" for n in range(1, props["director"]["workers"] + 1)]
    assert ("director_sync_dns" in jobs) == props["director"]["local_dns"]["enabled"]
    # Stopped in list order (started in reverse): the Director's API and workers before
    # the blobstore, everything that writes to PostgreSQL before PostgreSQL, which is last.
    assert jobs[-1] == "postgres"
    director_side = ["director", *workers, "director_scheduler", "director_nginx"]
    assert max(jobs.index(j) for j in director_side) < jobs.index("blobstore_nginx")
    in_group = {j["name"] for j in group(manifest)["jobs"]}
    for colocated in ("uaa", "credhub"):
        # bosh-deployment's uaa.yml/credhub.yml add a job whose process keeps its data
        # in the same PostgreSQL; our ops file of the same name puts it in the list.
        assert (colocated in jobs) == (colocated in in_group), (colocated, jobs)
        if colocated in jobs:
            assert jobs.index("blobstore_nginx") < jobs.index(colocated) < jobs.index("postgres")


def test_without_the_release_variables_create_env_names_them(
    bosh_deployment: Path, tmp_path: Path
) -> None:
    without = {k: v for k, v in OPERATOR_VARS.items() if not k.startswith("disk_snapshots_")}
    with pytest.raises(InterpolationError) as refused:
        interpolate(
            bosh_deployment, ["aws/cpi.yml"], ["snapshotter.yml"], tmp_path / "creds.yml", without
        )
    assert "disk_snapshots_release_url" in str(refused.value)
    assert "disk_snapshots_release_sha1" in str(refused.value)


def test_our_ops_files_apply_only_after_snapshotter_yml(
    bosh_deployment: Path, tmp_path: Path
) -> None:
    # Each changes the snapshotter job that only snapshotter.yml adds: alone, bosh int
    # fails naming it instead of adding a half-configured job.
    for alone in ("aws-ebs.yml", "openstack-cinder.yml", "uaa.yml", "credhub.yml"):
        with pytest.raises(InterpolationError) as refused:
            interpolate(bosh_deployment, ["aws/cpi.yml"], [alone], tmp_path / f"{alone}.yml")
        assert "name=snapshotter" in str(refused.value), alone
