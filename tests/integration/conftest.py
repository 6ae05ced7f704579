"""Fixtures for tests that bring up local deployments (as root).

Every test gets its own state dir, and its teardown deletes whatever deployment
is left and then asserts that nothing of it remains on the machine: no loop
device, no mount and no process that still sees the test's state dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lbtest import LocalBosh
from lbtest import leftovers

from localbosh.state import Layout


@pytest.fixture
def localbosh(tmp_path: Path) -> Iterator[LocalBosh]:
    lb = LocalBosh(tmp_path / "home")
    yield lb
    for name in Layout(lb.home).deployment_names():
        lb.run("-d", name, "delete-deployment", "--force", check=False)
    left = leftovers(lb.home)
    assert left == [], "teardown left things behind:\n" + "\n".join(left)


@pytest.fixture
def record_log(tmp_path: Path) -> Path:
    return tmp_path / "record.log"
