"""Per-item scores: QA (SQuAD exact match / token F1), JSON format, and staleness of changing facts.

Everything here is pure (strings in, floats out) so it is unit-tested on hand-made cases; the
style score lives in ``eval.style`` because it needs the embedding model.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

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


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer (max over answers)."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def _f1(prediction: str, answer: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(answer).split()
    if not pred_tokens or not gold_tokens:
        # SQuAD convention: both empty counts as a match, one empty as a miss.
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD token-overlap F1, the max over all gold answers."""
    return max((_f1(prediction, a) for a in answers), default=0.0)


def contains_answer(prediction: str, answer: str) -> bool:
    """Whether the normalised answer occurs in the normalised prediction as a whole-word span."""
    gold = normalize_answer(answer)
    if not gold:
        return False
    return f" {gold} " in f" {normalize_answer(prediction)} "


# --- JSON format ----------------------------------------------------------------------------


def parse_json_object(output: str) -> dict[str, Any] | None:
    """The output parsed as a JSON object, or None.

    Strict on purpose: the *whole* stripped output must be one JSON object. A model that wraps
    the JSON in prose has not learned the format, and a caller's ``json.loads`` would fail too.
    """
    try:
        value = json.loads(output.strip())
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _norm_value(value: Any) -> str:
    # Values are compared as normalised strings so that "5 out of 5" and "5 Out of 5." agree
    # and a number written as 5 or "5" agrees too; structure inside values is not expected here.
    if isinstance(value, str):
        return normalize_answer(value)
    return normalize_answer(json.dumps(value, sort_keys=True, ensure_ascii=False))


def field_pairs(obj: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(str(k).strip(), _norm_value(v)) for k, v in obj.items()}


def json_scores(output: str, gold: Mapping[str, Any]) -> dict[str, float]:
    """validity, key-set match, field-level F1 over (key, normalised value) pairs, exact match.

    An output that does not parse scores 0 on everything (it cannot be used by a program).
    """
    parsed = parse_json_object(output)
    if parsed is None:
        return {"json_valid": 0.0, "key_match": 0.0, "field_f1": 0.0, "json_exact": 0.0}
    pred_pairs = field_pairs(parsed)
    gold_pairs = field_pairs(gold)
    same = len(pred_pairs & gold_pairs)
    if not pred_pairs and not gold_pairs:
        f1 = 1.0
    elif same == 0:
        f1 = 0.0
    else:
        precision = same / len(pred_pairs)
        recall = same / len(gold_pairs)
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "json_valid": 1.0,
        "key_match": float({str(k).strip() for k in parsed} == {str(k).strip() for k in gold}),
        "field_f1": f1,
        "json_exact": float(pred_pairs == gold_pairs),
    }


def name_correct(output: str, name: str) -> float:
    """1.0 if the output parses and its ``name`` field is ``name`` (normalised)."""
    parsed = parse_json_object(output)
    if parsed is None or "name" not in parsed:
        return 0.0
    return float(_norm_value(parsed["name"]) == normalize_answer(name))


# --- Changing facts ---------------------------------------------------------------------------


def fact_scores(output: str, new_value: str, old_value: str) -> dict[str, float]:
    """``current``: the answer states the new value; ``stale``: it states the old one and not the new.

    Containment rather than exact match: a base model answers in a sentence ("The CEO is Mara
    Ilves."), and what matters for freshness is which value it asserts.
    """
    has_new = contains_answer(output, new_value)
    has_old = contains_answer(output, old_value)
    return {"current": float(has_new), "stale": float(has_old and not has_new)}


def qa_scores(output: str, answers: Sequence[str]) -> dict[str, float]:
    return {"em": exact_match(output, answers), "f1": token_f1(output, answers)}
