"""How the operator's command fails: one line that says what to do, and an exit code.

The codes are the release's (README, "Exit codes"): 1 the work was not done, 2 a bad
argument, 5 some of it was done (the message says what stands), 70 a bug.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 5
EXIT_BUG = 70


class OperatorError(Exception):
    """Expected and explained: the message names what was wrong and what to do."""

    exit_code = EXIT_FAILED


class UsageError(OperatorError):
    exit_code = EXIT_USAGE


class Refused(OperatorError):
    """Stopped before anything was stopped or written."""


class PartlyDone(OperatorError):
    """Stopped midway; the message says where every instance stands and the way back."""

    exit_code = EXIT_PARTIAL
