"""Checkpointing only the first layers (``memory_budget_gib``): the same gradients, less recompute.

The planner picks how many layers (tests/trainer/test_plan.py, test_config.py); here a tiny random
Llama with peft's LoRA runs the selection eagerly, compiled with the checkpoint inside the graph,
and through transformers' Trainer, which turns checkpointing on for every layer when it starts.
"""

from __future__ import annotations

import pytest

from tests.trainer.helpers import profiled_step, tiny_lora_llama
from trainer.config import ALL_PROJECTIONS as TARGETS
from trainer.train import CheckpointFirstLayers, checkpoint_first_layers, compile_decoder_layers, decoder_layers

LAYERS = 3


def _model(compiled: bool = False):
    return tiny_lora_llama(LAYERS, before_lora=(lambda m: compile_decoder_layers(m, checkpoint_in_graph=True))
                           if compiled else None)


def _grads_and_backward_matmuls(checkpointed: int, compiled: bool = False):
    model = _model(compiled)
    assert checkpoint_first_layers(model, checkpointed) == LAYERS - checkpointed
    _, grads, matmuls = profiled_step(model, warm=compiled)
    return grads, matmuls


def test_layers_left_out_skip_their_recompute_and_give_the_same_gradients():
    import torch

    grads, all_matmuls = _grads_and_backward_matmuls(LAYERS)
    per_layer_recompute = (all_matmuls - _grads_and_backward_matmuls(0)[1]) / LAYERS
    assert per_layer_recompute > 0
    first, matmuls = _grads_and_backward_matmuls(1)
    assert all_matmuls - matmuls == 2 * per_layer_recompute  # two layers not recomputed
    assert first.keys() == grads.keys() and len(grads) == LAYERS * len(TARGETS) * 2
    for name, grad in first.items():
        torch.testing.assert_close(grad, grads[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_compiled_layers_checkpointed_in_graph_follow_the_selection():
    import torch
    from torch._dynamo.utils import counters

    eager, eager_matmuls = _grads_and_backward_matmuls(1)
    torch._dynamo.reset()
    counters.clear()
    grads, matmuls = _grads_and_backward_matmuls(1, compiled=True)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager[name], rtol=1e-4, atol=1e-6, msg=name)
    # One graph per setting of the layer's flag (checkpointed or not), no graph break.
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"]
    assert matmuls < eager_matmuls  # in-graph checkpointing recomputes less than the eager wrapper


def test_the_selection_survives_the_trainer_turning_checkpointing_on(tmp_path):
    import torch
    from transformers import Trainer, TrainingArguments

    model = _model()
    checkpoint_first_layers(model, 1)
    ids = torch.randint(0, 500, (32,), generator=torch.Generator().manual_seed(1)).tolist()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, use_cpu=True,
                             gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
                             report_to=[], save_strategy="no", disable_tqdm=True)

    def flags(callbacks):
        Trainer(model=model, args=args, train_dataset=[{"input_ids": ids, "labels": ids}] * 2,
                callbacks=callbacks).train()
        return [layer.gradient_checkpointing for layer in decoder_layers(model)]

    assert flags([]) == [True] * LAYERS  # the Trainer re-enables every layer at train()
    assert flags([CheckpointFirstLayers(1)]) == [True] + [False] * (LAYERS - 1)
