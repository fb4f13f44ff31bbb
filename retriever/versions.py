"""Versions of a document and their validity windows.

Every ingest of changed content adds a version; none is overwritten. A version holds from its
``valid_from`` until the next version's ``valid_from`` (or until the document was deleted), so
a query ``as_of`` a date sees exactly the versions valid that day. Windows are half-open days
``[valid_from, valid_to)`` stored as day ordinals, which Chroma can filter with ``$lte``/``$gt``;
a version ingested without a date holds from ``ALWAYS`` (day 0) when it is the first one, else
from the day it was ingested.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

ALWAYS = 0  # valid_from_day of a first version that names no date
OPEN = date.max.toordinal()  # valid_to_day of the version that still holds


def today() -> date:
    return datetime.now(UTC).date()


def day(d: date | None) -> int:
    return ALWAYS if d is None else d.toordinal()


def from_day(n: int) -> date | None:
    return None if n in (ALWAYS, OPEN) else date.fromordinal(n)


def content_sha256(text: str, source: str, kind: str, metadata: dict[str, Any]) -> str:
    """What makes two ingests of one document the same content (an identical re-ingest is a no-op)."""
    payload = json.dumps({"text": text, "source": source, "kind": kind, "metadata": metadata}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class StoredVersion:
    """One version of a document as the store holds it: its chunks' record ids and window."""

    version: int
    valid_from_day: int
    valid_to_day: int
    content_sha256: str
    ingested_at: str
    source: str
    deleted_day: int | None = None
    record_ids: list[str] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)

    def valid_on(self, d: int) -> bool:
        return self.valid_from_day <= d < self.valid_to_day


def group_versions(ids: list[str], metadatas: list[dict[str, Any]]) -> list[StoredVersion]:
    """The stored chunks of one document, grouped by version, oldest version number first."""
    by: dict[int, StoredVersion] = {}
    for rid, meta in zip(ids, metadatas):
        n = int(meta.get("version", 1))
        v = by.get(n)
        if v is None:
            v = by[n] = StoredVersion(
                version=n, valid_from_day=int(meta.get("valid_from_day", ALWAYS)),
                valid_to_day=int(meta.get("valid_to_day", OPEN)), content_sha256=str(meta.get("content_sha256", "")),
                ingested_at=str(meta.get("ingested_at", "")), source=str(meta.get("source", "")),
                deleted_day=int(meta["deleted_day"]) if "deleted_day" in meta else None)
        v.record_ids.append(rid)
        v.metadatas.append(meta)
    return [by[n] for n in sorted(by)]


def windows(versions: list[StoredVersion]) -> dict[int, int]:
    """Each version's valid_to_day: the next version's valid_from, cut short by a deletion."""
    ordered = sorted(versions, key=lambda v: (v.valid_from_day, v.version))
    ends: dict[int, int] = {}
    for i, v in enumerate(ordered):
        end = ordered[i + 1].valid_from_day if i + 1 < len(ordered) else OPEN
        if v.deleted_day is not None:
            end = min(end, v.deleted_day)
        ends[v.version] = max(end, v.valid_from_day)  # a superseded same-day version: an empty window
    return ends


def holds_on(meta: dict[str, Any], d: int) -> bool:
    """A stored chunk's window ``[valid_from_day, valid_to_day)`` contains day ``d``."""
    return int(meta.get("valid_from_day", ALWAYS)) <= d < int(meta.get("valid_to_day", OPEN))


def current(versions: list[StoredVersion], on: int) -> StoredVersion | None:
    """The version valid on day ``on``, if any."""
    return next((v for v in versions if v.valid_on(on)), None)
