"""Manifests interpolated by the real `bosh int`.

Ops files (go-patch), `((variables))`, `-v`/`-l` values and the `variables:`
section generated into a `--vars-store` (passwords, certificates, keys) all mean
here exactly what they mean to the bosh CLI, because the CLI does them: this
module only builds its argv and reads its answer (boshcli runs it with `-n
--json` and a temporary HOME).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from localbosh import boshcli

__all__ = ["InterpolationError", "interpolate"]


class InterpolationError(Exception):
    """`bosh int` refused the manifest; the message is the CLI's."""


def interpolate(
    manifest: Path | Mapping[str, Any],
    ops_files: Sequence[Path] = (),
    *,
    var_kvs: Sequence[str] = (),
    vars_files: Sequence[Path] = (),
    vars_store: Path | None = None,
    var_errs: bool = False,
    var_errs_unused: bool = False,
) -> dict[str, Any]:
    """`bosh int MANIFEST -o OPS... -l FILE... -v NAME=VALUE... [--vars-store S]
    [--var-errs] [--var-errs-unused]`, parsed.

    manifest: a file, or an already parsed document (written to a temp file).
    var_kvs: `-v` arguments as an operator types them; the CLI parses the values.
    vars_store: created 0600 first when absent, since the CLI writes generated
    private keys into it with the mode the file already has (else 0644 by umask).
    """
    with tempfile.TemporaryDirectory(prefix="localbosh-int-") as tmp:
        if isinstance(manifest, Path):
            path = manifest
        else:
            path = Path(tmp) / "manifest.yml"
            path.write_text(yaml.safe_dump(dict(manifest), default_flow_style=False))
        argv = ["int", str(path)]
        for ops in ops_files:
            argv += ["-o", str(ops)]
        for vars_file in vars_files:
            argv += ["-l", str(vars_file)]
        for kv in var_kvs:
            argv += ["-v", kv]
        if vars_store is not None:
            vars_store.parent.mkdir(parents=True, exist_ok=True)
            vars_store.touch(mode=0o600, exist_ok=True)
            argv += ["--vars-store", str(vars_store)]
        if var_errs:
            argv.append("--var-errs")
        if var_errs_unused:
            argv.append("--var-errs-unused")
        try:
            answer = boshcli.run(argv)
        except boshcli.BoshCliError as exc:
            raise InterpolationError(str(exc)) from exc
    if len(answer.blocks) != 1:
        raise InterpolationError(f"bosh int printed {len(answer.blocks)} documents, expected one")
    doc = yaml.safe_load(answer.blocks[0])
    if not isinstance(doc, dict):
        raise InterpolationError(f"bosh int printed no manifest map: {answer.blocks[0][:200]!r}")
    return doc
