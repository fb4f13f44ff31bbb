"""Answer normalisation shared by QA scores and JSON value comparison."""

from __future__ import annotations

import re
import string

# What a grounded reader says when the passages do not hold the answer. The reader adapter is
# trained to write exactly this; the QA metric counts it (and the phrases below) as abstaining.
NO_ANSWER = "not in the passages"
_ABSTAIN_EXACT = frozenset({"no answer", "unanswerable", "unknown", "none", "not known", "cannot be determined",
                            "not mentioned", "not stated", "not given", "i do not know", "i dont know"})
_CITATION = re.compile(r"\[\d+\]")

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop punctuation and articles, squeeze whitespace.

    Why SQuAD's exact rule: TimeQA text is whitespace-tokenised ('University of Arizona , Tucson'),
    so a fair comparison must ignore punctuation spacing, and this is the rule the field reports.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def overlap_f1(same: int, n_pred: int, n_gold: int) -> float:
    """F1 of ``same`` shared items between a prediction of ``n_pred`` and a gold of ``n_gold``.

    SQuAD's convention for empties: both empty is a match (1.0), one empty a miss (0.0).
    """
    if n_pred == 0 or n_gold == 0:
        return float(n_pred == n_gold)
    if same == 0:
        return 0.0
    precision, recall = same / n_pred, same / n_gold
    return 2 * precision * recall / (precision + recall)


def strip_citations(text: str) -> str:
    """Drop citation markers ("Tucson [2]" -> "Tucson") so they do not count as answer tokens."""
    return " ".join(_CITATION.sub(" ", text).split())


def is_abstention(text: str) -> bool:
    """Empty (SQuAD 2.0's no-answer), the reader's NO_ANSWER, or a common way of saying 'no answer'."""
    norm = normalize_answer(strip_citations(text))
    return not norm or norm.startswith(normalize_answer(NO_ANSWER)) or norm in _ABSTAIN_EXACT
