"""The varlen attention path (trainer/attention.py).

On CPU the FlashAttention kernel does not run, so the plumbing (layout, row bounds, causal and
sliding-window arguments, GQA, the SDPA fallback, transformers' mask skipped) is checked with a
per-row SDPA stand-in for the kernel, on the real base model. On CUDA the real kernel is checked
against that stand-in, forward and backward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.trainer.helpers import collated_rows, loss_sum
from trainer import attention


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    """What the varlen kernel computes, one row at a time with SDPA: [tokens, heads, dim] in and out."""
    outs = []
    for i in range(len(cu_q) - 1):
        qs, ks, vs = (t[int(c[i]):int(c[i + 1])].transpose(0, 1) for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        pos = torch.arange(qs.shape[1], device=q.device)
        allowed = torch.ones(qs.shape[1], ks.shape[1], dtype=torch.bool, device=q.device)
        left, right = window_size
        if right >= 0:
            allowed &= pos[None, :] <= pos[:, None] + right
        if left >= 0:
            allowed &= pos[None, :] >= pos[:, None] - left
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=allowed, scale=scale,
                                                   enable_gqa=True).transpose(0, 1))
    return torch.cat(outs)


@pytest.fixture()
def cpu_kernel(monkeypatch):
    monkeypatch.setattr(attention, "_kernel", (reference_varlen, frozenset({"scale", "window_size", "enable_gqa"})))


def _model(base_model_dir, attn: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32,
                                                attn_implementation=attention.implementation(attn)).eval()


@pytest.mark.slow
def test_padding_free_batch_through_varlen_has_the_padded_batchs_loss(base_model_dir, tokenizer, cpu_kernel):
    padded, flat = collated_rows(tokenizer)
    assert {"cu_seq_lens_q", "max_length_q"} <= set(flat)  # trl's collator hands the kernel the row bounds
    sdpa, varlen = _model(base_model_dir, "sdpa"), _model(base_model_dir, "varlen")
    loss_padded, n = loss_sum(sdpa, padded)
    loss_flat, n_flat = loss_sum(varlen, flat)
    assert n_flat == n
    assert abs(float(loss_flat) - float(loss_padded)) < 1e-3 * float(loss_padded)
    # A padded batch (no row bounds) goes through SDPA with transformers' padding mask: the same loss.
    assert abs(float(loss_sum(varlen, padded)[0]) - float(loss_padded)) < 1e-4 * float(loss_padded)
    # Row bounds that join the rows (one row of everything) change the loss: the test can fail.
    total = flat["input_ids"].shape[1]
    joined = {**flat, "cu_seq_lens_q": torch.tensor([0, total], dtype=torch.int32), "max_length_q": total}
    joined["cu_seq_lens_k"], joined["max_length_k"] = joined["cu_seq_lens_q"], total
    assert abs(float(loss_sum(varlen, joined)[0]) - float(loss_padded)) > 1e-2 * float(loss_padded)


class _Attn(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 2  # what transformers' SDPA path reads for GQA: 4 query heads over 2 kv heads


def _packed(device, dtype, lengths=(5, 9, 3), heads=4, kv_heads=2, dim=32):
    g = torch.Generator().manual_seed(0)
    total = sum(lengths)
    q, k, v = (torch.randn(1, h, total, dim, generator=g).to(device, dtype).requires_grad_()
               for h in (heads, kv_heads, kv_heads))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    return q, k, v, {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max(lengths),
                     "max_length_k": max(lengths)}


def test_forward_maps_layout_window_and_gqa_to_the_kernel(cpu_kernel):
    q, k, v, bounds = _packed("cpu", torch.float32)
    out, weights = attention.varlen_attention_forward(_Attn(), q, k, v, None, scaling=0.2, sliding_window=4,
                                                      **bounds)
    assert weights is None and out.shape == (1, q.shape[2], q.shape[1], q.shape[3])
    expected = reference_varlen(*(t[0].transpose(0, 1) for t in (q, k, v)), bounds["cu_seq_lens_q"],
                                bounds["cu_seq_lens_k"], 9, 9, scale=0.2, window_size=(3, 0))
    torch.testing.assert_close(out[0], expected)
    # Without row bounds the call is SDPA's (causal over the one row).
    alone, _ = attention.varlen_attention_forward(_Attn(), q, k, v, None, scaling=0.2)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.2, enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(alone, sdpa)


def test_explicit_varlen_without_the_kernel_is_a_config_error(monkeypatch):
    from ragtune.errors import ConfigError
    from trainer.config import TrainConfig, resolve_runtime

    monkeypatch.setattr(attention, "varlen_supported", lambda **needs: False)
    with pytest.raises(ConfigError, match="attention: varlen needs CUDA"):
        resolve_runtime(TrainConfig(style="s", data="d", attention="varlen", per_device_batch_size=4), cuda=True)
    monkeypatch.setattr(attention, "varlen_supported", lambda **needs: not needs.get("softcap"))
    asked = TrainConfig(style="s", data="d", attention="varlen", per_device_batch_size=4)
    assert resolve_runtime(asked, cuda=True).attention == "varlen"
    with pytest.raises(ConfigError, match="soft-capping"):
        resolve_runtime(asked, cuda=True, attention_needs={"softcap": True})
    # 'auto' stays on flex attention until the varlen kernel is measured on a GPU.
    assert resolve_runtime(TrainConfig(style="s", data="d", per_device_batch_size=4), cuda=True).attention \
        == "flex_attention"


def test_model_attention_needs_reads_config_json():
    assert attention.model_attention_needs({"sliding_window": 512}) == {"sliding_window": True, "softcap": False}
    nested = {"text_config": {"sliding_window": None, "attn_logit_softcapping": 50.0}}
    assert attention.model_attention_needs(nested) == {"sliding_window": False, "softcap": True}


@pytest.mark.gpu
@pytest.mark.skipif(not attention.varlen_supported(), reason="needs CUDA and torch >= 2.10")
@pytest.mark.parametrize("window", [None, 4])
def test_cuda_kernel_matches_per_row_attention_forward_and_backward(window):
    if window and not attention.varlen_supported(sliding_window=True):
        pytest.skip("this torch's varlen kernel has no sliding window")
    attention.register()
    q, k, v, bounds = _packed("cuda", torch.bfloat16, lengths=(70, 130, 33), heads=4, kv_heads=2, dim=128)
    out, _ = attention.varlen_attention_forward(_Attn(), q, k, v, None, scaling=128**-0.5, sliding_window=window,
                                                **bounds)
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    left = window - 1 if window else -1
    ref_in = [t.detach().float()[0].transpose(0, 1).requires_grad_() for t in (q, k, v)]
    ref = reference_varlen(*ref_in, bounds["cu_seq_lens_q"], bounds["cu_seq_lens_k"], 130, 130,
                           scale=128**-0.5, window_size=(left, 0))
    ref_grads = torch.autograd.grad(ref.square().sum(), ref_in)
    torch.testing.assert_close(out[0].float(), ref, atol=2e-2, rtol=2e-2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got[0].transpose(0, 1).float(), want, atol=5e-2, rtol=5e-2)


@torch.library.custom_op("ragtune_test::varlen_reference", mutates_args=())
def _reference_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                  max_q: int, max_k: int, left: int, right: int) -> torch.Tensor:
    return reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(left, right))


@_reference_op.register_fake
def _(q, k, v, cu_q, cu_k, max_q, max_k, left, right):
    return torch.empty_like(q)


def _opaque_kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    """The stand-in as one opaque op, as torch.compile sees the real kernel."""
    return _reference_op(q, k, v, cu_q, cu_k, max_q, max_k, *window_size)


@pytest.mark.slow
def test_compiled_layers_trace_varlen_without_breaks_or_a_recompile_per_length(monkeypatch):
    from torch._dynamo.utils import counters
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.train import compile_decoder_layers

    monkeypatch.setattr(attention, "_kernel", (_opaque_kernel, frozenset({"scale", "window_size", "enable_gqa"})))
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=300, attn_implementation=attention.implementation("varlen"))
    model = LlamaForCausalLM(config).eval()
    torch._dynamo.reset()
    counters.clear()
    compile_decoder_layers(model)
    for lengths in ((5, 9, 3), (12, 4, 7), (6, 6, 15), (2, 11, 8)):  # a new longest row and total each time
        total = sum(lengths)
        ids = torch.randint(0, 300, (1, total), generator=torch.Generator().manual_seed(total))
        positions = torch.cat([torch.arange(n) for n in lengths])[None]
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        with torch.no_grad():
            packed = model(input_ids=ids, position_ids=positions, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                           max_length_q=max(lengths), max_length_k=max(lengths), use_cache=False).logits
            rows = [model(input_ids=part, use_cache=False).logits for part in ids.split(list(lengths), dim=1)]
        torch.testing.assert_close(packed, torch.cat(rows, dim=1), rtol=1e-4, atol=1e-4)
    assert not counters["graph_break"]
    # Packed calls: one graph, and one more once the longest row changes (then traced as a symbol,
    # not recompiled per length); one-row calls (no row bounds): their own graph.
    assert counters["stats"]["unique_graphs"] == 3
