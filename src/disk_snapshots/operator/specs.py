"""This release's jobs and their declared properties, as ``disk-snapshots lint`` knows them.

The job specs (``jobs/*/spec``) are the one source of truth, but a jumpbox has the
installed package, not the release's checkout: ``job_specs.json`` beside this module
carries each job's property names, regenerated from the specs and checked by a test
(tests/release/test_lint.py) so that it never falls behind.

    python -m disk_snapshots.operator.specs RELEASE_DIR   # rewrite job_specs.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SPECS_PATH = Path(__file__).with_name("job_specs.json")


@dataclass(frozen=True)
class ReleaseSpecs:
    release: str
    jobs: Mapping[str, tuple[str, ...]]  # job name → its declared property names

    def to_json(self) -> str:
        return json.dumps({"release": self.release, "jobs": self.jobs}, indent=2, sort_keys=True)


def load(path: Path = SPECS_PATH) -> ReleaseSpecs:
    data = json.loads(path.read_text())
    return ReleaseSpecs(str(data["release"]), {k: tuple(v) for k, v in data["jobs"].items()})


def from_release(release_dir: Path) -> ReleaseSpecs:
    """Read the specs themselves (needs PyYAML: a development checkout)."""
    import yaml

    final = yaml.safe_load((release_dir / "config" / "final.yml").read_text())
    jobs = {}
    for spec_path in sorted((release_dir / "jobs").glob("*/spec")):
        spec = yaml.safe_load(spec_path.read_text())
        jobs[str(spec.get("name") or spec_path.parent.name)] = tuple(
            sorted(spec.get("properties") or {})
        )
    return ReleaseSpecs(str(final["name"]), jobs)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m disk_snapshots.operator.specs RELEASE_DIR", file=sys.stderr)
        return 2
    SPECS_PATH.write_text(from_release(Path(argv[0])).to_json() + "\n")
    print(f"wrote {SPECS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
