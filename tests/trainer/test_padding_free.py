"""Padding-free batches compute the same loss as padded ones (the speed must not come from
computing something else): trl's collator concatenates the rows, and transformers turns the
restarting position ids into a block-diagonal causal mask."""

from __future__ import annotations

import pytest

from tests.trainer.helpers import collated_rows, loss_sum


@pytest.fixture(scope="module")
def model(base_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()


def test_padding_free_batch_has_the_padded_batchs_loss(model, tokenizer):
    padded, flat = collated_rows(tokenizer)
    loss_padded, n_padded = loss_sum(model, padded)
    loss_flat, n_flat = loss_sum(model, flat)
    # trl masks each row's first token in the flat batch (no previous token of its own to predict from).
    assert n_flat == n_padded
    assert abs(float(loss_flat) - float(loss_padded)) < 1e-3 * float(loss_padded)
    # Without the block mask (rows attending to earlier rows), the loss is different: the test can fail.
    leaked = {**flat, "position_ids": flat["position_ids"].new_tensor(range(flat["input_ids"].shape[1]))[None]}
    assert abs(float(loss_sum(model, leaked)[0]) - float(loss_padded)) > 1e-2 * float(loss_padded)
