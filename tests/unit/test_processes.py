"""Process liveness: a zombie is gone, and the watchdog starts without psutil."""

from __future__ import annotations

import subprocess
import sys
import time

from disk_snapshots.vm.processes import alive


def test_a_zombie_is_gone_and_a_reaped_process_too() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert alive(child.pid)
    finally:
        child.kill()
    deadline = time.monotonic() + 10
    while alive(child.pid):  # killed, not reaped yet: a zombie
        assert time.monotonic() < deadline, "a killed child still counts as alive"
        time.sleep(0.01)
    child.wait()
    assert not alive(child.pid)
    assert not alive(0)


def test_the_watchdog_imports_no_psutil() -> None:
    # Its start-up is inside the other members' freezes during a set (vm/processes.py).
    probe = "import sys, disk_snapshots.commands.watchdog; print('psutil' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
