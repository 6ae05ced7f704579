"""The local deployment's stand-in for bosh-dns: one hosts file per deployment.

On BOSH, ``link(...).address`` renders as a DNS query such as
``q-s0.redis-leader.default.redis.bosh`` (the Director's ``dns/dns_encoder.rb``),
and bosh-dns on every VM answers it with the addresses of the group's instances;
``spec.networks.<net>.dns_record_name`` (``<index>.<group>.<net>.<deployment>.bosh``)
and ``<uuid>.<group>...`` name single instances. Here the instances share one host,
so a hosts file with those names, bind-mounted over ``/etc/hosts`` in every instance's
mount namespace, resolves them through the ordinary resolver (glibc's ``files``).

A hosts file holds names, not queries: it has the queries a template can make
without criteria or with ``azs:`` and ``status:`` (every instance counts as healthy,
so ``unhealthy`` names nothing), not the short or link-named forms, which the renderer
refuses anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from localbosh.agent import Identity

NETWORK = "default"  # the local deployment's one network (deployment.instance_spec)
DOMAIN = "bosh"  # the Director's default root_domain
# dns_encoder.rb query_slug: status → s<n>; unhealthy (s1) has no instance here.
STATUSES = ("s0", "s3", "s4")
BEGIN = "# localbosh: bosh-dns names of this deployment"


def canonical(name: str) -> str:
    """dns/canonicalizer.rb ``canonicalize``: lower case, ``_`` to ``-``, the rest dropped."""
    return re.sub(r"[^a-z0-9-]", "", name.lower().replace("_", "-"))


def az_numbers(group_azs: Iterable[Sequence[str]]) -> dict[str, int]:
    """AZ → number, in the order the deployment first names them, from 1.

    The Director numbers AZs in its database (``LocalDnsEncodedAz`` ids, persisted
    in the cloud config's order on first deploy); a fresh Director with the same
    AZs in the same order gives these numbers.
    """
    numbers: dict[str, int] = {}
    for azs in group_azs:
        for az in azs:
            numbers.setdefault(az, len(numbers) + 1)
    return numbers


def records(instances: Sequence[Identity], azs: Mapping[str, int]) -> list[tuple[str, str]]:
    """(address, name) for every name a template of this deployment can be given."""
    found: list[tuple[str, str]] = []
    groups: dict[str, list[Identity]] = {}
    for ident in instances:
        groups.setdefault(ident.group, []).append(ident)
    for group, members in groups.items():
        deployment = members[0].deployment
        suffix = f"{canonical(group)}.{NETWORK}.{canonical(deployment)}.{DOMAIN}"
        for member in sorted(members, key=lambda m: m.index):
            found.append((member.address, f"{member.index}.{suffix}"))
            found.append((member.address, f"{member.id}.{suffix}"))
            for status in STATUSES:
                found.append((member.address, f"q-{status}.{suffix}"))
                if member.az is not None and member.az in azs:
                    query = "".join(sorted([f"a{azs[member.az]}", status]))
                    found.append((member.address, f"q-{query}.{suffix}"))
    return found


def hosts_file(base: str, names: Iterable[tuple[str, str]]) -> str:
    """The host's own hosts file (localhost and the rest), then this deployment's names."""
    lines = [base.rstrip("\n"), BEGIN, *(f"{address} {name}" for address, name in names)]
    return "\n".join(lines) + "\n"


def publish(path: Path, instances: Sequence[Identity], azs: Mapping[str, int]) -> None:
    """Write the deployment's hosts file in place: instances bind-mount this very inode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = hosts_file(Path("/etc/hosts").read_text(), records(instances, azs))
    with path.open("a+") as f:
        f.seek(0)
        f.truncate()
        f.write(text)
