"""Task metric after training: does the adapter produce the format on held-out rows?

For format data (every completion parses as JSON) the saved adapter generates greedily for up to
``limit`` held-out prompts and is scored with the same rules as eval's format suites
(``ragtune.jsonformat``): strict validity, schema validity when the config names a JSON Schema,
field-level F1 and exact match.

The model here is loaded afresh from the base folder and the *saved* adapter, never the training
model: on CPU, generating with a 4-bit training model breaks LoRA gradients (NOTES), and scoring
what was saved is what users will load anyway. Plain transformers + peft ``generate``.
"""

from __future__ import annotations

from pathlib import Path

from ragtune.card import TaskMetrics
from ragtune.jsonformat import Validator, json_scores, parse_strict


def strip_eos(text: str, eos: str | None) -> str:
    return text[: -len(eos)] if eos and text.endswith(eos) else text


def is_json_task(completions: list[str]) -> bool:
    """Format data: every reference completion is a JSON object or array."""
    return bool(completions) and all(parse_strict(c) is not None for c in completions)


def score_json(expected: list[str], generated: list[str], schema: Validator | None = None) -> dict[str, float]:
    """Mean scores of generated texts against expected JSON texts (``ragtune.jsonformat.json_scores``)."""
    per_row = [json_scores(got, parse_strict(want), schema) for want, got in zip(expected, generated, strict=True)]
    names = per_row[0] if per_row else {}
    return {name: sum(r.get(name, 0.0) for r in per_row) / len(per_row) for name in names}


def json_task_metric(
    base_model_dir: Path,
    adapter_dir: Path,
    eval_rows: list[dict[str, str]],
    *,
    limit: int,
    max_new_tokens: int,
    device: str,
    dtype: str = "bfloat16",
    schema: Validator | None = None,
) -> TaskMetrics | None:
    """Generate with base + saved adapter on held-out rows; None when the data is not JSON."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    eos = tokenizer.eos_token
    expected = [strip_eos(r["completion"], eos) for r in eval_rows]
    if limit <= 0 or not is_json_task(expected):
        return None
    rows = eval_rows[:limit]
    expected = expected[:limit]
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=getattr(torch, dtype)).to(device)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    # Long enough for the longest reference plus slack, so a near-miss is not cut into invalid JSON.
    longest = max(len(tokenizer(e, add_special_tokens=False)["input_ids"]) for e in expected)
    new_tokens = min(max_new_tokens, int(longest * 1.5) + 16)
    generated = []
    with torch.inference_mode():
        for row in rows:
            inputs = tokenizer(row["prompt"], return_tensors="pt").to(device)
            out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            generated.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    del model, base
    scores = score_json(expected, generated, schema)
    samples = [{"prompt": r["prompt"], "expected": e, "generated": g}
               for r, e, g in list(zip(rows, expected, generated, strict=True))[:3]]
    return TaskMetrics(kind="json", rows=len(rows), json_valid_rate=scores["json_valid"],
                       exact_match_rate=scores["json_exact"], schema_valid_rate=scores.get("schema_valid"),
                       field_f1=scores.get("field_f1"), samples=samples)
