"""Task metric after training: does the adapter produce the format on held-out rows?

For format data (every completion parses as JSON) the saved adapter generates greedily for up to
``limit`` held-out prompts and is scored on JSON validity and exact match of the parsed JSON.

The model here is loaded afresh from the base folder and the *saved* adapter, never the training
model: on CPU, generating with a 4-bit training model breaks LoRA gradients (NOTES), and scoring
what was saved is what users will load anyway. Plain transformers + peft ``generate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragtune.card import TaskMetrics


def strip_eos(text: str, eos: str | None) -> str:
    return text[: -len(eos)] if eos and text.endswith(eos) else text


def parse_json(text: str) -> tuple[bool, Any]:
    """(valid, value) for a completion; only a JSON object or array counts as the format."""
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return False, None
    return isinstance(value, (dict, list)), value


def is_json_task(completions: list[str]) -> bool:
    """Format data: every reference completion is a JSON object or array."""
    return bool(completions) and all(parse_json(c)[0] for c in completions)


def score_json(expected: list[str], generated: list[str]) -> tuple[float, float]:
    """(valid rate, exact-match rate) of generated texts against expected JSON texts."""
    valid = exact = 0
    for want, got in zip(expected, generated, strict=True):
        ok, value = parse_json(got)
        valid += ok
        exact += ok and value == parse_json(want)[1]
    n = len(expected) or 1
    return valid / n, exact / n


def json_task_metric(
    base_model_dir: Path,
    adapter_dir: Path,
    eval_rows: list[dict[str, str]],
    *,
    limit: int,
    max_new_tokens: int,
    device: str,
    dtype: str = "bfloat16",
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
    valid, exact = score_json(expected, generated)
    samples = [{"prompt": r["prompt"], "expected": e, "generated": g}
               for r, e, g in list(zip(rows, expected, generated, strict=True))[:3]]
    return TaskMetrics(kind="json", rows=len(rows), json_valid_rate=valid, exact_match_rate=exact, samples=samples)
