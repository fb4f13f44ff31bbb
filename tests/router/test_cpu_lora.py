"""The CPU LoRA prefill plugin computes what vLLM's own torch ops compute, one matmul per run.

Checked against vLLM's reference functions (vllm/lora/ops/torch_ops) on random tensors; the
end-to-end check is the parity suite (tests/router/test_backends.py: vLLM + adapter = peft).
"""

from __future__ import annotations

import pytest
import torch

from router.backends import cpu_lora

ref = pytest.importorskip("vllm.lora.ops.torch_ops")

# Three runs of tokens: adapter slot 1 (5 tokens), slot 0 (3 tokens), slot 1 again (4 tokens).
STARTS, LENS, IDX = torch.tensor([0, 5, 8]), torch.tensor([5, 3, 4]), torch.tensor([1, 0, 1])
T, HIDDEN, RANK, OUT, SLOTS = 12, 32, 4, 24, 3


def _args(idx=IDX):
    return STARTS, LENS, idx, len(LENS), int(LENS.max()), T


def test_shrink_matches_vllm():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, HIDDEN, generator=g)
    a = torch.randn(SLOTS, 1, RANK, HIDDEN, generator=g)
    want, got = torch.zeros(T, RANK), torch.zeros(T, RANK)
    ref.sgmv_shrink(x, a, want, *_args(), 0.5)
    cpu_lora.sgmv_shrink(x, a, got, *_args(), 0.5)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("add_inputs", [False, True])
def test_expand_and_expand_slice_match_vllm(add_inputs):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, RANK, generator=g)
    b = torch.randn(SLOTS, 1, OUT, RANK, generator=g)
    start = torch.randn(T, OUT, generator=g)
    want, got = start.clone(), start.clone()
    ref.sgmv_expand(x, b, want, *_args(), add_inputs)
    cpu_lora.sgmv_expand(x, b, got, *_args(), add_inputs)
    torch.testing.assert_close(got, want)
    wide = torch.randn(T, OUT * 2, generator=g)
    want, got = wide.clone(), wide.clone()
    ref.sgmv_expand_slice(x, b, want, *_args(), OUT, OUT, add_inputs)
    cpu_lora.sgmv_expand_slice(x, b, got, *_args(), OUT, OUT, add_inputs)
    torch.testing.assert_close(got, want)


def test_runs_without_an_adapter_get_no_lora():
    """Index -1 (no adapter): vLLM's torch path applied the *last* slot there; the plugin applies none."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, RANK, generator=g)
    b = torch.randn(SLOTS, 1, OUT, RANK, generator=g)  # the last slot is *not* empty here
    idx = torch.tensor([1, -1, 1])
    base = torch.randn(T, OUT, generator=g)
    got, leaky = base.clone(), base.clone()
    cpu_lora.sgmv_expand(x, b, got, *_args(idx), True)
    ref.sgmv_expand(x, b, leaky, *_args(idx), True)
    torch.testing.assert_close(got[5:8], base[5:8])  # untouched: no LoRA for the base tokens
    assert not torch.allclose(leaky[5:8], base[5:8])  # the reference leaked slot -1 into them
    torch.testing.assert_close(got[:5], leaky[:5])
    shrunk = torch.full((T, RANK), 7.0)
    cpu_lora.sgmv_shrink(torch.randn(T, HIDDEN), torch.randn(SLOTS, 1, RANK, HIDDEN), shrunk, *_args(idx), 1.0)
    assert torch.count_nonzero(shrunk[5:8]) == 0


def test_plugin_is_registered_for_vllm():
    from importlib.metadata import entry_points

    names = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert names.get("ragtune_cpu_lora") == "router.backends.cpu_lora:register"
    cpu_lora.register()
    from vllm.lora.punica_wrapper import punica_cpu

    assert punica_cpu.sgmv_shrink is cpu_lora.sgmv_shrink and punica_cpu.sgmv_expand is cpu_lora.sgmv_expand
