"""Regional torch.compile of the decoder layers: one graph for all layers, the eager numbers, less
recompute.

The GPU speed is measured by bench/train_gpu.py; here the compiled path runs on CPU (inductor's
C++ backend) on a tiny random Llama, with peft's LoRA and non-reentrant checkpointing exactly as
the trainer sets them up.
"""

from __future__ import annotations

import pytest

from tests.trainer.helpers import profiled_step, tiny_lora_llama
from trainer.config import ALL_PROJECTIONS as TARGETS
from trainer.train import compile_decoder_layers

pytestmark = pytest.mark.slow


def _loss_and_grads(compiled: bool, checkpoint_in_graph: bool = False):
    compiled_layers = []

    def compile_layers(model):
        compiled_layers.append(compile_decoder_layers(model, checkpoint_in_graph=checkpoint_in_graph))

    model = tiny_lora_llama(before_lora=compile_layers if compiled else None)
    loss, grads, backward_matmuls = profiled_step(model, warm=compiled)
    return sum(compiled_layers), loss, grads, backward_matmuls


def test_compiled_layers_train_like_eager_ones_in_one_graph():
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    _, eager_loss, eager_grads, eager_matmuls = _loss_and_grads(compiled=False)
    layers, loss, grads, matmuls = _loss_and_grads(compiled=True)
    assert matmuls == eager_matmuls  # the recompute reruns the whole compiled forward

    assert layers == 3
    assert loss == pytest.approx(eager_loss, rel=1e-5)
    assert grads.keys() == eager_grads.keys() and len(grads) == 3 * len(TARGETS) * 2
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # The three layers share one graph: no graph break, no recompile per layer.
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


def test_checkpointing_inside_the_graph_recomputes_less_for_the_same_gradients():
    import torch
    from torch._dynamo.utils import counters

    _, eager_loss, eager_grads, eager_matmuls = _loss_and_grads(compiled=False)
    torch._dynamo.reset()
    counters.clear()
    layers, loss, grads, matmuls = _loss_and_grads(compiled=True, checkpoint_in_graph=True)

    assert loss == pytest.approx(eager_loss, rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]
    # The backward recomputes only what it reads, which leaves out each layer's down projection
    # (its base matmul and its LoRA B matmul).
    assert eager_matmuls - matmuls == 2 * layers
