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


def tiny_lora_llama(layers: int = 3, before_lora=None):
    """A tiny random Llama as the trainer sets one up: frozen, non-reentrant checkpointing on, LoRA on
    all seven projections (``init_lora_weights=False``: B is random too, so every LoRA weight gets a
    non-trivial gradient). ``before_lora(model)`` runs before peft wraps it (e.g. compiling the layers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.config import ALL_PROJECTIONS

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=layers, intermediate_size=128,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=500))
    for p in model.parameters():
        p.requires_grad_(False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if before_lora is not None:
        before_lora(model)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=ALL_PROJECTIONS,
                                            init_lora_weights=False))


def profiled_step(model, warm: bool = False):
    """(loss, LoRA gradients, matmuls run by the backward) of one training step on a fixed batch.
    ``warm``: one step first (a compiled model compiles there, outside the profile)."""
    import torch

    model.train()
    ids = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(1))
    if warm:
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss.backward()
    matmuls = sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm"))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads, matmuls
