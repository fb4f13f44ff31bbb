"""Score a suite's outputs with the suite's metric kind (one dict of scores per item)."""

from __future__ import annotations

from eval import metrics
from eval.suites import Item, Suite


def score_outputs(suite: Suite, items: list[Item], outputs: list[str], style=None) -> list[dict[str, float]]:
    kind = suite.spec.metric.kind
    if kind == "qa":
        return [metrics.qa_scores(o, _answers(it.reference)) for it, o in zip(items, outputs)]
    if kind == "json":
        schema = suite.json_schema
        scores = []
        for it, o in zip(items, outputs):
            if not isinstance(it.reference, dict):
                raise ValueError(f"item {it.id}: a 'json' suite needs a JSON object as reference")
            s = metrics.json_scores(o, it.reference, schema)
            if it.name is not None:
                s["name_correct"] = metrics.name_correct(o, it.name)
            scores.append(s)
        return scores
    if kind == "fact":
        return [metrics.fact_scores(o, str(it.reference), it.old or "") for it, o in zip(items, outputs)]
    if kind == "style":
        if style is None:
            raise ValueError("a 'style' suite needs the style classifier")
        from eval.style import content_similarity

        probs = style.target_probability(outputs)
        content = content_similarity(outputs, [str(it.reference) for it in items])
        return [{"style": p, "content": c} for p, c in zip(probs, content)]
    raise ValueError(f"unknown metric kind {kind!r}")  # unreachable: MetricSpec validates it


def _answers(reference) -> list[str]:
    if isinstance(reference, list):
        return [str(a) for a in reference]
    return [str(reference)]
