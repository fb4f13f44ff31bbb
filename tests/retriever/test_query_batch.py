"""Concurrent searches share one embedding call; each gets its own query's vector."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from retriever.query_batch import QueryBatcher

pytestmark = pytest.mark.slow


def test_concurrent_queries_are_embedded_together_and_each_gets_its_own():
    from retriever.embeddings import embed_texts

    questions = [f"Who chaired the council in year {1900 + i}?" for i in range(16)]
    alone = {q: np.asarray(embed_texts([q])[0]) for q in questions}
    calls = []

    def embed(texts):
        calls.append(len(texts))
        return embed_texts(list(texts))

    batcher = QueryBatcher(embed, window_s=0.02)
    start = threading.Barrier(len(questions))

    def one(q):
        start.wait()
        return q, np.asarray(batcher(q))

    with ThreadPoolExecutor(len(questions)) as pool:
        got = dict(pool.map(one, questions))
    assert sum(calls) == 16 and len(calls) < 16 and max(calls) > 1  # batched, nothing lost or repeated
    for q in questions:
        assert np.allclose(got[q], alone[q], atol=1e-5)  # its own vector, not a neighbour's


def test_an_embedding_error_reaches_every_caller_of_the_batch():
    state = {"broken": True}

    def flaky(texts):
        if state["broken"]:
            raise RuntimeError("model gone")
        return [np.zeros(2)] * len(texts)

    batcher = QueryBatcher(flaky, window_s=0.02)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher, f"q{i}") for i in range(4)]
    for f in futures:
        with pytest.raises(RuntimeError, match="model gone"):
            f.result()
    state["broken"] = False
    assert batcher("alone").shape == (2,)  # and the batcher serves again afterwards
