"""Answer normalisation shared by QA scores and JSON value comparison."""

from __future__ import annotations

import re
import string

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
