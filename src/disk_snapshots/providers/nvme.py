"""Finding and mounting an attached EBS volume on the VM: the seam ``materialize`` uses.

AttachVolume takes a device name (``/dev/sdf``) that Nitro instances ignore: the volume
appears as some ``/dev/nvmeXn1`` in attach order, so the name cannot be trusted. The NVMe
controller's serial number is the volume id without its dash (``vol0123…``), which udev
publishes as ``/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123…`` and the kernel
as ``/sys/block/nvmeXn1/device/serial``. Older Xen instances show ``/dev/sdf`` as
``/dev/xvdf``. Everything here needs a real VM; tests replace the whole seam.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Protocol

from disk_snapshots.providers.base import ProviderError

BY_ID_PREFIX = "nvme-Amazon_Elastic_Block_Store_"


class DeviceSeam(Protocol):
    def find(self, volume_id: str, requested_name: str, timeout: float) -> Path:
        """The block device of an attached volume, waiting for it to show up."""
        ...

    def mount_readonly(self, device: Path, mountpoint: Path) -> None: ...

    def unmount(self, mountpoint: Path) -> None: ...

    def is_mounted(self, mountpoint: Path) -> bool: ...


def serial_of(volume_id: str) -> str:
    return volume_id.replace("-", "", 1)


class LinuxDevices:
    """The real seam: udev links, sysfs serials, ``mount`` and ``umount``."""

    def __init__(self, dev: Path = Path("/dev"), sys_block: Path = Path("/sys/block")) -> None:
        self.dev = dev
        self.sys_block = sys_block

    def candidates(self, volume_id: str, requested_name: str) -> list[Path]:
        serial = serial_of(volume_id)
        found = [self.dev / "disk/by-id" / f"{BY_ID_PREFIX}{serial}"]
        if self.sys_block.is_dir():
            for block in sorted(self.sys_block.glob("nvme*n*")):
                try:
                    text = (block / "device/serial").read_text().strip()
                except OSError:
                    continue
                if text == serial:
                    found.append(self.dev / block.name)
        # Xen (pre-Nitro) instances rename sdX to xvdX and keep the letter.
        name = Path(requested_name).name
        if name.startswith("sd"):
            found.append(self.dev / ("xvd" + name[2:]))
        return found

    def find(self, volume_id: str, requested_name: str, timeout: float) -> Path:
        deadline = time.monotonic() + timeout
        while True:
            for path in self.candidates(volume_id, requested_name):
                if path.exists():
                    return path.resolve()
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"volume {volume_id} is attached but no block device for it appeared within "
                    f"{timeout:.0f}s (looked for {BY_ID_PREFIX}{serial_of(volume_id)} in "
                    f"{self.dev}/disk/by-id, NVMe serials in {self.sys_block}, and "
                    f"{requested_name} as xvd*)"
                )
            time.sleep(0.5)

    def mount_readonly(self, device: Path, mountpoint: Path) -> None:
        # The volume is attached writable, so ext4 may replay its journal: a snapshot of a
        # frozen filesystem is clean, one taken crash-consistent may need the replay.
        _run(["mount", "-o", "ro", str(device), str(mountpoint)])

    def unmount(self, mountpoint: Path) -> None:
        _run(["umount", str(mountpoint)])

    def is_mounted(self, mountpoint: Path) -> bool:
        return os.path.ismount(mountpoint)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise ProviderError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
