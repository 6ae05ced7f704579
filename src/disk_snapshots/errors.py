"""Exit codes of every entry point, and the errors of the release that carry them.

Every error this release expects (a bad property, a bad argument, a provider that
refuses, a service that does not answer) derives from :class:`ReleaseError` and knows its
exit code; :func:`guarded` runs an entry point and turns such an error into one line
that says what was wrong, and anything else (a bug) into its traceback on stderr and
exit code 70. Hooks, errands, ``bin/snapshots``, the daemon's commands and the
operator's command all exit with these codes (README, "Exit codes"):

    0   done
    1   failed: the work was not done; the message says why and what stands
    2   usage: a bad argument; the message names it and what is allowed
    3   configuration: an invalid property (or rendered config.json), each one named
    4   provider: the snapshot backend refused, failed or cannot be reached
    5   partial: some of the work was done and some not (the message says which)
    70  internal error: a bug; its traceback is on stderr
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_PROVIDER = 4
EXIT_PARTIAL = 5
EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h)

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_FAILED: "failed: the work was not done; the message says why and what stands",
    EXIT_USAGE: "usage: a bad argument; the message names it and what is allowed",
    EXIT_CONFIG: "configuration: an invalid property (or rendered config.json), each one named",
    EXIT_PROVIDER: "provider: the snapshot backend refused, failed or cannot be reached",
    EXIT_PARTIAL: "partial: some of the work was done and some not; the message says which",
    EXIT_BUG: "internal error: a bug; its traceback is on stderr",
}


class ReleaseError(Exception):
    """An error this release expects and explains in one message; not a bug."""

    exit_code = EXIT_FAILED


class UsageError(ReleaseError, ValueError):
    """A bad argument: the message names it and says what is allowed."""

    exit_code = EXIT_USAGE


class PartialFailure(ReleaseError):
    """Some of the work was done and some not; the message says which."""

    exit_code = EXIT_PARTIAL


def exit_code_of(err: BaseException) -> int | None:
    """The documented exit code of an expected error; None for a bug."""
    if isinstance(err, ReleaseError):
        return err.exit_code
    if isinstance(err, OSError):
        # The VM refused (a full disk, a missing device): expected, said in one line.
        return EXIT_FAILED
    return None


def code_of(err: BaseException) -> int:
    """The exit code for an error an entry point caught on purpose (EXIT_FAILED if it
    carries none)."""
    code = exit_code_of(err)
    return EXIT_FAILED if code is None else code


def epilog() -> str:
    """The exit codes, as --help lists them."""
    return "exit codes:\n" + "\n".join(f"  {code:<3} {text}" for code, text in EXIT_CODES.items())


def guarded(work: Callable[[], int], name: str, out: TextIO | None = None) -> int:
    """Run an entry point: an expected error becomes ``name: message`` and its exit code;
    a bug its traceback on stderr and EXIT_BUG. ``out`` is where the entry point speaks
    (an errand's stdout, a hook's stderr)."""
    stream = out if out is not None else sys.stderr
    try:
        return work()
    except Exception as err:
        code = exit_code_of(err)
        if code is None:
            traceback.print_exc(file=sys.stderr)
            print(
                f"{name}: internal error, a bug (the traceback is on stderr): "
                f"{type(err).__name__}: {err}",
                file=stream,
                flush=True,
            )
            return EXIT_BUG
        lines = str(err).splitlines() or [type(err).__name__]
        print(f"{name}: {lines[0]}", file=stream, flush=True)
        for line in lines[1:]:
            print(f"  {line}", file=stream, flush=True)
        return code
