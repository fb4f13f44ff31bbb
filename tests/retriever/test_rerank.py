"""Keyword re-ranking of dense candidates (pure logic)."""

from __future__ import annotations

from retriever.rerank import bm25_scores, rerank, words


def test_words_split_years_and_drop_punctuation():
    assert words("From 2004-2005, at U. of Arizona!") == ["from", "2004", "2005", "at", "u", "of", "arizona"]


def test_bm25_rewards_rare_shared_words():
    texts = ["he played for york city in 2004", "he played for leeds in 2009", "he played for hull in 2011"]
    scores = bm25_scores("Which team did he play for in 2004?", texts)
    assert scores[0] > scores[1] and scores[0] > scores[2]
    assert bm25_scores("anything", []) == []
    assert bm25_scores("nothing shared", texts) == [0.0, 0.0, 0.0]


def test_rerank_combines_dense_and_scaled_keyword_scores():
    texts = ["he played for leeds in 2009", "he played for york city in 2004"]
    dense = [0.60, 0.55]
    assert [i for i, _ in rerank("team in 2004", texts, dense, weight=0.0)] == [0, 1]  # dense order
    order = rerank("team in 2004", texts, dense, weight=0.4)
    assert [i for i, _ in order] == [1, 0] and dict(order)[1] == 1.0  # the best keyword score scales to 1
