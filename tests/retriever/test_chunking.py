import pytest
from pydantic import ValidationError

from retriever.chunking import ChunkingConfig, chunk_document, chunk_id, chunk_words


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_windows_overlap_and_cover_every_word():
    cfg = ChunkingConfig(chunk_words=10, chunk_overlap=3)
    chunks = chunk_words(words(25), cfg)
    split = [c.split() for c in chunks]
    assert [len(c) for c in split] == [10, 10, 10, 4]
    for prev, nxt in zip(split, split[1:]):
        assert prev[-3:] == nxt[:3]
    assert split[-1][-1] == "w24"
    assert {w for c in split for w in c} == set(words(25).split())


def test_no_trailing_chunk_that_only_repeats_overlap():
    cfg = ChunkingConfig(chunk_words=10, chunk_overlap=3)
    assert len(chunk_words(words(10), cfg)) == 1
    assert len(chunk_words(words(17), cfg)) == 2  # 0-9, 7-16


def test_short_and_blank_text():
    cfg = ChunkingConfig(chunk_words=10, chunk_overlap=3)
    assert chunk_words("  one\n\ttwo  ", cfg) == ["one two"]
    assert chunk_words("   \n", cfg) == []


def test_stable_ids():
    cfg = ChunkingConfig(chunk_words=5, chunk_overlap=1)
    pairs = chunk_document("docs/a.md", words(12), cfg)
    assert [cid for cid, _ in pairs] == ["docs/a.md::0", "docs/a.md::1", "docs/a.md::2"]
    assert chunk_document("docs/a.md", words(12), cfg) == pairs
    assert chunk_id("x", 7) == "x::7"


def test_overlap_must_be_smaller_than_chunk():
    with pytest.raises(ValidationError, match="chunk_overlap"):
        ChunkingConfig(chunk_words=5, chunk_overlap=5)
