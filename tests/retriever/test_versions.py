"""Facts that change: versions with validity windows, as_of retrieval, history, tombstones, purge."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

import retriever.store as store_mod
from ragtune.errors import NotFoundError
from retriever.models import Document

pytestmark = pytest.mark.slow

Q = "Who is the chief executive of Acme Corporation?"
V1 = "Acme Corporation's chief executive is Alice Smith."
V2 = "Acme Corporation's chief executive is Bob Jones."
TODAY = date.today()


def _top(store, collection: str = "facts", **kw) -> str | None:
    found = store.search(Q, k=1, collection=collection, **kw)
    return found[0].text if found else None


def test_an_update_is_a_new_version_and_as_of_sees_the_old_one(store):
    store.upsert([Document(id="ceo", text=V1, valid_from="2025-01-01")], collection="facts")
    result = store.upsert([Document(id="ceo", text=V2, valid_from="2026-06-01")], collection="facts")
    assert (result.documents, result.unchanged, result.replaced_chunks) == (1, 0, 1)

    now = store.search(Q, k=1, collection="facts")[0]
    assert now.text == V2 and now.version == 2 and now.valid_from == date(2026, 6, 1) and now.valid_to is None
    before = store.search(Q, k=1, collection="facts", as_of=date(2026, 5, 31))[0]
    assert before.text == V1 and before.version == 1 and before.valid_to == date(2026, 6, 1)
    assert _top(store, as_of=date(2024, 12, 31)) is None  # before anything held

    history = store.history("ceo", collection="facts")
    assert [(v.version, v.valid_from, v.valid_to) for v in history] == [
        (1, date(2025, 1, 1), date(2026, 6, 1)), (2, date(2026, 6, 1), None)]
    assert history[0].content_sha256 != history[1].content_sha256 and all(v.ingested_at for v in history)


def test_identical_content_is_unchanged_and_embeds_nothing(store, monkeypatch):
    docs = [Document(id=f"d{i}", text=f"Fact number {i} about the lighthouse.") for i in range(5)]
    store.upsert(docs, collection="facts")
    count = store.count("facts")
    embedded = []
    real = store_mod.embed_texts
    monkeypatch.setattr(store_mod, "embed_texts", lambda texts, **kw: embedded.extend(texts) or real(texts, **kw))
    again = store.upsert(docs, collection="facts")
    assert (again.documents, again.unchanged, again.chunks) == (0, 5, 0)
    assert embedded == [] and store.count("facts") == count
    # One changed among them: only it is embedded.
    changed = store.upsert([*docs[:4], Document(id="d4", text="Fact number 4, corrected.")], collection="facts")
    assert (changed.documents, changed.unchanged) == (1, 4) and embedded == ["Fact number 4, corrected."]


def test_an_older_valid_from_inserts_a_historical_version_in_order(store):
    store.upsert([Document(id="ceo", text=V2, valid_from="2026-06-01")], collection="facts")
    store.upsert([Document(id="ceo", text=V1, valid_from="2025-01-01")], collection="facts")
    history = store.history("ceo", collection="facts")
    assert [(v.version, v.valid_from, v.valid_to) for v in history] == [
        (2, date(2025, 1, 1), date(2026, 6, 1)), (1, date(2026, 6, 1), None)]
    assert _top(store) == V2 and _top(store, as_of=date(2025, 6, 1)) == V1


def test_delete_is_a_tombstone_and_purge_removes_everything(store):
    store.upsert([Document(id="ceo", text=V1, valid_from="2025-01-01")], collection="facts")
    assert store.delete_document("ceo", collection="facts") == 1
    assert _top(store) is None and store.get_document("ceo", collection="facts") is None
    yesterday = TODAY - timedelta(days=1)
    assert _top(store, as_of=yesterday) == V1  # before the deletion it still answers
    [v1] = store.history("ceo", collection="facts")
    assert v1.deleted_on == TODAY and v1.valid_to == TODAY
    with pytest.raises(NotFoundError, match="no current version"):
        store.delete_document("ceo", collection="facts")

    # Re-ingested after the deletion: a new current version; the deleted window stays closed.
    store.upsert([Document(id="ceo", text=V2)], collection="facts")
    assert _top(store) == V2 and _top(store, as_of=yesterday) == V1

    assert store.delete_document("ceo", collection="facts", purge=True) == 2
    assert _top(store, as_of=yesterday) is None and _top(store) is None
    with pytest.raises(NotFoundError):
        store.history("ceo", collection="facts")


def test_a_collection_from_before_versions_is_migrated_in_place(store):
    # The layout of earlier releases: chunks without version or window fields.
    coll = store.client.get_or_create_collection("legacy", embedding_function=store.embedding_function,
                                                 configuration={"hnsw": {"space": "cosine"}})
    coll.add(ids=["default/old::0"], documents=[V1],
             metadatas=[{"tenant": "default", "doc_id": "old", "source": "old", "chunk": 0, "kind": "fact"}])
    assert store.search(Q, k=1, collection="legacy")[0].text == V1
    assert [v.version for v in store.history("old", collection="legacy")] == [1]
    store.upsert([Document(id="old", text=V2)], collection="legacy")
    assert _top(store, "legacy") == V2


def test_mid_write_a_query_sees_the_old_version_or_the_new_never_both(store, monkeypatch):
    from chromadb.api.models.Collection import Collection

    store.upsert([Document(id="ceo", text=V1, valid_from="2025-01-01")], collection="facts")
    seen = []
    real_update = Collection.update

    def look_then_update(self, *args, **kwargs):  # the moment between writing the chunks and opening them
        seen.append([p.text for p in store.search(Q, k=5, collection="facts")])
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "update", look_then_update)
    store.upsert([Document(id="ceo", text=V2, valid_from="2026-06-01")], collection="facts")
    assert seen == [[V1]]  # the new chunks were there, invisible; the old version still answered
    assert [p.text for p in store.search(Q, k=5, collection="facts")] == [V2]
