"""QLoRA memory and cost planner: peak GPU memory of a training run, from first principles.

The estimate adds up what a QLoRA step actually keeps on the GPU, term by term, for the recipe
ragtune trains with (NF4 + double quant, bf16 compute, LoRA on all seven projections, gradient
checkpointing, paged 8-bit AdamW). Every term is a formula over the model's shape; only two
constants are empirical, and both say which measurement they come from:

* ``FRAGMENTATION`` — the caching allocator's reserved-but-unallocated memory, as a fraction of
  the step's transient activation memory (checkpoints + the larger transient phase). Two sets of
  H200 measurements (Llama-3.1-8B shape, seq 2048, r=16, GC, paged 8-bit AdamW):
  NOTES.md's runs (cache from loading left in place): batch 1 reserved 11.0 vs allocated 9.5 GiB,
  batch 4 27.0 GiB reserved — 0.37 and 0.36 of the modelled transient memory (3.9 / 15.7 GiB);
  ``bench/qlora_peak.py`` (``empty_cache`` before training; torch 2.11, transformers 5.17,
  peft 0.21, bitsandbytes 0.50.2): 8B batch 1 10.22 vs 9.53 GiB (0.17), batch 4 23.88 vs 21.40
  (0.16), with the fp32 upcast 13.52 vs 12.48 (0.21); gemma-3-270m 9.56 vs 7.50 (0.29), upcast
  9.06 vs 8.86 (0.02: its few huge, same-sized logits blocks reuse perfectly). 0.25 sits inside
  that spread. The allocated peaks are reproduced by the formulas alone, within 1% in all six
  bench runs (e.g. 8B batch 1: 9.58 modelled vs 9.53 measured), nothing was tuned to them.
* the throughput model's MFU — ~4,340 tokens/s on that shape at batch 1 and ~6,210 at batch 4
  (same notes) are 20% and 28% of the H200's 989 dense bf16 TFLOPS at 6·N FLOPs per token.

Assumptions (each one changes a term, so they are fields of :class:`PlanRequest`):

* LoRA weights are fp32: peft creates ``lora_A``/``lora_B`` as fp32 ``nn.Linear`` and, for a
  4-bit base layer (uint8 storage), only moves them to its device; ``autocast_adapter_dtype``
  would upcast bf16 adapters anyway. Gradients are fp32 too, and are counted whole (with
  gradient accumulation they live through the next forward; without it this is conservative).
* Without autocast (a plain loop, and what the H200 numbers measured), peft casts each LoRA
  module's input to fp32 before ``lora_A``: one fp32 copy per adapted projection.
* ``upcast_fp32`` models ``peft.prepare_model_for_kbit_training``, which casts every non-4-bit
  parameter (embeddings, LM head, norms) to fp32; the residual stream then runs in fp32 too
  (bitsandbytes casts a 4-bit layer's output back to its input's dtype). trl 1.x's SFTTrainer
  does not call it; ragtune's ``trainer/train.py`` did until 2026-12-02 and now only freezes the
  bf16 base (``freeze_base``), so its recipe is ``upcast_fp32=False``.
* ``loss_impl="full"``: the training loop keeps the model outputs (and so the logits) alive
  through backward, as a plain ``out = model(...); out.loss.backward()`` loop does. The loss is
  transformers' ``ForCausalLMLoss``: ``logits.float()`` then ``cross_entropy`` (log-softmax
  saved, a dense fp32 gradient from ``nll_loss``).
* ``loss_impl="chunked"`` (default; what ragtune's trainer runs): trl >= 1.16's SFTTrainer patches
  the model with a fused LM head (``trl.trainer.utils.add_fused_lm_head``,
  ``trl.kernels.chunked_logprob.ChunkedLogProbFunction``) that scores only labelled positions in
  [4096 × 32768] tiles and never builds the logits; see :func:`_chunked_loss_bytes`. Checked on
  an H200 with ``bench/qlora_peak.py --loop trl`` (``bench/results/qlora_peak_trl``): reserved
  within −11%…+6%, allocated −9%…+3%, with no constant refitted. ragtune's GPU trainer runs
  under bf16 autocast without the fp32 cast (``autocast=True``, ``upcast_fp32=False``), with
  liger-kernel and padding-free batches; ``bench/train_gpu.py`` (Llama-3.1-8B shape, seq 2048,
  batch 1 and 4) measured it 3–10% below these formulas (``bench/results/train_gpu.json``):
  liger's SwiGLU keeps less than the modelled MLP intermediates, nothing was refitted.
* Since the third session of 2026-12-02 the trainer compiles the decoder layers
  (``torch_compile``), asks the allocator for expandable segments, and offloads the checkpointed
  layer inputs at one row per pass (``activation_offloading``, the field of the same name here).
  Measured (``bench/results/train_gpu.json`` calls 10–14): 2,048 × 1 with offloading 6.15 GiB
  allocated / 6.36 reserved (planned 6.28 / 6.45), 2,048 × 4 with offloading 7.91 / 8.39 (planned
  7.92 / 8.50), 2,048 × 4 compiled without it 9.66 / 10.03 (planned 9.92 / 11.00); nothing was
  refitted.
* Attention runs through SDPA's flash kernel (one row per pass) or flex attention (padding-free
  batches; 9.80 GiB at 2,048 × 4 against SDPA's 10.01): no seq² score matrix either way.
* ``checkpointed_layers`` (the trainer's ``memory_budget_gib``): the last layers keep everything
  autograd saves of their forward instead of a checkpointed input. One layer's saved tensors are
  the same sum as the recomputed layer's in the layer phase; checked on CPU against
  ``saved_tensors_hooks`` (a Llama layer −2%, the gemma-3-270m base −4%, bf16 base, fp32 LoRA,
  no autocast). A compiled layer keeps ~30% less (the partitioner recomputes element-wise ops),
  so with ``torch_compile`` the term is an upper bound. Not yet measured on a GPU.
* Paged 8-bit AdamW keeps its two uint8 states in CUDA managed memory (bitsandbytes' paged
  buffers), outside PyTorch's allocator: they count towards the device total, not towards
  ``torch.cuda.max_memory_reserved``; its fp32 block scales (one per 256 values) are ordinary
  tensors.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ragtune.errors import InvalidRequestError

GIB = 1024**3

#: Reserved-minus-allocated memory as a fraction of transient activation memory (see module doc).
FRAGMENTATION = 0.25
#: CUDA context + loaded kernels (torch, bitsandbytes): outside PyTorch's allocator, seen by
#: nvidia-smi. Typical for CUDA 12/13 on Hopper; not measured in this project.
CUDA_CONTEXT_GIB = 0.5
#: Headroom a recommended GPU must leave on top of the estimate.
HEADROOM = 0.10
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ModelShape(BaseModel):
    """The parts of a decoder-only transformer's config that decide its memory."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Preset name or config folder.")
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tied_embeddings: bool = Field(description="LM head shares the embedding matrix (counted once).")
    norms_per_layer: int = Field(
        2, ge=1, description="Hidden-size RMSNorms per layer: 2 in Llama/Qwen/Mistral, 4 in Gemma 2/3 (sandwich norms)."
    )
    qk_norm: bool = Field(False, description="RMSNorm on each head's queries and keys (Gemma 3, Qwen 3).")

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of the seven projections of one layer."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params(self) -> int:
        """Parameters of all quantised linear layers (the seven projections of every layer)."""
        return self.num_layers * sum(a * b for a, b in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        """Embedding plus LM head (once if tied): kept unquantised."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def norm_params(self) -> int:
        # The layers' RMSNorms plus the final one (q/k norms, head_dim each, are a rounding error).
        return (self.norms_per_layer * self.num_layers + 1) * self.hidden_size

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params

    def lora_params(self, rank: int) -> int:
        return self.num_layers * sum(rank * (a + b) for a, b in self.linear_shapes().values())


def _shape(name, h, layers, inter, heads, kv, vocab, tied, head_dim=None, model_type="llama") -> ModelShape:
    return ModelShape(
        name=name, hidden_size=h, num_layers=layers, intermediate_size=inter, num_heads=heads,
        num_kv_heads=kv, head_dim=head_dim or h // heads, vocab_size=vocab, tied_embeddings=tied,
        **_norms_of(model_type),
    )


def _norms_of(model_type: str) -> dict:
    """The norms a family's decoder layer has beyond Llama's two (their activations count)."""
    return {
        "norms_per_layer": 4 if model_type.startswith(("gemma2", "gemma3")) else 2,
        "qk_norm": model_type.startswith(("gemma3", "qwen3")),
    }


#: Published shapes (the models' config.json files), keyed by the size users type.
PRESETS: dict[str, ModelShape] = {
    "270M": _shape("google/gemma-3-270m", 640, 18, 2048, 4, 1, 262144, True, head_dim=256, model_type="gemma3_text"),
    "1B": _shape("meta-llama/Llama-3.2-1B", 2048, 16, 8192, 32, 8, 128256, True, head_dim=64),
    "3B": _shape("meta-llama/Llama-3.2-3B", 3072, 28, 8192, 24, 8, 128256, True, head_dim=128),
    "7B": _shape("meta-llama/Llama-2-7b-hf", 4096, 32, 11008, 32, 32, 32000, False),
    "8B": _shape("meta-llama/Llama-3.1-8B", 4096, 32, 14336, 32, 8, 128256, False),
    "13B": _shape("meta-llama/Llama-2-13b-hf", 5120, 40, 13824, 40, 40, 32000, False),
    "14B": _shape("Qwen/Qwen2.5-14B", 5120, 48, 13824, 40, 8, 152064, False),
    "32B": _shape("Qwen/Qwen2.5-32B", 5120, 64, 27648, 40, 8, 152064, False),
    "33B": _shape("huggyllama/llama-30b (LLaMA-33B)", 6656, 60, 17920, 52, 52, 32000, False),
    "70B": _shape("meta-llama/Llama-3.1-70B", 8192, 80, 28672, 64, 8, 128256, False),
}
ALIASES = {"30B": "33B", "0.27B": "270M"}
ACCEPTED = ", ".join(list(PRESETS) + list(ALIASES))


def parse_params(text: str) -> ModelShape:
    """A size such as ``8B``, ``270M``, ``70b`` or ``8`` (billions) → its preset shape."""
    raw = text.strip().upper().replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([MB]?)", raw)
    if not m:
        raise InvalidRequestError(
            f"--params {text!r} is not a model size; accepted forms: {ACCEPTED} "
            "(or give a model folder with --model-dir)",
            param="params",
        )
    value, unit = float(m.group(1)), m.group(2) or "B"
    key = f"{value:g}{unit}"
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        raise InvalidRequestError(
            f"--params {text!r}: no preset shape of that size; accepted: {ACCEPTED} "
            "(or give a model folder with --model-dir)",
            param="params",
        )
    return PRESETS[key]


_TIED_BY_DEFAULT = ("gemma",)  # families whose config class defaults tie_word_embeddings=True


def shape_from_config(path: str | Path) -> ModelShape:
    """Read a Hugging Face ``config.json`` (or a folder holding one) into a :class:`ModelShape`."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise InvalidRequestError(f"no config.json in {path}", param="model_dir")
    try:
        cfg = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"cannot read {file}: {exc}", param="model_dir") from exc
    return shape_from_dict(cfg, name=str(path), source=str(file))


