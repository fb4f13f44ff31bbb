"""Padding-free batches compute the same loss as padded ones (the speed must not come from
computing something else): trl's collator concatenates the rows, and transformers turns the
restarting position ids into a block-diagonal causal mask."""

from __future__ import annotations

import pytest

from trainer.data import tokenize_dataset


@pytest.fixture(scope="module")
def model(base_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()


def _loss_sum(model, batch):
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


def test_padding_free_batch_has_the_padded_batchs_loss(model, tokenizer):
    padded, flat = collated_rows(tokenizer)
    loss_padded, n_padded = _loss_sum(model, padded)
    loss_flat, n_flat = _loss_sum(model, flat)
    # trl masks each row's first token in the flat batch (no previous token of its own to predict from).
    assert n_flat == n_padded
    assert abs(float(loss_flat) - float(loss_padded)) < 1e-3 * float(loss_padded)
    # Without the block mask (rows attending to earlier rows), the loss is different: the test can fail.
    leaked = {**flat, "position_ids": flat["position_ids"].new_tensor(range(flat["input_ids"].shape[1]))[None]}
    assert abs(float(_loss_sum(model, leaked)[0]) - float(loss_padded)) > 1e-2 * float(loss_padded)
