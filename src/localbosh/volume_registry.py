"""Which IaaS volume stands behind which local disk: a JSON file in $LOCALBOSH_HOME.

The EC2 and Cinder stand-ins (ec2.py, cinder.py) record each volume they create per disk
CID, with where it lives, so that deleting the disk (clean-up of orphans) deletes its
volume even after the deployment, or its manifest, is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path


class Registry:
    """Disk CID -> its volume's record, read and written under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, dict[str, str]]]:
        """The records, written back if changed (deployments run concurrently)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries: dict[str, dict[str, str]] = (
                json.loads(self.path.read_text()) if self.path.exists() else {}
            )
            before = json.dumps(entries, sort_keys=True)
            yield entries
            if json.dumps(entries, sort_keys=True) != before:
                tmp = self.path.with_suffix(".tmp")
                # Cinder's records hold the credentials that made the volumes.
                tmp.touch(mode=0o600)
                tmp.chmod(0o600)
                tmp.write_text(json.dumps(entries, indent=2, sort_keys=True))
                tmp.replace(self.path)
        finally:
            os.close(fd)

    def volume_id(self, cid: str) -> str | None:
        if not self.path.exists():
            return None
        entry = json.loads(self.path.read_text()).get(cid)
        return str(entry["volume_id"]) if entry else None
