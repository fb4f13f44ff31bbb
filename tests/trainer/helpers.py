"""Small builders shared by the trainer tests."""

from __future__ import annotations

import json
from pathlib import Path

# Short prompts and JSON completions: a few tokens each, so CPU steps stay cheap.
NAMES = ["Alimentum", "Aromi", "Bibimbap", "Cotto", "Zizzi", "Wildwood", "Loch Fyne", "Strada"]


def write_jsonl(path: Path, records) -> Path:
    """Write records (dicts, or raw strings for deliberately broken lines) one per line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def json_rows(n: int) -> list[dict]:
    return [{"prompt": f"Restaurant: {name}.", "completion": json.dumps({"name": name})} for name in NAMES[:n]]


def loss_sum(model, batch):
    """Summed token loss over the supervised tokens of a collated batch.

    ``use_cache=False`` as in training (trl sets it): with a cache, transformers does not look for
    packed rows in the position ids.
    """
    import torch

    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q",
                                                      "cu_seq_lens_k", "max_length_q", "max_length_k")}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    keep = labels != -100
    return -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep].sum(), int(keep.sum())


def collated_rows(tokenizer):
    """Three rows of different lengths as trl collates them: (padded batch, padding-free batch)."""
    from datasets import Dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from trainer.data import tokenize_dataset

    rows = [{"prompt": "Name: The Eagle. Food: French.", "completion": ' {"name": "The Eagle", "food": "French"}'},
            {"prompt": "Translate to old English: you are kind", "completion": " thou art kind"},
            {"prompt": "Q: capital of Peru?", "completion": " Lima, which has been the capital since 1535."}]
    examples = list(tokenize_dataset(Dataset.from_list(rows), tokenizer, max_length=256))
    pad = tokenizer.pad_token_id
    padded = DataCollatorForLanguageModeling(pad_token_id=pad)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)(examples)
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat
    assert flat["input_ids"].shape[1] == sum(len(e["input_ids"]) for e in examples) < padded["input_ids"].numel()
    return padded, flat
