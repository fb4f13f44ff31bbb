"""Per-item scores: QA (SQuAD exact match / token F1), JSON format, and staleness of changing facts.

Everything here is pure (strings in, floats out) so it is unit-tested on hand-made cases; the
style score lives in ``eval.style`` because it needs the embedding model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ragtune.jsonformat import json_scores, parse_strict
from ragtune.textnorm import is_abstention, normalize_answer, overlap_f1, strip_citations

__all__ = ["contains_answer", "exact_match", "fact_scores", "json_scores", "name_correct", "normalize_answer",
           "qa_scores", "token_f1"]


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer (max over answers)."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def _f1(prediction: str, answer: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(answer).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    return overlap_f1(same, len(pred_tokens), len(gold_tokens))


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
# The scorer is shared with the trainer's task metric (ragtune.jsonformat); only the eval-only
# ``name`` check lives here.


def name_correct(output: str, name: str) -> float:
    """1.0 if the output parses as an object and its ``name`` field is ``name`` (normalised)."""
    parsed = parse_strict(output)
    if not isinstance(parsed, dict) or "name" not in parsed:
        return 0.0
    return float(normalize_answer(str(parsed["name"])) == normalize_answer(name))


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
    """EM and F1 with SQuAD 2.0's rule for unanswerable items (every gold answer empty).

    Citation markers are dropped first. An unanswerable item scores 1 when the output abstains
    (empty, or says the passages hold no answer: ``ragtune.textnorm.is_abstention``) and 0 otherwise;
    an answerable one scores 0 for an abstention and its usual EM/F1 for anything else.
    """
    text = strip_citations(output)
    gold = [a for a in answers if normalize_answer(a)]
    if not gold:
        score = float(is_abstention(text))
        return {"em": score, "f1": score}
    if is_abstention(text):
        return {"em": 0.0, "f1": 0.0}
    return {"em": exact_match(text, gold), "f1": token_f1(text, gold)}