def shape_from_dict(cfg: dict, *, name: str, source: str) -> ModelShape:
    """A ``config.json`` already read (``source`` names it in errors) as a :class:`ModelShape`."""
    text_cfg = cfg.get("text_config") or cfg  # multimodal configs nest the language model
    if any(k in text_cfg for k in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise InvalidRequestError(f"{source}: mixture-of-experts models are not modelled by the planner",
                                  param="model_dir")
    need = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size")
    missing = [k for k in need if k not in text_cfg]
    if missing:
        raise InvalidRequestError(f"{source} lacks {', '.join(missing)}: not a decoder-only LM config?",
                                  param="model_dir")
    heads = int(text_cfg["num_attention_heads"])
    model_type = str(text_cfg.get("model_type") or cfg.get("model_type") or "")
    tied = cfg.get("tie_word_embeddings", text_cfg.get("tie_word_embeddings"))
    if tied is None:
        tied = model_type.startswith(_TIED_BY_DEFAULT)
    return ModelShape(
        name=name,
        hidden_size=int(text_cfg["hidden_size"]),
        num_layers=int(text_cfg["num_hidden_layers"]),
        intermediate_size=int(text_cfg["intermediate_size"]),
        num_heads=heads,
        num_kv_heads=int(text_cfg.get("num_key_value_heads") or heads),
        head_dim=int(text_cfg.get("head_dim") or text_cfg["hidden_size"] // heads),
        vocab_size=int(text_cfg["vocab_size"]),
        tied_embeddings=bool(tied),
        **_norms_of(model_type),
    )


class GPU(BaseModel):
    name: str
    memory_gib: float = Field(description="Memory as the driver reports it (nvidia-smi total).")
    tflops_bf16: float = Field(description="Dense bf16 tensor TFLOPS (fp16 for the T4, which has no bf16).")
    usd_per_hour: float = Field(description="Typical on-demand cloud price per GPU-hour (2025-26); override it.")


#: Smallest first. Prices are rough public on-demand rates; pass your own.
GPUS: tuple[GPU, ...] = (
    GPU(name="T4 16GB", memory_gib=15.0, tflops_bf16=65, usd_per_hour=0.35),
    GPU(name="L4 24GB", memory_gib=22.5, tflops_bf16=121, usd_per_hour=0.70),
    GPU(name="A10 24GB", memory_gib=22.5, tflops_bf16=125, usd_per_hour=0.75),
    GPU(name="RTX 4090 24GB", memory_gib=24.0, tflops_bf16=165, usd_per_hour=0.45),
    GPU(name="A100 40GB", memory_gib=39.5, tflops_bf16=312, usd_per_hour=1.30),
    GPU(name="L40S 48GB", memory_gib=45.0, tflops_bf16=362, usd_per_hour=1.00),
    GPU(name="RTX A6000 48GB", memory_gib=48.0, tflops_bf16=155, usd_per_hour=0.80),
    GPU(name="A100 80GB", memory_gib=79.2, tflops_bf16=312, usd_per_hour=1.80),
    GPU(name="H100 80GB", memory_gib=79.6, tflops_bf16=989, usd_per_hour=2.50),
    GPU(name="H200 141GB", memory_gib=139.8, tflops_bf16=989, usd_per_hour=3.50),
)


class PlanRequest(BaseModel):
    """One QLoRA training setting to plan for."""

    model_config = ConfigDict(extra="forbid")

    shape: ModelShape
    seq_len: int = Field(2048, gt=0, description="Tokens per sequence (after packing/padding).")
    batch_size: int = Field(1, gt=0, description="Sequences per micro-batch (per GPU).")
    rank: int = Field(16, gt=0, description="LoRA rank, on all seven projections.")
    double_quant: bool = Field(True, description="NF4 double quantisation of the block scales.")
    upcast_fp32: bool = Field(
        False, description="Model peft.prepare_model_for_kbit_training's fp32 cast of embeddings, head and norms."
    )
    autocast: bool = Field(False, description="Training under torch.autocast(bf16) (HF Trainer bf16=True).")
    loss_impl: Literal["chunked", "full"] = Field(
        "chunked",
        description="chunked: trl >= 1.16 SFTTrainer's fused LM head (what ragtune's trainer runs); "
        "full: transformers' loss on the full fp32 logits (a plain loop).",
    )
    activation_offloading: bool = Field(
        False, description="Checkpointed layer inputs kept in pinned host memory (trl's activation offloading; "
        "ragtune's default at one row per pass on CUDA) instead of on the GPU.",
    )
    checkpointed_layers: int | None = Field(
        None, ge=0, description="Layers that recompute their activations in the backward (the first ones); the "
        "rest keep theirs from the forward. None: every layer (ragtune's default).",
    )
    loss_token_fraction: float = Field(
        1.0, gt=0, le=1,
        description="Share of positions with a label (completion-only loss); only the chunked head scores just those.",
    )
    tokens: int | None = Field(None, gt=0, description="Tokens to train on (all epochs); or give steps.")
    steps: int | None = Field(None, gt=0, description="Optimizer steps (× batch × seq tokens) if tokens is unset.")
    mfu: float | None = Field(None, gt=0, le=1, description="Model FLOPs utilisation; default from the H200 runs.")
    gpu_hour_usd: float | None = Field(None, gt=0, description="Price per GPU-hour for the recommended GPU.")
    cuda_context_gib: float = Field(CUDA_CONTEXT_GIB, ge=0)
    fragmentation: float = Field(FRAGMENTATION, ge=0)

    @field_validator("shape", mode="before")
    @classmethod
    def _shape_from_size(cls, v):
        return parse_params(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _layers_within_model(self):
        if self.checkpointed_layers is not None and self.checkpointed_layers > self.shape.num_layers:
            raise ValueError(f"checkpointed_layers={self.checkpointed_layers}: the model has "
                             f"{self.shape.num_layers} layers")
        return self

    @property
    def recomputed_layers(self) -> int:
        return self.shape.num_layers if self.checkpointed_layers is None else self.checkpointed_layers


class PlanTerm(BaseModel):
    key: str
    label: str
    gib: float
    counted: bool = Field(True, description="Part of the total (False: shown for information only).")
    in_torch_reserved: bool = Field(True, description="Lives in PyTorch's caching allocator.")
    note: str = ""


class GPUOption(BaseModel):
    gpu: str
    memory_gib: float
    fits: bool
    tokens_per_s: float
    hours: float | None
    usd: float | None


class PlanResult(BaseModel):
    """Memory terms (GiB), peaks, recommendation and cost for one :class:`PlanRequest`."""

    model: str
    total_params: int
    lora_params: int
    seq_len: int
    batch_size: int
    rank: int
    terms: list[PlanTerm]
    peak_phase: Literal["loss", "layer_backward"]
    peak_allocated_gib: float = Field(description="≈ torch.cuda.max_memory_allocated.")
    peak_reserved_gib: float = Field(description="≈ torch.cuda.max_memory_reserved (allocated + fragmentation).")
    total_gib: float = Field(description="What nvidia-smi would show: reserved + CUDA context + paged optimizer state.")
    recommended_gpu: str | None
    tokens_per_s: float | None = Field(None, description="Estimated on the recommended GPU.")
    train_tokens: int | None = None
    hours: float | None = None
    cost_usd: float | None = None
    gpu_options: list[GPUOption]
    assumptions: list[str]

    def term(self, key: str) -> PlanTerm:
        return next(t for t in self.terms if t.key == key)


def _layer_backward_bytes(s: ModelShape, tokens: int, act: int, autocast: bool) -> tuple[float, float]:
    """(saved, transient) bytes while one layer is back-propagated (after its recompute, if checkpointed).

    ``saved`` is what autograd keeps of one layer's forward: all of it stays on the GPU from the
    forward to the backward for a layer that is not checkpointed. ``act`` is the residual stream's
    bytes per value (2 bf16, 4 when upcast to fp32).
    """
    T, h, i = tokens, s.hidden_size, s.intermediate_size

    def lora_inputs(n: int, width: int) -> float:
        # What the lora_A linears save as their input, for n adapted projections sharing one input.
        if not autocast:
            return n * 4 * T * width if act == 2 else 4 * T * width  # fp32 copy each, or shared fp32
        return 2 * T * width if act == 2 else n * 2 * T * width  # shared bf16, or a bf16 copy each

    def norms(count: int, width: int, rows: int = 1) -> float:
        # RMSNorm's fp32 copy of its input (saved by pow(); none when the stream is fp32 already)
        # and its fp32 rsqrt, one per normalised row (per head for q/k norms).
        return count * ((4 * T * width if act == 2 else 0) + 4 * T * rows)

    qk_norms = norms(1, s.q_dim, s.num_heads) + norms(1, s.kv_dim, s.num_kv_heads) if s.qk_norm else 0
    saved = (
        norms(s.norms_per_layer, h) + qk_norms
        + lora_inputs(3, h)  # q, k, v
        + act * T * (2 * s.q_dim + 2 * s.kv_dim)  # SDPA saves q, k, v (after RoPE) and its output
        + 4 * T * s.num_heads  # SDPA log-sum-exp
        + lora_inputs(1, s.q_dim)  # o_proj
        + lora_inputs(2, h)  # gate, up
        + 3 * act * T * i  # gate out, up out, activation out (saved by the activation and the product)
        + lora_inputs(1, i)  # down_proj
    )
    # Backward transients: the dequantised bf16 weight of the largest projection (bitsandbytes
    # dequantises for grad_input = grad_out @ W), and the gradients of the three MLP intermediates.
    largest = max(a * b for a, b in s.linear_shapes().values())
    transient = 2 * largest + 3 * act * T * i
    return saved, transient


def _loss_bytes(s: ModelShape, tokens: int, head_bytes: int) -> float:
    """Peak bytes of the logits and the loss (the backward of cross-entropy is the high point).

    Alive at once: the logits in the head's dtype (kept by the outputs), the saved fp32
    log-softmax, the dense fp32 gradient from nll_loss and log-softmax's fp32 input gradient.
    With a bf16 head ``logits.float()`` made a copy that is already freed by then; with an fp32
    head it *is* the logits.
    """
    vt = s.vocab_size * tokens
    return vt * (head_bytes + 4 + 4 + 4)


#: trl's fused LM head (trl/kernels/chunked_logprob.py, trl/trainer/utils.py, trl 1.16): tiles of
#: [min(N, TOKEN_CHUNK) tokens, VOCAB_CHUNK vocabulary entries].
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768


def _chunked_loss_bytes(
    s: ModelShape, tokens: int, label_tokens: int, act: int, head_bytes: int, autocast: bool
) -> tuple[float, float]:
    """(peak of the loss phase, what stays held through the layers' backward) for trl's fused LM head.

    trl's ``_fused_forward`` runs the backbone, takes ``last_hidden_state[:, :-1][mask]`` (the N
    positions with a label: a copy, ``act`` bytes a value) and calls ``ChunkedLogProbFunction``,
    which never builds the [N, V] logits:

    * forward: a reusable tile ``mm_buf`` [min(N, 4096), 32768] in the compute dtype (bf16 under
      autocast, else the hidden dtype), the tokens' slice cast to it and each 32768-row slice of
      the head weight cast to it (copies only when the dtypes differ: an fp32 head under autocast),
      seven fp32 per-token accumulators; outputs fp32 log-probs and entropy, a bool ``is_top1``.
    * saved for backward: the N×H hidden copy, the head weight (a parameter, already counted),
      the targets, fp32 ``log_z`` and entropy. Nothing of size V×N.
    * backward (the high point): an fp32 ``grad_hidden`` [N, H] accumulated by addmm, a fresh tile
      (recomputed logits turned into their gradient in place), the same casts, then
      ``grad_hidden.to(hidden.dtype)`` (a copy unless the stream is fp32) while the fp32 one lives.
    * around it: the final norm's input and output (T×H each), as for the full loss.
    """
    T, N, h = tokens, label_tokens, s.hidden_size
    cdt = 2 if autocast else act  # compute dtype of the tiles
    rows = min(N, TRL_TOKEN_CHUNK)
    vchunk = min(s.vocab_size, TRL_VOCAB_CHUNK)
    tile = rows * vchunk * cdt
    hidden_cast = rows * h * cdt if cdt != act else 0
    weight_cast = vchunk * h * cdt if cdt != head_bytes else 0
    per_token = N * (4 + 4 + 4 + 4)  # saved log_z + entropy, grad of log-probs (fp32) and of the loss sum
    saved_hidden = N * h * act
    grad_hidden = N * h * 4 + (N * h * act if act != 4 else 0)
    norm = 2 * act * T * h  # final norm's input and output
    peak = norm + saved_hidden + grad_hidden + tile + hidden_cast + weight_cast + per_token
    held = T * (4 + 4 + 1)  # the scattered log-probs and entropy (fp32) and is_top1 (bool) in the outputs
    return peak, held


def _default_mfu(tokens_per_step: int) -> float:
    """MFU by tokens per micro-batch: 0.20 at 2,048 and 0.28 at 8,192 tokens (H200, 8B, NOTES.md).

    Interpolated in log(tokens) and clamped to [0.10, 0.35]; smaller models and older GPUs
    usually reach less, so treat the cost as an estimate within ~±30%.
    """
    mfu = 0.20 + 0.04 * math.log2(max(tokens_per_step, 1) / 2048)
    return min(max(mfu, 0.10), 0.35)


def flops_per_token(s: ModelShape, seq_len: int, recomputed_layers: int | None = None) -> float:
    """Training FLOPs per token with a frozen 4-bit base and checkpointing.

    Forward 2N, recomputed forward 2N, input gradients 2N (no weight gradients except LoRA's,
    negligible): 6N over the matmul parameters (projections + LM head; trl's chunked head
    recomputes its logits too), plus attention's QKᵀ and PV: 2·2·seq·q_dim per layer per pass
    (causal halves it), times three passes. A layer that is not checkpointed (``recomputed_layers``
    below the layer count) skips its recomputed forward: two passes instead of three.
    """
    recomputed = s.num_layers if recomputed_layers is None else recomputed_layers
    passes = 2 + recomputed / s.num_layers  # per decoder layer, averaged
    layer_matmuls = 2 * s.linear_params + 2 * seq_len * s.q_dim * s.num_layers
    return passes * layer_matmuls + 6 * s.vocab_size * s.hidden_size


def plan(req: PlanRequest, gpus: tuple[GPU, ...] = GPUS) -> PlanResult:
    """Estimate peak memory, a GPU and a cost for one QLoRA setting (see the module doc)."""
    s = req.shape
    T = req.seq_len * req.batch_size
    act = 4 if req.upcast_fp32 else 2  # bytes per value of the residual stream
    head = 4 if req.upcast_fp32 else 2
    lora_n = s.lora_params(req.rank)

    nf4 = s.linear_params * 0.5
    # NF4 block scales, one per 64 weights: fp32 (32 bits/64 = 0.5 bit/param), or with double
    # quant 8-bit scales plus an fp32 scale per 256 of them (8/64 + 32/(64·256) ≈ 0.127 bit/param).
    qconst = s.linear_params * ((8 / 64 + 32 / (64 * 256)) if req.double_quant else 32 / 64) / 8
    emb = s.embedding_params * head
    norms = s.norm_params * (4 if req.upcast_fp32 else 2)
    lora_w = lora_n * 4
    lora_g = lora_n * 4
    opt_scales = 2 * 4 * lora_n / 256  # fp32 absmax per 256-value block, two states
    opt_paged = 2 * lora_n  # two uint8 states, in managed memory
    recomputed = req.recomputed_layers
    kept_layers = s.num_layers - recomputed
    ckpt = recomputed * act * T * s.hidden_size  # each checkpointed layer's input
    if req.loss_impl == "full":
        loss = _loss_bytes(s, T, head) + 2 * act * T * s.hidden_size  # + final norm output and its input
        held_logits = head * s.vocab_size * T  # outputs still referenced during the layers' backward
    else:
        label_tokens = max(1, round(T * req.loss_token_fraction))
        loss, held_logits = _chunked_loss_bytes(s, T, label_tokens, act, head, req.autocast)
    saved, transient = _layer_backward_bytes(s, T, act, req.autocast)
    # Layers left un-checkpointed are the last ones: their saved activations live from the forward
    # through the loss to their own backward, which runs first, so a recomputed layer never has
    # them beside it. The layer phase is then the last layer's backward (nothing recomputed).
    kept = kept_layers * saved
    layer_phase = (0 if kept_layers else saved) + transient + held_logits + act * T * s.hidden_size  # + incoming grad
    peak_phase = "loss" if loss >= layer_phase else "layer_backward"
    transient_peak = kept + max(loss, layer_phase)
    on_gpu_ckpt = 0 if req.activation_offloading else ckpt
    frag = req.fragmentation * (on_gpu_ckpt + transient_peak)
    ctx = req.cuda_context_gib * GIB

    g = lambda b: b / GIB  # noqa: E731
    terms = [
        PlanTerm(key="nf4_weights", label="NF4 weights (7 projections × layers)", gib=g(nf4)),
        PlanTerm(
            key="quant_constants", label="quantisation constants", gib=g(qconst),
            note="double quant ≈0.127 bit/param" if req.double_quant else "fp32 absmax per 64: 0.5 bit/param",
        ),
        PlanTerm(
            key="embeddings", label="embeddings + LM head" + (" (tied)" if s.tied_embeddings else ""),
            gib=g(emb), note="fp32 (prepare_model_for_kbit_training)" if req.upcast_fp32 else "bf16, unquantised",
        ),
        PlanTerm(key="norms", label="norms", gib=g(norms)),
        PlanTerm(key="lora_weights", label=f"LoRA weights r={req.rank} (fp32)", gib=g(lora_w), note=f"{lora_n:,} params"),
        PlanTerm(key="lora_grads", label="LoRA gradients (fp32)", gib=g(lora_g)),
        PlanTerm(key="optimizer_scales", label="8-bit AdamW block scales", gib=g(opt_scales)),
        PlanTerm(
            key="optimizer_paged", label="paged 8-bit AdamW states", gib=g(opt_paged), in_torch_reserved=False,
            note="2 bytes/param in CUDA managed memory",
        ),
        PlanTerm(key="checkpoints", label="checkpointed layer inputs", gib=g(ckpt),
                 counted=not req.activation_offloading,
                 note=f"{recomputed} × seq × batch × hidden"
                 + ("; offloaded to pinned host memory" if req.activation_offloading else "")),
        *([PlanTerm(key="kept_activations", label="activations of the layers not checkpointed", gib=g(kept),
                    note=f"{kept_layers} layer(s) × {g(saved):.3f} GiB, forward to backward")] if kept_layers else []),
        PlanTerm(
            key="loss",
            label="logits + loss (fp32)" if req.loss_impl == "full" else "chunked LM head + loss (trl fused)",
            gib=g(loss), counted=peak_phase == "loss",
            note="peak phase" if peak_phase == "loss" else "below the layer phase",
        ),
        PlanTerm(
            key="layer_backward",
            label="last layer's backward" if kept_layers else "one layer recomputed + backward", gib=g(layer_phase),
            counted=peak_phase == "layer_backward",
            note=("peak phase" if peak_phase == "layer_backward" else "below the loss phase")
            + f"; incl. {g(2 * max(a * b for a, b in s.linear_shapes().values())):.2f} GiB dequantised weight"
            + (", held logits" if req.loss_impl == "full" else ""),
        ),
        PlanTerm(key="fragmentation", label="allocator fragmentation", gib=g(frag), note=f"{req.fragmentation:.2f} × activations"),
        PlanTerm(key="cuda_context", label="CUDA context", gib=g(ctx), in_torch_reserved=False),
    ]
    allocated = sum(t.gib for t in terms if t.counted and t.in_torch_reserved and t.key != "fragmentation")
    reserved = allocated + g(frag)
    total = sum(t.gib for t in terms if t.counted)

    # GPU choice and cost.
    if req.tokens:
        train_tokens = req.tokens
    elif req.steps:
        train_tokens = req.steps * T
    else:
        train_tokens = None
    mfu = req.mfu or _default_mfu(T)
    fpt = flops_per_token(s, req.seq_len, req.checkpointed_layers)
    options: list[GPUOption] = []
    for gpu in gpus:
        tps = gpu.tflops_bf16 * 1e12 * mfu / fpt
        hours = train_tokens / tps / 3600 if train_tokens else None
        options.append(
            GPUOption(
                gpu=gpu.name, memory_gib=gpu.memory_gib, fits=total * (1 + HEADROOM) <= gpu.memory_gib,
                tokens_per_s=tps, hours=hours, usd=hours * gpu.usd_per_hour if hours is not None else None,
            )
        )
    fitting = [o for o in options if o.fits]
    rec = None
    if fitting:
        smallest = min(o.memory_gib for o in fitting)
        tier = [o for o, gpu in zip(options, gpus) if o.fits and o.memory_gib <= smallest + 3]  # one size class
        price = {gpu.name: gpu.usd_per_hour for gpu in gpus}
        rec = min(tier, key=lambda o: price[o.gpu] / o.tokens_per_s)  # cheapest per token in that class
    hours = cost = None
    if rec and rec.hours is not None:
        hours = rec.hours
        cost = hours * (req.gpu_hour_usd or next(gp.usd_per_hour for gp in gpus if gp.name == rec.gpu))

    assumptions = [
        "NF4 + double quant" if req.double_quant else "NF4, single quant",
        "embeddings/head/norms fp32 (prepare_model_for_kbit_training)" if req.upcast_fp32 else "embeddings/head/norms bf16",
        "LoRA weights and grads fp32 (peft on a 4-bit base)",
        ("gradient checkpointing (non-reentrant)" if not kept_layers
         else f"gradient checkpointing of the first {recomputed} of {s.num_layers} layers") + ", SDPA attention"
        + ("; checkpoints offloaded to host memory" if req.activation_offloading else ""),
        "under bf16 autocast" if req.autocast else "no autocast: fp32 copy of each LoRA input",
        "outputs (logits) kept through backward; loss = logits.float() + cross_entropy"
        if req.loss_impl == "full"
        else f"trl fused LM head: [{TRL_TOKEN_CHUNK} × {TRL_VOCAB_CHUNK}] tiles, no full logits; "
        f"{req.loss_token_fraction:.0%} of positions scored",
        f"paged 8-bit AdamW; fragmentation {req.fragmentation:.2f} × activations; CUDA context {req.cuda_context_gib} GiB",
        f"throughput: {fpt / 1e9:.1f} GFLOP/token at MFU {mfu:.2f}; {HEADROOM:.0%} memory headroom",
    ]
    return PlanResult(
        model=s.name, total_params=s.total_params, lora_params=lora_n, seq_len=req.seq_len,
        batch_size=req.batch_size, rank=req.rank, terms=terms, peak_phase=peak_phase,
        peak_allocated_gib=allocated, peak_reserved_gib=reserved, total_gib=total,
        recommended_gpu=rec.gpu if rec else None, tokens_per_s=rec.tokens_per_s if rec else None,
        train_tokens=train_tokens, hours=hours, cost_usd=cost, gpu_options=options, assumptions=assumptions,
    )


def layers_to_checkpoint(req: PlanRequest, budget_gib: float) -> int | None:
    """The fewest checkpointed layers (the first ones) whose planned GPU total stays within ``budget_gib``.

    Every layer left out skips its recomputation in the backward (a third of its matmul work) and
    keeps its activations instead. None when even checkpointing every layer is planned above the
    budget. The total is what the card must hold (:attr:`PlanResult.total_gib`), so a budget of a
    card's memory minus some headroom is what to pass.
    """
    def fits(k: int) -> bool:
        return plan(req.model_copy(update={"checkpointed_layers": k})).total_gib <= budget_gib

    # Not a bisection: keeping the last layer's activations can cost less than checkpointing it
    # (its recompute is the peak when the layer phase is), so the total is not monotonic there.
    return next((k for k in range(req.shape.num_layers + 1) if fits(k)), None)


def plan_for(
    params: str | None = None,
    *,
    model_dir: str | Path | None = None,
    seq_len: int = 2048,
    batch_size: int = 1,
    rank: int = 16,
    **kwargs,
) -> PlanResult:
    """Convenience: plan from a size (``"8B"``) or a model folder; extra kwargs go to PlanRequest."""
    return plan(plan_request(params, model_dir=model_dir, seq_len=seq_len, batch_size=batch_size, rank=rank,
                             **kwargs))


def plan_request(params: str | None = None, *, model_dir: str | Path | None = None, **kwargs) -> PlanRequest:
    """A :class:`PlanRequest` from a size or a model folder; invalid settings are InvalidRequestError."""
    if model_dir is not None:
        shape = shape_from_config(model_dir)
    elif params is not None:
        shape = parse_params(params)
    else:
        raise InvalidRequestError(f"give a model size (one of {ACCEPTED}) or a model folder", param="params")
    try:
        return PlanRequest(shape=shape, **kwargs)
    except ValueError as exc:  # pydantic's ValidationError, named
        raise InvalidRequestError(f"invalid plan setting: {exc}") from exc
