"""Keyword re-ranking of dense candidates (hybrid retrieval).

Dense embeddings find the right page but blur what tells its paragraphs apart: a year, a number,
a rare name ("Which team did X play for in 2004?" over ten paragraphs about X). Chroma's query
returns a few times more candidates than asked; BM25 over those candidates, with its IDF taken
from them, rewards the paragraph that shares the question's distinguishing words. The final
order is ``cosine + weight * bm25 / max(bm25)``; the cosine score is still what is reported
and what ``retrieval: auto`` compares with its threshold.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# BM25's usual constants; the document length is normalised to the candidates' mean.
K1, B = 1.2, 0.75


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits ('2004-2005' -> '2004', '2005')."""
    return _WORD.findall(text.lower())


def bm25_scores(query: str, texts: Sequence[str]) -> list[float]:
    """BM25 of ``query`` against each text, with document frequencies counted over ``texts`` alone."""
    docs = [Counter(words(t)) for t in texts]
    if not docs:
        return []
    n = len(docs)
    mean_len = sum(sum(d.values()) for d in docs) / n or 1.0
    df = Counter(w for d in docs for w in d)
    terms = set(words(query))
    scores = []
    for d in docs:
        length = sum(d.values())
        score = 0.0
        for w in terms:
            tf = d.get(w, 0)
            if tf:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / mean_len))
        scores.append(score)
    return scores


def rerank(query: str, texts: Sequence[str], dense: Sequence[float], weight: float) -> list[tuple[int, float]]:
    """Candidate indices, best first, with each one's keyword score scaled to [0, 1]."""
    keyword = bm25_scores(query, texts) if weight > 0 else [0.0] * len(texts)
    top = max(keyword, default=0.0) or 1.0
    scaled = [s / top for s in keyword]
    order = sorted(range(len(texts)), key=lambda i: -(dense[i] + weight * scaled[i]))
    return [(i, scaled[i]) for i in order]
