"""The planner's per-layer activations against what autograd actually saves of a layer's forward.

A layer left un-checkpointed (``memory_budget_gib``) keeps all of it from the forward to its
backward, so this is the term the memory budget rests on. Measured with ``saved_tensors_hooks``
(parameters left out) on CPU (bf16 base, fp32 LoRA, no autocast) and, where CUDA and
bitsandbytes are present, on an NF4 layer under bf16 autocast, the GPU recipe. Imports only the
planner, so ``pytest --noconftest -m gpu`` runs on a bare GPU box.
"""

from __future__ import annotations

import pytest

from trainer.plan import PlanRequest, plan, shape_from_config


def _saved_bytes_per_layer(model, tokens: int, autocast: bool = False) -> list[int]:
    """What autograd saves of each decoder layer's forward (parameters left out), measured."""
    import contextlib

    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    layers = model.base_model.model.model.layers
    current, saved = [None], {}
    for i, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: current.__setitem__(0, i))
        layer.register_forward_hook(lambda m, a, o: current.__setitem__(0, None))

    def pack(t):
        storage = t.untyped_storage()
        if current[0] is not None and storage.data_ptr() not in params:
            saved.setdefault(current[0], {})[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 1000, (1, tokens), generator=torch.Generator().manual_seed(0)).to(model.device)
    bf16 = torch.autocast(ids.device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), bf16:
        model(input_ids=ids, labels=ids, use_cache=False)
    return [sum(saved[i].values()) for i in range(len(layers))]


def _lora_model(base):
    import torch
    from peft import LoraConfig, get_peft_model

    from trainer.config import ALL_PROJECTIONS

    if not getattr(base, "is_quantized", False):  # a 4-bit base is bf16 where it is not 4-bit already
        base = base.to(torch.bfloat16)
    for p in base.parameters():
        p.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=16, target_modules=list(ALL_PROJECTIONS)))
    model.enable_input_require_grads()
    return model.train()


def _planned_kept_per_layer(shape, tokens: int, autocast: bool = False) -> float:
    r = plan(PlanRequest(shape=shape, seq_len=tokens, autocast=autocast, checkpointed_layers=shape.num_layers - 1))
    return r.term("kept_activations").gib * 1024**3


LLAMA = dict(hidden_size=512, num_hidden_layers=3, intermediate_size=1792, num_attention_heads=8,
             num_key_value_heads=2, vocab_size=1000)


def _llama(compiled: bool = False):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.plan import shape_from_dict
    from trainer.train import compile_decoder_layers

    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA)
    base = LlamaForCausalLM(config)
    if compiled:
        compile_decoder_layers(base)
    return _lora_model(base), shape_from_dict(config.to_dict(), name="llama", source="LlamaConfig")


def test_kept_activations_match_what_autograd_saves_for_a_llama_layer():
    """The planner's per-layer activations against the saved tensors of a real forward (bf16 base,
    fp32 LoRA, no autocast: what peft does before the GPU's autocast; the GPU figure is bench work)."""
    model, shape = _llama()
    for tokens in (256, 1024):
        measured = _saved_bytes_per_layer(model, tokens)
        assert _planned_kept_per_layer(shape, tokens) == pytest.approx(measured[1], rel=0.05)


@pytest.mark.slow
def test_compiled_layers_save_less_than_planned():
    """torch.compile's partitioner recomputes cheap ops instead of saving them, so a compiled layer
    (the CUDA default) keeps less than the eager figure the planner uses: the budget errs safe."""
    model, shape = _llama(compiled=True)
    _saved_bytes_per_layer(model, 256)  # compiles
    measured = _saved_bytes_per_layer(model, 256)
    assert 0 < max(measured) < 0.9 * _planned_kept_per_layer(shape, 256)


@pytest.mark.slow
def test_kept_activations_match_what_autograd_saves_for_the_gemma_base(base_model_dir):
    """Gemma 3's four sandwich norms and q/k norms are counted: within 6% of the measured bytes
    (the rest is the CPU's materialised attention mask, which flash kernels do not build)."""
    from transformers import AutoModelForCausalLM

    model = _lora_model(AutoModelForCausalLM.from_pretrained(base_model_dir))
    measured = _saved_bytes_per_layer(model, 512)
    planned = _planned_kept_per_layer(shape_from_config(base_model_dir), 512)
    assert planned == pytest.approx(max(measured), rel=0.06)


def _cuda_with_bitsandbytes() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_with_bitsandbytes(), reason="needs CUDA and bitsandbytes")
def test_kept_activations_match_what_autograd_saves_for_a_4bit_layer_under_autocast(tmp_path):
    """The GPU recipe's case: NF4 base, bf16 autocast (peft then skips its fp32 cast of the LoRA input)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=1024, num_hidden_layers=3, intermediate_size=3584, num_attention_heads=16,
                      num_key_value_heads=4, vocab_size=1000)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(tmp_path)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    base = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=bnb, dtype=torch.bfloat16,
                                                device_map={"": 0})
    model = _lora_model(base)
    measured = _saved_bytes_per_layer(model, 1024, autocast=True)
    assert _planned_kept_per_layer(shape_from_config(tmp_path), 1024, autocast=True) == pytest.approx(
        measured[1], rel=0.10)
