"""The entry points: what BOSH, monit and operators run, through ``python -m disk_snapshots``.

Each module here turns a command into exit codes and output (hooks, errands, the daemon,
bin/snapshots, the freeze watchdog). Nothing outside cli.py imports them: the logic
they run lives in the library packages beside this one.
"""
