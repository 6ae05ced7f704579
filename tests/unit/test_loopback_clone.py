"""clone(): a full copy only where the filesystem cannot reflink, and a warning only then."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from disk_snapshots.providers import loop_images
from disk_snapshots.providers.base import ProviderError


def refuse(code: int):  # type: ignore[no-untyped-def]
    def reflink(source: Path, target: Path) -> None:
        target.write_bytes(b"")  # FICLONE fails after the target was opened
        raise OSError(code, "refused")

    return reflink


def test_where_reflink_is_impossible_it_copies_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(b"data" * 1024)
    monkeypatch.setattr(loop_images.fsops, "reflink", refuse(errno.EOPNOTSUPP))
    with caplog.at_level(logging.WARNING):
        assert loop_images.clone(source, tmp_path / "copy.img") == "full"
    assert (tmp_path / "copy.img").read_bytes() == source.read_bytes()
    assert "making a full sparse copy" in caplog.text


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOSPC, errno.EIO])
def test_any_other_error_fails_without_promising_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(b"data")
    monkeypatch.setattr(loop_images.fsops, "reflink", refuse(code))
    with caplog.at_level(logging.WARNING), pytest.raises(ProviderError, match="refused"):
        loop_images.clone(source, tmp_path / "copy.img")
    assert "full sparse copy" not in caplog.text
    assert not (tmp_path / "copy.img").exists()
