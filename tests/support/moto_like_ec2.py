"""``moto_server`` with two EC2 behaviours fixed, for the benchmark at 10,000 snapshots.

1. Tags by lookup. moto 5.2.5 finds the tags of one resource by scanning every tag of
   every resource with regular expressions (``TagBackend.describe_tags``), once per
   filter it evaluates, so DescribeSnapshots over N snapshots with T tags costs about
   N x N x T steps: minutes at 10,000 snapshots, which EC2 itself does not spend.
2. Pages. moto ignores MaxResults/NextToken on DescribeSnapshots and answers with every
   snapshot at once; EC2 answers at most MaxResults (up to 1,000) and a NextToken, which
   is what bounds a paginating client's memory.
3. The answer's XML. moto's generic, model-driven serializer spends about 1 ms per tagged
   snapshot, more than botocore needs to parse it: the benchmark would time the emulator.
   DescribeSnapshots is written here directly, in EC2's format (botocore parses it, and
   the benchmark checks every snapshot comes back with valid annotations).

The tests run moto unchanged (they emulate pages with botocore event hooks instead).
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE
from moto.ec2.utils import get_prefix
from moto.server import main


def get_tags(self: Any) -> list[dict[str, str]]:
    resource_id = getattr(self, "id", None)
    if not resource_id:
        return []
    # .get, not [...]: the backend's defaultdict would grow an entry per lookup.
    tags = self.ec2_backend.tags.get(resource_id) or {}
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    return [
        {"resource_id": resource_id, "key": k, "value": v, "resource_type": kind}
        for k, v in tags.items()
    ]


def describe_snapshots(self: Any) -> str:
    snapshots = self.ec2_backend.describe_snapshots(
        snapshot_ids=self._get_param("SnapshotIds", []),
        filters=self._filters_from_querystring(),
    )
    limit = self._get_int_param("MaxResults") or len(snapshots)
    # The token is an offset: moto keeps snapshots in creation order between calls.
    start = int(self._get_param("NextToken") or 0)
    page = snapshots[start : start + limit]
    token = str(start + limit) if start + limit < len(snapshots) else ""
    return render(page, token)


def render(snapshots: list[Any], token: str) -> str:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<DescribeSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        "<requestId>bench</requestId><snapshotSet>"
    ]
    for s in snapshots:
        tags = "".join(
            f"<item><key>{escape(t['key'])}</key><value>{escape(t['value'])}</value></item>"
            for t in s.get_tags()
        )
        out.append(
            f"<item><snapshotId>{s.id}</snapshotId><volumeId>{s.volume.id}</volumeId>"
            f"<status>{s.status}</status>"
            f"<startTime>{s.start_time.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</startTime>"
            f"<progress>100%</progress><ownerId>{s.owner_id}</ownerId>"
            f"<volumeSize>{s.volume.size}</volumeSize>"
            f"<description>{escape(s.description or '')}</description>"
            f"<encrypted>{str(bool(s.encrypted)).lower()}</encrypted>"
            f"<tagSet>{tags}</tagSet></item>"
        )
    out.append("</snapshotSet>")
    if token:
        out.append(f"<nextToken>{token}</nextToken>")
    out.append("</DescribeSnapshotsResponse>")
    return "".join(out)


if __name__ == "__main__":
    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]
    ElasticBlockStore.describe_snapshots = describe_snapshots  # type: ignore[method-assign,assignment]
    main()
