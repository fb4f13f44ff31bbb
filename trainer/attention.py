"""Padding-free attention through PyTorch's FlashAttention varlen kernel.

A padding-free batch is one long row of several examples with positions restarting per example.
trl's collator also hands the model the example bounds (``cu_seq_lens_q/k``, ``max_length_q/k``),
which is what a varlen kernel needs to keep attention within each example. transformers takes
those only through the ``flash_attn`` packages (not installable everywhere); PyTorch >= 2.10 ships
the same FlashAttention-2 kernel as ``torch.nn.attention.varlen.varlen_attn``. This module
registers it with transformers under :data:`VARLEN`, so ``attn_implementation="ragtune_varlen"``
uses it. Against flex attention (the default for padding-free batches) it needs no block mask per
forward pass and runs the fused flash kernel; it is opt-in (``attention: varlen``) until measured
on a GPU (BENCHMARKS.md, "Built, not yet measured").

Batches without example bounds (one row per pass, a padded batch, generation) take SDPA, as they
would without this module.
"""

from __future__ import annotations

import inspect
from functools import cache

import torch

VARLEN = "ragtune_varlen"
# The kernel and the keyword arguments this torch version's ``varlen_attn`` takes, set by
# :func:`register` outside any compiled region (the forward below only reads it).
_kernel: tuple | None = None


@cache
def _find_kernel() -> tuple | None:
    """torch's ``varlen_attn`` and the keyword arguments this torch version takes, or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.10
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def varlen_supported(*, sliding_window: bool = False, softcap: bool = False) -> bool:
    """Whether this torch has the varlen kernel with what the model's attention needs.

    The kernel runs on CUDA in bf16/fp16; sliding windows need torch's ``window_size`` argument
    (torch >= 2.11), and a logit soft-cap is not offered at all.
    """
    found = _find_kernel()
    if found is None or softcap or not torch.cuda.is_available():
        return False
    return not sliding_window or "window_size" in found[1]


def model_attention_needs(config: dict) -> dict[str, bool]:
    """What of a base model's attention the kernel must support, from its ``config.json``."""
    text = config.get("text_config") or config
    return {"sliding_window": bool(text.get("sliding_window")), "softcap": bool(text.get("attn_logit_softcapping"))}


def implementation(attention: str) -> str:
    """The transformers ``attn_implementation`` for a runtime's attention choice."""
    if attention != "varlen":
        return attention
    register()
    return VARLEN


def register() -> None:
    """Make ``attn_implementation=VARLEN`` known to transformers (idempotent)."""
    global _kernel
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if _kernel is None:
        _kernel = _find_kernel()
    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN, varlen_mask)


def varlen_mask(*args, attention_mask=None, **kwargs):
    """The mask transformers builds for this implementation: none for a padding-free batch (the
    kernel takes the example bounds instead), SDPA's for a padded one (the SDPA fallback uses it)."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                             sliding_window: int | None = None, softcap: float | None = None, **kwargs):
    """transformers' attention-function contract: q/k/v ``[batch, heads, seq, dim]`` in, the output
    ``[batch, seq, heads, dim]`` and no weights out."""
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or query.shape[0] != 1:  # not padding-free: what 'sdpa' would run
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    if dropout:
        raise ValueError("ragtune_varlen attention has no dropout (attention_dropout must be 0 for training)")
    if softcap:
        raise ValueError("ragtune_varlen attention has no logit soft-cap: use attention: flex_attention")
    varlen_attn, params = _kernel
    # [1, heads, tokens, dim] -> [tokens, heads, dim]: the packed layout the kernel takes.
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    options = {"scale": scaling}
    causal = getattr(module, "is_causal", True)
    left = sliding_window - 1 if sliding_window else -1
    if "window_size" in params:
        options["window_size"] = (left, 0 if causal else -1)
    else:
        options["is_causal"] = causal
    if "enable_gqa" in params and q.shape[1] != k.shape[1]:
        options["enable_gqa"] = True
    # trl's collator gives the longest row as a Python int; torch.compile then traces it as a symbolic
    # size (no recompile per length). A tensor (transformers' own derivation) is read once here.
    max_q, max_k = (int(m) if isinstance(m, torch.Tensor) else m
                    for m in (kwargs["max_length_q"], kwargs["max_length_k"]))
    out = varlen_attn(q, k, v, cu_q.to(torch.int32), cu_k.to(torch.int32), max_q, max_k, **options)
    return out.unsqueeze(0), None

