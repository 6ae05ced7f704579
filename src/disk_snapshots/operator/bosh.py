"""The bosh CLI as the operator's command runs it: a subprocess, always ``-n --json``.

Which CLI: ``$DISK_SNAPSHOTS_BOSH`` (a path, or a command line such as
``scripts/localbosh``), else ``bosh`` on PATH. Which Director and deployment: the CLI's
own environment (``BOSH_ENVIRONMENT``, ``BOSH_CLIENT``, ``BOSH_CLIENT_SECRET``,
``BOSH_CA_CERT``, ``~/.bosh/config`` from ``bosh log-in``...) passed through untouched,
with ``-e`` and ``-d`` when the operator gave them. ``-n`` because the JSON UI cannot
ask for confirmation (the CLI panics if it tries): the command asks its own.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from disk_snapshots.operator import shapes
from disk_snapshots.operator.errors import OperatorError
from disk_snapshots.operator.errors import Refused

BOSH_VARIABLE = "DISK_SNAPSHOTS_BOSH"
# A converge (stop, start) of one instance, or attach-disk; longer is a hung CLI.
TIMEOUT_SECONDS = 3600.0
LOGIN_HINT = (
    "is the bosh CLI targeted and logged in? (BOSH_ENVIRONMENT or -e, then `bosh log-in`, "
    "or BOSH_CLIENT and BOSH_CLIENT_SECRET; BOSH_CA_CERT)"
)


class BoshFailed(OperatorError):
    """A bosh command exited non-zero; the message is the CLI's own lines."""

    def __init__(self, argv: Sequence[str], message: str, envelope: shapes.Envelope | None):
        super().__init__(message)
        self.argv = list(argv)
        self.envelope = envelope


def find_bosh(environ: Mapping[str, str]) -> list[str]:
    """The command that runs the bosh CLI; Refused (saying what to install or set) if none."""
    chosen = environ.get(BOSH_VARIABLE, "").strip()
    if chosen:
        argv = shlex.split(chosen)
        if shutil.which(argv[0], path=environ.get("PATH")) is None:
            raise Refused(
                f"${BOSH_VARIABLE} is {chosen!r}, but {argv[0]} is not an executable; set it "
                "to the bosh CLI (or scripts/localbosh), or unset it to use bosh on PATH"
            )
        return argv
    found = shutil.which("bosh", path=environ.get("PATH"))
    if found is None:
        raise Refused(
            "the bosh CLI was not found on PATH: install it (https://bosh.io/docs/cli-v2-install/) "
            f"or set ${BOSH_VARIABLE} to it; nothing was stopped or written"
        )
    return [found]


@dataclass(frozen=True)
class Bosh:
    command: tuple[str, ...]
    deployment: str
    environment: str = ""  # -e; empty: the CLI's own (BOSH_ENVIRONMENT, its config)
    environ: Mapping[str, str] | None = None

    @classmethod
    def from_environment(
        cls, deployment: str, environment: str = "", environ: Mapping[str, str] | None = None
    ) -> Bosh:
        env = dict(os.environ if environ is None else environ)
        return cls(tuple(find_bosh(env)), deployment, environment, env)

    def argv(self, args: Sequence[str], deployment: bool = True) -> list[str]:
        target = ["-e", self.environment] if self.environment else []
        scope = ["-d", self.deployment] if deployment else []
        return [*self.command, "-n", "--json", *target, *scope, *args]

    def run(
        self, *args: str, deployment: bool = True, check: bool = True
    ) -> tuple[int, shapes.Envelope]:
        """Run one bosh command; its exit code and the JSON it printed. BoshFailed when it
        fails (with ``check``) or prints something other than its JSON document."""
        argv = self.argv(args, deployment)
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=dict(self.environ) if self.environ is not None else None,
                stdin=subprocess.DEVNULL,
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise BoshFailed(argv, f"`{shown(argv)}` could not run: {err}", None) from None
        try:
            envelope = shapes.parse_envelope(proc.stdout)
        except shapes.ShapeError as err:
            detail = proc.stderr.strip().splitlines()[-1:] or [str(err)]
            raise BoshFailed(argv, f"`{shown(argv)}` failed: {detail[0]}", None) from None
        if check and proc.returncode != 0:
            raise BoshFailed(argv, f"`{shown(argv)}` failed: {envelope.message()}", envelope)
        return proc.returncode, envelope

    # -- the commands the operator's command uses ------------------------------------------

    def instances(self) -> list[shapes.Instance]:
        try:
            _, envelope = self.run("instances", "--details")
        except BoshFailed as err:
            raise Refused(f"{err}; {LOGIN_HINT}; nothing was stopped or written") from None
        return shapes.instances(envelope)

    def ssh(self, slug: str | None, command: str) -> list[shapes.SshResult]:
        """``bosh ssh [SLUG] -c COMMAND --results``: one result per instance, also when the
        command failed on some (the CLI then exits 1 after printing the table)."""
        target = [slug] if slug else []
        _, envelope = self.run("ssh", *target, "-c", command, "--results", check=False)
        try:
            return shapes.ssh_results(envelope)
        except shapes.ShapeError:
            raise BoshFailed(
                self.argv(["ssh", *target, "-c", command]),
                f"`bosh ssh {slug or ''}` failed: {envelope.message()}",
                envelope,
            ) from None

    def stop(self, slug: str, *, skip_drain: bool = False) -> None:
        self.run("stop", slug, *(["--skip-drain"] if skip_drain else []))

    def start(self, slug: str) -> None:
        self.run("start", slug)

    def attach_disk(self, slug: str, cid: str) -> None:
        self.run("attach-disk", slug, cid, "--disk-properties=copy")

    def orphaned_disks(self) -> list[shapes.OrphanDisk]:
        _, envelope = self.run("disks", "--orphaned", deployment=False)
        return shapes.orphaned_disks(envelope)

    def interpolate(self, manifest: str, options: Sequence[str]) -> str:
        """``bosh int MANIFEST [-o OPS]... [-v ...]``: the manifest as the Director gets it."""
        _, envelope = self.run("int", manifest, *options, deployment=False)
        if len(envelope.blocks) != 1:
            raise BoshFailed(["bosh", "int", manifest], "bosh int printed no manifest", envelope)
        return envelope.blocks[0]


def shown(argv: Sequence[str]) -> str:
    """A bosh command line as the operator would type it (without -n --json)."""
    return " ".join(shlex.quote(a) for a in argv if a not in ("-n", "--json"))
