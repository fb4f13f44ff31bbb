"""FactStore against the real embedding model and a real Chroma PersistentClient in tmp_path."""

from datetime import date, timedelta

import pytest
from chromadb.api.models.Collection import Collection

from ragtune.errors import InvalidRequestError, NotFoundError, RagtuneError
from retriever.models import Document
from retriever.store import FactStore

pytestmark = pytest.mark.slow

CORPUS = [
    Document(id="zorblax.md", source="kb/zorblax.md", text="The Zorblax-9 reactor at Quellmoor station is cooled by "
             "liquid basalt and was commissioned by engineer Mira Tannhauser in 1987.", valid_from="2023-01-01",
             metadata={"team": "energy"}),
    Document(id="bakery.md", text="Our bakery sells sourdough bread, croissants and rye loaves every morning "
             "from seven o'clock; on Sundays we close at noon."),
    Document(id="parking.md", text="Employees may park in garage B. Visitor parking is on level two and "
             "requires a badge from the front desk."),
    Document(id="vacation.md", text="Full-time staff receive twenty-seven vacation days per year; unused days "
             "expire at the end of March of the following year."),
]


def test_ingest_then_search_finds_the_fact(store):
    result = store.upsert(CORPUS)
    assert (result.collection, result.tenant, result.documents, result.replaced_chunks) == ("default", "default", 4, 0)
    assert result.chunks == store.count() >= 4

    passages = store.search("What cools the Zorblax reactor?", k=3)
    assert len(passages) == 3
    top = passages[0]
    assert top.doc_id == "zorblax.md" and top.source == "kb/zorblax.md"
    assert top.id.startswith("zorblax.md::")
    assert top.valid_from == date(2023, 1, 1) and top.metadata == {"team": "energy"}
    assert top.kind == "fact"  # the default kind: answered from and cited
    # ranked by cosine + keyword_weight x the candidates' scaled BM25; score stays the cosine
    w = store.settings.keyword_weight
    ranked = [p.score + w * p.keyword_score for p in passages]
    assert ranked == sorted(ranked, reverse=True) and all(0 <= p.keyword_score <= 1 for p in passages)
    assert 0.3 < top.score <= 1.0 and top.score > passages[-1].score

    top = store.search("how many vacation days do I get", k=1)[0]
    assert (top.doc_id, top.source) == ("vacation.md", "vacation.md")  # source defaults to the id


def test_reingest_adds_a_version_and_the_old_one_stays_for_as_of(store):
    long_text = " ".join(f"The marmot census counted {n} marmots in valley {n}." for n in range(6))
    first = store.upsert([Document(id="census", text=long_text), CORPUS[1]])
    old_chunks = store.get_document("census")
    assert len(old_chunks) > 2 and [c.chunk for c in old_chunks] == list(range(len(old_chunks)))

    second = store.upsert([Document(id="census", text="The marmot census was cancelled this year.")])
    assert (second.documents, second.chunks, second.replaced_chunks) == (1, 1, len(old_chunks))
    current = store.get_document("census")
    assert [c.id for c in current] == ["census::0"] and current[0].version == 2
    assert store.count() == first.chunks + 1  # the old version is kept, closed today
    yesterday = date.today() - timedelta(days=1)
    assert [c.version for c in store.get_document("census", as_of=yesterday)] == [1] * len(old_chunks)
    texts = [p.text for p in store.search("how many marmots were counted", k=5)]
    assert "The marmot census was cancelled this year." in texts
    assert not any("counted" in t for t in texts)


def test_tenants_are_isolated(store):
    store.upsert([Document(id="policy", text="Acme refunds are processed within 3 days.")], tenant="acme")
    store.upsert([Document(id="policy", text="Globex refunds take 45 days and need a form.")], tenant="globex")

    acme = store.search("how long do refunds take", k=5, tenant="acme")
    globex = store.search("how long do refunds take", k=5, tenant="globex")
    assert [p.text for p in acme] == ["Acme refunds are processed within 3 days."]
    assert [p.text for p in globex] == ["Globex refunds take 45 days and need a form."]
    assert store.search("refunds", tenant="initech") == []
    assert store.get_document("policy", tenant="initech") is None

    store.delete_document("policy", tenant="acme")
    assert store.get_document("policy", tenant="acme") is None
    assert store.get_document("policy", tenant="globex") is not None


def test_invalid_document_in_batch_leaves_collection_unchanged(store, dump):
    store.upsert(CORPUS[:2])
    before = dump(store)
    batch = [{"id": "zorblax.md", "text": "Rewritten."}, {"id": "new.md", "text": "Fine."}, {"id": "bad", "text": "  "}]
    with pytest.raises(InvalidRequestError, match=r"document 2 \('bad'\) is invalid: text: .*must not be empty"):
        store.upsert(batch)
    with pytest.raises(InvalidRequestError, match="'new.md' appears twice"):
        store.upsert([{"id": "new.md", "text": "a"}, {"id": "new.md", "text": "b"}])
    assert dump(store) == before


