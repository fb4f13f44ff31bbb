"""A redo log for ingests, so a process killed mid-write leaves only whole documents.

One ingest is several Chroma calls (upserts in batches, then closing the windows of the versions
it supersedes); a ``kill -9`` between them would leave a document with two current versions, or
a version with some of its chunks. Before the first call the store writes the whole ingest here (records with
their embeddings, and the stale ids), atomically (temporary file, fsync, rename); after the
last call it removes the entry. Opening the store replays any entry left behind: every write is
an idempotent upsert or delete, so the documents of an interrupted ingest end up fully present,
exactly as if it had finished. An ingest that fails cleanly rolls back and removes its entry.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SUFFIX = ".ingest.npz"


@dataclass
class PendingIngest:
    """An ingest's complete set of writes to one collection."""

    collection: str
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    embeddings: np.ndarray
    stale: list[str]
    update_ids: list[str] = field(default_factory=list)  # earlier versions whose window this ingest closes
    update_metadatas: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None


class IngestJournal:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def record(self, op: PendingIngest) -> Path:
        """Write ``op`` durably before any of it reaches the store; returns its entry."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{SUFFIX}"  # sorts oldest first
        tmp = self.folder / f".{name}.tmp"
        meta = {"collection": op.collection, "ids": op.ids, "texts": op.texts, "metadatas": op.metadatas,
                "stale": op.stale, "update_ids": op.update_ids, "update_metadatas": op.update_metadatas}
        with tmp.open("wb") as fh:
            np.savez(fh, embeddings=np.asarray(op.embeddings, dtype=np.float32),
                     meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
            fh.flush()
            os.fsync(fh.fileno())
        final = self.folder / name
        os.replace(tmp, final)
        _fsync_dir(self.folder)
        op.path = final
        return final

    def done(self, op: PendingIngest) -> None:
        if op.path is not None:
            op.path.unlink(missing_ok=True)
            _fsync_dir(self.folder)

    def pending(self) -> list[PendingIngest]:
        """Entries an earlier process left behind, oldest first (half-written temporaries removed)."""
        if not self.folder.is_dir():
            return []
        for tmp in self.folder.glob(f".*{SUFFIX}.tmp"):  # killed before its rename: nothing was written
            tmp.unlink(missing_ok=True)
        ops = []
        for entry in sorted(self.folder.glob(f"[0-9]*{SUFFIX}")):
            with np.load(entry) as data:
                meta = json.loads(data["meta"].tobytes())
                ops.append(PendingIngest(embeddings=data["embeddings"], path=entry, **meta))
        return ops


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
