"""``disk-snapshots lint``: the real ``bosh int`` interpolates, the job specs judge.

Every manifest in manifests/ passes (with each of its ops files, and the Director's on
bosh-deployment's bosh.yml), the typo the Director would drop without a word fails
naming it, and the job specs the installed command carries match jobs/*/spec.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from disk_snapshots.operator import specs
from disk_snapshots.operator.cli import main
from localbosh import boshcli
from support.release import REPO

pytestmark = pytest.mark.bosh

BOSH_DEPLOYMENT = REPO.parent / "shared" / "reference" / "bosh-deployment"
CASES = [
    *[
        (REPO / "manifests" / "disk-snapshots.yml", [o])
        for o in [None, *sorted((REPO / "manifests" / "operations").glob("*.yml"))]
    ],
    *[
        (REPO / "manifests" / "local" / "redis-ha.yml", [o])
        for o in [None, *sorted((REPO / "manifests" / "local" / "operations").glob("*.yml"))]
    ],
]
LEADER_RESTORE = "/instance_groups/name=redis-leader/jobs/name=restore"
DIRECTOR_OPS = ["snapshotter.yml", "aws-ebs.yml", "uaa.yml", "credhub.yml"]


@pytest.fixture(autouse=True)
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISK_SNAPSHOTS_BOSH", boshcli.find())
    monkeypatch.setenv("HOME", str(tmp_path))


def lint(manifest: Path, ops: list[Path]) -> int:
    return main(["lint", str(manifest), *[a for o in ops for a in ("-o", str(o))]])


@pytest.mark.parametrize(
    ("manifest", "ops"), CASES, ids=[f"{m.name}+{o[0].name if o[0] else '-'}" for m, o in CASES]
)
def test_every_example_manifest_passes(
    manifest: Path, ops: list[Path | None], capsys: pytest.CaptureFixture[str]
) -> None:
    assert lint(manifest, [o for o in ops if o]) == 0, capsys.readouterr()
    assert "every property is declared" in capsys.readouterr().out


def test_the_directors_ops_files_pass_on_bosh_deployment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not (BOSH_DEPLOYMENT / "bosh.yml").is_file():
        pytest.skip(f"bosh-deployment is not at {BOSH_DEPLOYMENT} (../shared/reference)")
    theirs = [BOSH_DEPLOYMENT / n for n in ("aws/cpi.yml", "uaa.yml", "credhub.yml")]
    ours = [REPO / "manifests" / "director" / n for n in DIRECTOR_OPS]
    assert lint(BOSH_DEPLOYMENT / "bosh.yml", [*theirs, *ours]) == 0, capsys.readouterr()
    assert "1 job(s) of disk-snapshots" in capsys.readouterr().out


def test_an_undeclared_key_and_a_scalar_parent_are_errors_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ops = tmp_path / "typos.yml"
    ops.write_text(
        yaml.safe_dump(
            [
                {
                    "type": "replace",
                    "path": f"{LEADER_RESTORE}/properties?/restore?/restor",
                    "value": "time:2026-11-29T08:00:00Z",
                },
                {
                    "type": "replace",
                    "path": "/instance_groups/name=redis-data/jobs/name=snapshotter/properties/api",
                    "value": "tls",
                },
            ]
        )
    )
    assert lint(REPO / "manifests" / "local" / "redis-ha.yml", [ops]) == 1
    out, err = capsys.readouterr()
    assert (
        "instance_groups/redis-leader/jobs/restore/properties: restore.restor: is not a property "
        "of the restore job: the Director drops it without a word" in out
    )
    assert "did you mean restore.source or restore.verify or restore.target?" in out
    assert (
        "instance_groups/redis-data/jobs/snapshotter/properties: api: must be a map holding "
        "api.port, api.tls.ca" in out
    )
    assert "2 problem(s)" in err


def test_a_manifest_bosh_int_refuses_is_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\ninstance_groups: [\n")
    assert lint(bad, []) == 1
    assert "bosh" in capsys.readouterr().err


def test_the_job_specs_the_command_carries_are_the_releases() -> None:
    assert specs.load() == specs.from_release(REPO), (
        "src/disk_snapshots/operator/job_specs.json is stale: "
        "python -m disk_snapshots.operator.specs ."
    )