def test_write_failing_part_way_is_rolled_back(store, dump, monkeypatch):
    store.upsert(CORPUS)
    before = dump(store)
    assert before

    # Real Chroma writes, but in batches of 2 with the second batch failing: the first batch has
    # already overwritten stored chunks and added new ones when the failure hits.
    monkeypatch.setattr(store.client, "get_max_batch_size", lambda: 2)
    real_upsert = Collection.upsert
    calls = {"n": 0}

    def flaky_upsert(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real_upsert(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "upsert", flaky_upsert)
    changed = [
        Document(id="zorblax.md", text=" ".join(["The reactor was decommissioned."] * 8)),
        Document(id="brand-new.md", text="A document that must not survive the failed ingest."),
    ]
    with pytest.raises(RagtuneError, match="failed and was rolled back: disk full"):
        store.upsert(changed)
    assert calls["n"] == 2  # the partial write happened (the rollback deletes and updates, no upsert)
    monkeypatch.setattr(Collection, "upsert", real_upsert)

    assert dump(store) == before
    assert store.search("Zorblax reactor cooling", k=1)[0].text.startswith("The Zorblax-9 reactor")


def test_failed_first_ingest_leaves_no_collection(store, monkeypatch):
    def broken_upsert(self, *args, **kwargs):
        raise RuntimeError("connection reset")

    monkeypatch.setattr(Collection, "upsert", broken_upsert)
    with pytest.raises(RagtuneError, match="connection reset"):
        store.upsert(CORPUS[:1], collection="fresh-one")
    assert "fresh-one" not in store.collections()


def test_reopened_store_searches_persisted_facts(store_settings):
    FactStore(store_settings).upsert(CORPUS, collection="kb-main", tenant="t1")
    reopened = FactStore(store_settings)  # a new client on the same folder
    assert reopened.count("kb-main") == reopened.count("kb-main", tenant="t1") > 0
    top = reopened.search("who commissioned the reactor at Quellmoor", collection="kb-main", tenant="t1")[0]
    assert top.doc_id == "zorblax.md"
    # The collection records our embedding function and cosine space; opened without naming an
    # embedding function, Chroma rebuilds ours from the registry (its default would try to download).
    coll = reopened.client.get_collection("kb-main")
    assert coll.configuration_json["embedding_function"]["name"] == "ragtune-minilm"
    assert coll.configuration_json["hnsw"]["space"] == "cosine"
    res = coll.query(query_texts=["sourdough croissants"], n_results=1, where={"tenant": "t1"})
    assert res["metadatas"][0][0]["doc_id"] == "bakery.md"


def test_get_and_delete_document(store):
    store.upsert(CORPUS)
    chunks = store.get_document("bakery.md")
    assert [c.id for c in chunks] == [f"bakery.md::{i}" for i in range(len(chunks))]
    assert chunks[0].text.startswith("Our bakery") and chunks[-1].text.endswith("close at noon.")
    assert store.delete_document("bakery.md") == len(chunks)
    assert store.get_document("bakery.md") is None
    assert all(p.doc_id != "bakery.md" for p in store.search("sourdough bread", k=5))
    with pytest.raises(NotFoundError, match="document 'bakery.md' has no current version"):
        store.delete_document("bakery.md")
    assert store.delete_document("bakery.md", purge=True) == len(chunks)
    with pytest.raises(NotFoundError, match="document 'bakery.md' not found in collection 'default' for tenant"):
        store.delete_document("bakery.md")


def test_bad_names_and_queries_are_clear_errors(store):
    with pytest.raises(InvalidRequestError, match="collection name 'ab' must be 3-512 characters"):
        store.upsert(CORPUS[:1], collection="ab")
    with pytest.raises(InvalidRequestError, match="collection name 'bad name!'"):
        store.search("x", collection="bad name!")
    with pytest.raises(InvalidRequestError, match="tenant 'a/b'"):
        store.search("x", tenant="a/b")
    with pytest.raises(NotFoundError, match="collection 'missing' does not exist"):
        store.search("anything", collection="missing")
    with pytest.raises(InvalidRequestError, match="query must not be empty"):
        store.search("  ")
    with pytest.raises(InvalidRequestError, match="k=0"):
        store.search("x", k=0)


def test_example_passages_keep_their_kind_and_keyword_rank_finds_the_year(store):
    docs = [Document(id=f"career-{y}", text=f"In {y} she worked as a researcher at the institute of {place} and "
                     "published papers on quantum gravity and dark matter.") for y, place in
            [(1998, "Munich"), (2004, "Tucson"), (2009, "Stockholm"), (2015, "Frankfurt")]]
    store.upsert([*docs, Document(id="shot", text="Description: a pub.\nJSON: {}", kind="example")])
    assert store.search("a pub in the city", k=5)[0].kind in ("fact", "example")
    assert next(p for p in store.search("a pub", k=5) if p.doc_id == "shot").kind == "example"
    # four near-identical paragraphs: the dense score barely separates them, the year does
    assert store.search("Where did she work as a researcher in 2004?", k=1)[0].doc_id == "career-2004"


def test_a_rare_tenant_is_found_past_the_other_tenants_neighbours(store):
    # The index is asked for unfiltered neighbours first; when none are this tenant's, the filtered
    # search must still find its documents.
    store.upsert([Document(id=f"g{i}", text=f"Globex refund policy, clause {i}: refunds take {i} days.")
                  for i in range(60)], tenant="globex")
    store.upsert([Document(id="a", text="Acme's cafeteria serves soup on Tuesdays.")], tenant="acme")
    found = store.search("how long do refunds take", k=2, tenant="acme")
    assert [p.doc_id for p in found] == ["a"]
    assert all(p.doc_id.startswith("g") for p in store.search("how long do refunds take", k=3, tenant="globex"))
