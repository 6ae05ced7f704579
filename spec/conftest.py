"""Fixtures of the template specs."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def make_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a throwaway job (spec, monit, templates) and return its directory."""

    def make(
        spec: Mapping[str, Any],
        templates: Mapping[str, str],
        monit: str = "",
    ) -> Path:
        job_dir = tmp_path / "jobs" / str(spec["name"])
        (job_dir / "templates").mkdir(parents=True)
        (job_dir / "spec").write_text(yaml.safe_dump(dict(spec)))
        (job_dir / "monit").write_text(textwrap.dedent(monit))
        for src, body in templates.items():
            path = job_dir / "templates" / src
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(body))
        return job_dir

    return make
