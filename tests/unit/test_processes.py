"""Process liveness: a zombie is gone, a tied child dies with its parent, and the
watchdog starts without psutil."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from disk_snapshots.vm.processes import alive
from disk_snapshots.vm.processes import dies_with_us


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


def test_a_command_run_dies_with_us_dies_when_its_parent_is_killed() -> None:
    # The parent runs the command from a thread, as the agent runs a restore's cp, and
    # prints its pid; SIGKILL of the parent must take the command with it.
    parent_code = (
        "import subprocess, sys, threading, time\n"
        "argv = sys.argv[1:]\n"
        "def go():\n"
        "    child = subprocess.Popen(argv)\n"
        "    print(child.pid, flush=True)\n"
        "    child.wait()\n"
        "threading.Thread(target=go).start()\n"
        "time.sleep(60)\n"
    )
    for argv, tied in ((dies_with_us(["sleep", "60"]), True), (["sleep", "60"], False)):
        with subprocess.Popen(
            [sys.executable, "-c", parent_code, *argv], stdout=subprocess.PIPE, text=True
        ) as parent:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            # setpriv sets the signal, then execs: only a parent killed after that
            # takes the child with it (a cp started as the agent dies may outlive it).
            deadline = time.monotonic() + 10
            while Path(f"/proc/{child}/comm").read_text().strip() != "sleep":
                assert time.monotonic() < deadline, "the child never became sleep"
                time.sleep(0.01)
            parent.kill()
        # Dead at once when tied; an untied one is given the same time to prove it lives.
        deadline = time.monotonic() + (5 if tied else 0.5)
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            assert alive(child) != tied, argv
        finally:
            if alive(child):
                subprocess.run(["kill", "-9", str(child)], check=False)
