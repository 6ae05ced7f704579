"""docs/properties.md (the README's properties reference) matches the job specs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from localbosh import docs

ROOT = Path(__file__).resolve().parents[2]


def test_properties_doc_is_up_to_date() -> None:
    doc = ROOT / docs.DOC_PATH
    assert doc.is_file(), f"{docs.DOC_PATH} is missing; run: {docs.REGENERATE}"
    if doc.read_text() != docs.render(ROOT):
        pytest.fail(
            f"{docs.DOC_PATH} is out of date with jobs/*/spec; regenerate it with: "
            f"{docs.REGENERATE}  (see the difference with: {docs.REGENERATE} --check)",
            pytrace=False,
        )


def test_every_property_of_every_job_is_in_the_doc() -> None:
    text = (ROOT / docs.DOC_PATH).read_text()
    for spec_path in sorted((ROOT / "jobs").glob("*/spec")):
        spec = yaml.safe_load(spec_path.read_text())
        assert f"\n## {spec['name']}\n" in text
        for name in spec.get("properties") or {}:
            assert f"| `{name}` |" in text, f"{name} of {spec_path.relative_to(ROOT)}"


@pytest.fixture
def release_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    (tmp_path / "docs").mkdir()
    (tmp_path / docs.DOC_PATH).write_text(docs.render(tmp_path))
    return tmp_path


def _check(release: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localbosh.docs", "--check", "--release-dir", str(release)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_fails_naming_the_command_when_a_spec_changes(release_copy: Path) -> None:
    spec_path = release_copy / "jobs" / "snapshotter" / "spec"
    spec = yaml.safe_load(spec_path.read_text())
    spec["properties"]["provider.type"]["default"] = "aws-ebs"
    spec_path.write_text(yaml.safe_dump(spec))
    proc = _check(release_copy)
    assert proc.returncode == 1
    assert f"docs/properties.md is out of date with jobs/*/spec; run: {docs.REGENERATE}" in (
        proc.stderr
    )
    assert "+| `provider.type` |" in proc.stderr  # the diff shows what changed


def test_a_property_without_description_is_documented_not_crashed_on(release_copy: Path) -> None:
    spec_path = release_copy / "jobs" / "restore" / "spec"
    spec = yaml.safe_load(spec_path.read_text())
    spec["properties"]["restore.dry_run"].pop("description", None)
    spec["properties"]["restore.bare"] = None
    spec_path.write_text(yaml.safe_dump(spec))
    text = docs.render(release_copy)
    assert "| `restore.dry_run` | *(no description)* | `false` |" in text
    assert "| `restore.bare` | *(no description)* | *required* |" in text


def test_regenerating_writes_the_file_and_then_check_passes(release_copy: Path) -> None:
    (release_copy / docs.DOC_PATH).write_text("stale\n")
    assert docs.main(["--release-dir", str(release_copy)]) == 0
    assert _check(release_copy).returncode == 0
