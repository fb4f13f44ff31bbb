"""The ingest journal: entries written whole or not at all, read back exactly, removed when done."""

from __future__ import annotations

import numpy as np

from retriever.journal import IngestJournal, PendingIngest


def _op() -> PendingIngest:
    return PendingIngest(collection="c", ids=["t::a::0", "t::a::1"], texts=["one", "two"],
                         metadatas=[{"doc_id": "a", "chunk": 0}, {"doc_id": "a", "chunk": 1}],
                         embeddings=np.arange(8, dtype=np.float32).reshape(2, 4), stale=["t::a::2"])


def test_an_entry_reads_back_exactly_and_is_gone_when_done(tmp_path):
    journal = IngestJournal(tmp_path / "j")
    op = _op()
    journal.record(op)
    [back] = journal.pending()
    assert (back.collection, back.ids, back.texts, back.metadatas, back.stale) == (
        op.collection, op.ids, op.texts, op.metadatas, op.stale)
    assert np.array_equal(back.embeddings, op.embeddings)
    journal.done(back)
    assert journal.pending() == []


def test_a_temporary_left_by_a_kill_before_the_rename_is_dropped(tmp_path):
    journal = IngestJournal(tmp_path / "j")
    journal.folder.mkdir()
    (journal.folder / ".abc.ingest.npz.tmp").write_bytes(b"half")
    assert journal.pending() == [] and list(journal.folder.iterdir()) == []


def test_entries_replay_oldest_first(tmp_path):
    journal = IngestJournal(tmp_path / "j")
    first, second = _op(), _op()
    second.collection = "d"
    journal.record(first)
    journal.record(second)
    assert [op.collection for op in journal.pending()] == ["c", "d"]
