"""What the user asks for when training an adapter (one YAML recipe, CLI flags override it).

Defaults are the QLoRA recipe of DESIGN.md: NF4 + double quant + bf16 compute, paged 8-bit
AdamW, gradient checkpointing, LoRA r=16/alpha=16/dropout 0 on all seven linear projections.
Device-dependent choices (``quantization: auto``, the optimizer on CPU) are resolved at run time
by :func:`resolve_runtime` and recorded in the card, so the config stays what the user wrote.
A recipe may build on another with ``extends: other.yaml`` (its own fields win).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragtune.errors import ConfigError
from ragtune.settings import Settings

if TYPE_CHECKING:
    from trainer.plan import ModelShape

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
STYLE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Optimizers that need bitsandbytes' CUDA kernels; on CPU they fall back to adamw_torch.
CUDA_ONLY_OPTIMIZERS = {"paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit", "adamw_bnb_8bit", "paged_lion_8bit"}


class TrainConfig(BaseModel):
    """One adapter training run. Every field is also a YAML key; CLI flags override YAML."""

    model_config = ConfigDict(extra="forbid")

    style: str = Field(description="Adapter name; the adapter is published as ADAPTERS_DIR/STYLE.")
    data: Path = Field(description="Training file: chat JSONL (messages), prompt/completion JSONL or Alpaca.")

    # --- Quantization and precision
    quantization: Literal["auto", "nf4", "none"] = Field(
        default="auto",
        description="'auto': NF4 4-bit on CUDA, bf16 LoRA on CPU (on CPU, evaluating a 4-bit model before or "
        "while training silently breaks LoRA gradients, and eval loss runs during training). 'nf4' forces "
        "QLoRA, 'none' forces a bf16 base.",
    )
    double_quant: bool = Field(default=True, description="Quantize the NF4 scales too (saves ~0.4 bit/param).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Dtype of the base weights (and of NF4 compute)."
    )
    optimizer: str = Field(
        default="paged_adamw_8bit",
        description="transformers `optim` name. 8-bit/paged optimizers need CUDA: on CPU adamw_torch is used "
        "and the fallback is recorded in the card.",
    )
    gradient_checkpointing: bool = Field(
        default=True, description="Recompute activations in backward: less memory, ~30% slower."
    )
    liger_kernels: bool | None = Field(
        default=None, description="liger-kernel's Triton RMSNorm, SwiGLU and RoPE (the `gpu` extra brings it). "
        "Unset: on with CUDA for the model families whose loss was checked against the plain recipe (Llama), "
        "when liger-kernel is installed; always off on CPU (Triton needs a GPU).",
    )
    padding_free: bool | None = Field(
        default=None, description="Concatenate each batch's rows into one sequence (positions restart per row, "
        "attention stays within a row) instead of padding them to the longest: no compute or memory on padding, "
        "the same rows per step. Unset: on with CUDA when a forward pass holds more than one row, off on CPU.",
    )
    activation_offloading: bool | None = Field(
        default=None, description="CUDA only: keep checkpointed activations in pinned CPU memory (trl's "
        "activation offloading): less GPU memory for a little speed (measured on an 8B at 2,048 tokens: "
        "-0.5 GiB and -7% tokens/s at one row per pass, -1.6 GiB and -3% at four). Unset: on with CUDA when "
        "a forward pass holds one row (the setting for the smallest card), off otherwise.",
    )
    torch_compile: bool | None = Field(
        default=None, description="CUDA only: compile each decoder layer, LoRA included, with torch.compile "
        "(one graph shared by all layers, compiled at the first step): fused norms, activations and LoRA "
        "sums, and one launch plan per layer instead of a hundred Python-dispatched ops (measured +44% "
        "tokens/s at one row of 2,048, +11% at four). Unset: on with CUDA where Triton and a C compiler are "
        "present; off on CPU.",
    )
    checkpoint_in_graph: bool = Field(
        default=False, description="CUDA, with torch_compile: checkpoint inside each compiled layer's graph "
        "instead of around the layer call, so the backward recomputes only what it reads (not the down "
        "projection's matmuls: ~27% of a Llama layer's recomputed FLOPs; checked on CPU). Off until measured "
        "on a GPU.",
    )
    memory_budget_gib: float | None = Field(
        default=None, gt=0, description="CUDA: GPU memory (GiB, the card's total as nvidia-smi counts it) the run "
        "may fill to go faster. The planner (`ragtune plan`) picks the fewest layers to checkpoint within it; the "
        "others keep their activations from the forward instead of recomputing them in the backward (a third of "
        "their matmul work), so short rows and roomy cards train faster. Unset: every layer is checkpointed (the "
        "least memory). Not yet measured on a GPU.",
    )
    attention: Literal["auto", "sdpa", "varlen", "flex_attention", "eager"] = Field(
        default="auto", description="Attention implementation. 'auto': flex_attention for padding-free batches "
        "on CUDA (its block mask skips the attention between rows, which SDPA computes and masks away: 4 rows "
        "of 2,048 cost 4x the attention of one; measured +51% tokens/s), sdpa otherwise. 'varlen': PyTorch's "
        "FlashAttention varlen kernel, which takes the rows' bounds in a padding-free batch instead of a mask "
        "(CUDA, bf16/fp16, torch >= 2.10; not yet measured on a GPU); other batches go through SDPA.",
    )

    # --- LoRA
    lora_r: int = Field(default=16, description="LoRA rank. Raise to 32/64 when the loss plateaus high.")
    lora_alpha: int = Field(default=16, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(default=0.0, description="Dropout on the LoRA input; 0 is the fast, usual choice.")
    lora_bias: Literal["none", "all", "lora_only"] = Field(default="none", description="Which biases to train.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(ALL_PROJECTIONS),
        description="Linear layers that get LoRA. All seven (attention + MLP) learn formats and voices best.",
    )

    # --- Schedule
    seed: int = Field(default=3407, description="Seed for the split, LoRA init and data order.")
    max_seq_length: int = Field(default=2048, description="Tokens per example (prompt + completion); longer is cut.")
    epochs: float = Field(default=2.0, description="Passes over the training split; 1-3 is the useful range.")
    max_steps: int | None = Field(default=None, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(default=2e-4, description="Peak learning rate.")
    lr_scheduler: str = Field(default="linear", description="transformers scheduler name (linear, cosine, constant).")
    warmup_ratio: float = Field(default=0.03, description="Share of the steps spent warming up the learning rate.")
    per_device_batch_size: int = Field(default=2, description="Examples per device per forward pass.")
    gradient_accumulation_steps: int = Field(default=4, description="Forward passes per optimizer step.")
    max_grad_norm: float = Field(default=1.0, description="Gradient clipping norm (0 disables).")

    # --- Held-out split, logging, checkpoints
    eval_fraction: float = Field(
        default=0.1, description="Share of examples held out for eval loss and the task metric (at least 1)."
    )
    eval_steps: int = Field(default=50, description="Evaluate (and checkpoint) every N optimizer steps.")
    logging_steps: int = Field(default=10, description="Log the training loss every N optimizer steps.")
    save_total_limit: int = Field(default=2, description="Checkpoints kept in the work dir (the best is always kept).")
    early_stopping_patience: int | None = Field(
        default=3, description="Stop after N evals without eval-loss improvement; the best checkpoint is restored."
    )

    # --- After training
    task_eval_limit: int = Field(default=50, description="Held-out rows generated for the task metric (0 skips it).")
    task_max_new_tokens: int = Field(default=256, description="Generation cap for the task metric.")
    json_schema: Path | None = Field(
        default=None, description="JSON Schema the completions follow (format data): the task metric also reports "
        "schema validity, and training refuses rows whose completion breaks it.",
    )

    save_dtype: Literal["bfloat16", "float32"] = Field(
        default="bfloat16",
        description="Dtype of the published adapter weights. The engines serve LoRA in the compute dtype, so "
        "bf16 halves the file (7.6 vs 15 MB at r=16 on gemma-3-270m) and changes no served token.",
    )

    # --- Cost and output
    gpu_hour_usd: float = Field(default=3.5, description="Price of one GPU hour (default: an H200 on demand).")
    cpu_hour_usd: float = Field(default=0.0, description="Price of one machine hour when training on CPU.")
    output_dir: Path | None = Field(
        default=None, description="Publish the adapter here instead of ADAPTERS_DIR/STYLE."
    )
    resume: bool = Field(default=False, description="Continue from the last checkpoint of an interrupted run.")

    @field_validator("style")
    @classmethod
    def _style_is_a_name(cls, v: str) -> str:
        if not STYLE_PATTERN.match(v):
            raise ValueError(
                f"style {v!r} must be 1-64 letters, digits, '.', '_' or '-' and start with a letter or digit"
            )
        return v

    @field_validator("lora_r", "lora_alpha", "per_device_batch_size", "gradient_accumulation_steps",
                     "eval_steps", "logging_steps", "max_seq_length", "save_total_limit", "task_max_new_tokens")
    @classmethod
    def _positive_int(cls, v: int, info) -> int:
        if v < 1:
            raise ValueError(f"{info.field_name} must be >= 1 (got {v})")
        return v

    @field_validator("epochs", "learning_rate")
    @classmethod
    def _positive(cls, v: float, info) -> float:
        if not v > 0:
            raise ValueError(f"{info.field_name} must be > 0 (got {v})")
        return v

    @field_validator("max_steps", "early_stopping_patience")
    @classmethod
    def _positive_or_none(cls, v: int | None, info) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be >= 1 or unset (got {v})")
        return v

    @field_validator("lora_dropout", "warmup_ratio")
    @classmethod
    def _fraction(cls, v: float, info) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"{info.field_name} must be in [0, 1) (got {v})")
        return v

    @field_validator("eval_fraction")
    @classmethod
    def _eval_fraction(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError(f"eval_fraction must be in (0, 1) (got {v}); at least one example is always held out")
        return v

    @field_validator("task_eval_limit", "max_grad_norm", "gpu_hour_usd", "cpu_hour_usd")
    @classmethod
    def _non_negative(cls, v: float, info) -> float:
        if v < 0:
            raise ValueError(f"{info.field_name} must be >= 0 (got {v})")
        return v

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("target_modules must name at least one layer (got [])")
        if len(set(v)) != len(v):
            raise ValueError(f"target_modules has duplicates: {v}")
        return v

    def adapter_dir(self, settings: Settings) -> Path:
        """The final, published folder of this adapter."""
        return self.output_dir if self.output_dir is not None else settings.resolved_adapters_dir / self.style

    def work_dir(self, settings: Settings) -> Path:
        """Stable per-style folder for checkpoints, so ``resume`` can find them after a crash."""
        final = self.adapter_dir(settings)
        return final.parent / f".work-{final.name}"


def load_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """Build a TrainConfig from an optional YAML recipe plus overrides (None means 'not given').

    Errors are ConfigError naming the file and the field, e.g. ``format.yaml: epochs: must be > 0``.
    """
    values: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        source = str(path)
        values = _read_yaml(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}", param=_first_field(exc)) from exc


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe's fields as written (``extends`` resolved), without validating them into a config."""
    return _read_yaml(Path(path))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"{seen[0]}: 'extends' loops ({chain})", param="extends")
    if not path.is_file():
        raise ConfigError(f"Training config {path} does not exist", param="config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})", param="config") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}", param="config")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    # 'extends: other.yaml' (relative to this file): that recipe's fields, overridden by this one's.
    return {**_read_yaml(path.parent / str(parent), (*seen, path.resolve())), **data}


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field (valid fields: {', '.join(TrainConfig.model_fields)})"
        elif err["type"] == "missing":
            msg = "required"
        elif "input" in err and field not in msg:
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{field}: {msg}")
    return "; ".join(parts)


def _first_field(exc: ValidationError) -> str | None:
    errors = exc.errors()
    return ".".join(str(p) for p in errors[0]["loc"]) if errors else None


@dataclass(frozen=True)
class Runtime:
    """Device-dependent choices, resolved once per run and recorded in the card."""

    device: Literal["cpu", "cuda"]
    gpu_name: str | None
    gpu_count: int
    quantization: Literal["nf4", "none"]
    optimizer: str
    bf16_autocast: bool
    eval_during_training: bool
    notes: tuple[str, ...]
    gradient_checkpointing: bool = True
    micro_batch: int = 2  # examples per forward pass
    accumulation: int = 4  # forward passes per optimizer step (micro_batch x accumulation = the recipe's batch)
    liger_kernels: bool = False
    padding_free: bool = False
    activation_offloading: bool = False
    attention: str = "sdpa"
    torch_compile: bool = False
    compute_dtype: str = "bfloat16"  # the base's dtype as loaded (the config's, or fp32 on a CPU without bf16)
    checkpoint_in_graph: bool = False
    checkpointed_layers: int | None = None  # with gradient checkpointing: the first N layers (None: all)

    @property
    def method(self) -> Literal["qlora-nf4", "lora-bf16"]:
        return "qlora-nf4" if self.quantization == "nf4" else "lora-bf16"

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "quantization": self.quantization,
            "optimizer": self.optimizer,
            "bf16_autocast": self.bf16_autocast,
            "eval_during_training": self.eval_during_training,
            "gradient_checkpointing": self.gradient_checkpointing,
            "micro_batch": self.micro_batch,
            "accumulation": self.accumulation,
            "liger_kernels": self.liger_kernels,
            "padding_free": self.padding_free,
            "activation_offloading": self.activation_offloading,
            "attention": self.attention,
            "torch_compile": self.torch_compile,
            "compute_dtype": self.compute_dtype,
            "checkpoint_in_graph": self.checkpoint_in_graph,
            "checkpointed_layers": self.checkpointed_layers,
            "notes": list(self.notes),
        }


# On CPU one forward pass of this many tokens (micro-batch x longest row) keeps the logits of a
# 262k-vocabulary model (and their gradient) near 2 GiB each.
CPU_MICRO_BATCH_TOKENS = 2048


def cpu_micro_batch(batch: int, longest_tokens: int | None) -> int:
    """The largest divisor of the recipe's batch whose forward pass stays within CPU_MICRO_BATCH_TOKENS.

    Why: on a CPU, one forward pass of 8 rows costs ~0.66x four passes of 2 (bigger matmuls, less
    per-call overhead; bench in BENCHMARKS.md), and memory is rarely the limit. A divisor keeps the
    optimizer step's batch exactly the recipe's.
    """
    longest = max(1, longest_tokens or CPU_MICRO_BATCH_TOKENS)
    fits = [d for d in range(1, batch + 1) if batch % d == 0 and d * longest <= CPU_MICRO_BATCH_TOKENS]
    return max(fits, default=1)


def resolve_runtime(config: TrainConfig, *, cuda: bool | None = None, longest_tokens: int | None = None,
                    processes: int = 1, model_type: str | None = None,
                    attention_needs: dict[str, bool] | None = None, shape: ModelShape | None = None) -> Runtime:
    """Turn 'auto' and CUDA-only choices into what will actually run on this machine.

    ``longest_tokens``: the longest training row, which bounds the CPU micro-batch.
    ``processes``: the processes of a multi-GPU launch (each trains the recipe's batch).
    ``model_type``: the base's ``config.json`` model_type, which decides liger's default.
    ``attention_needs``: what the base's attention needs of a kernel (``trainer.attention.model_attention_needs``).
    ``shape``: the base's shape for the planner (``trainer.plan.shape_from_dict``), for ``memory_budget_gib``.
    """
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    notes: list[str] = []
    if config.quantization == "auto":
        quantization = "nf4" if cuda else "none"
        if not cuda:
            notes.append("quantization auto -> none: bf16 LoRA on CPU (4-bit evaluation breaks LoRA gradients here)")
    else:
        quantization = config.quantization
    optimizer = config.optimizer
    if not cuda and optimizer in CUDA_ONLY_OPTIMIZERS:
        optimizer = "adamw_torch"
        notes.append(f"optimizer {config.optimizer} needs CUDA -> adamw_torch on CPU")
    # The NOTES trap: on CPU, running the 4-bit model in eval mode during training silently
    # shrinks LoRA gradients ~500x. A CPU NF4 run therefore trains without in-loop eval.
    eval_during_training = not (quantization == "nf4" and not cuda)
    if not eval_during_training:
        notes.append("nf4 on CPU: no eval loss during training (it would break LoRA gradients); no early stopping")
    has_gpu = cuda and torch.cuda.is_available()  # cuda=True without a GPU: planning, tests
    gpu_name = torch.cuda.get_device_name(0) if has_gpu else None
    gpu_count = torch.cuda.device_count() if has_gpu else 0
    compute_dtype = cpu_compute_dtype(config, notes) if not cuda else config.compute_dtype
    # bf16 autocast on CPU is slower than running the bf16 base with fp32 LoRA weights as it is.
    bf16_autocast = cuda and compute_dtype == "bfloat16"
    checkpointing = config.gradient_checkpointing
    batch = config.per_device_batch_size * config.gradient_accumulation_steps
    micro, accumulation = config.per_device_batch_size, config.gradient_accumulation_steps
    liger, padding_free, offloading, compiled = cuda_speedups(config, cuda, model_type, notes)
    attention = attention_for(config, padding_free, compute_dtype, attention_needs or {})
    in_graph = config.checkpoint_in_graph and compiled and checkpointing
    if config.checkpoint_in_graph and not in_graph:
        notes.append("checkpoint_in_graph needs torch_compile and gradient_checkpointing on: off")
    if processes > 1:
        notes.append(f"{processes} processes (DDP): each trains the recipe's batch of {batch} rows, so an "
                     f"optimizer step sees {batch * processes} rows and an epoch takes 1/{processes} of the steps")
    if not cuda:
        # Checkpointing buys GPU memory with ~30% more compute; a CPU has the memory and not the compute.
        if checkpointing and "gradient_checkpointing" not in config.model_fields_set:
            checkpointing = False
            notes.append("gradient checkpointing off on CPU (memory is ample; recomputing costs ~30%)")
        micro = cpu_micro_batch(batch, longest_tokens)
        accumulation = batch // micro
        if micro != config.per_device_batch_size:
            notes.append(f"batch {config.per_device_batch_size} x {config.gradient_accumulation_steps} run as "
                         f"{micro} x {accumulation} on CPU (same {batch} rows per step, fewer, larger passes)")
    checkpointed_layers = None
    if config.memory_budget_gib is not None:
        budget = BudgetedRun(cuda, checkpointing, quantization, micro, longest_tokens or config.max_seq_length,
                             bf16_autocast, compute_dtype)
        checkpointed_layers = layers_within_budget(config, budget, shape, notes)
        if checkpointed_layers is not None and offloading:
            offloading = False  # it would move the kept activations to the host and back every step
            notes.append("activation offloading off: memory_budget_gib keeps activations on the GPU")
    return Runtime("cuda" if cuda else "cpu", gpu_name, gpu_count, quantization, optimizer, bf16_autocast,
                   eval_during_training, tuple(notes), checkpointing, micro, accumulation, liger, padding_free,
                   offloading, attention, compiled, compute_dtype,
                   checkpoint_in_graph=in_graph, checkpointed_layers=checkpointed_layers)


@dataclass(frozen=True)
class BudgetedRun:
    """What the memory plan of a run depends on, as :func:`resolve_runtime` resolved it."""

    cuda: bool
    checkpointing: bool
    quantization: str
    micro_batch: int
    longest_tokens: int
    bf16_autocast: bool
    compute_dtype: str


def layers_within_budget(config: TrainConfig, run: BudgetedRun, shape: ModelShape | None,
                         notes: list[str]) -> int | None:
    """How many layers (the first ones) to checkpoint within ``memory_budget_gib``; None for all of them.

    The plan is that of the longest row at the runtime's micro-batch (a padding-free pass holds at
    most that many tokens), every position labelled: an upper bound of the run's peak.
    """
    from trainer.plan import PlanRequest, layers_to_checkpoint, plan

    budget = config.memory_budget_gib
    if not run.cuda or not run.checkpointing or run.quantization != "nf4" or shape is None:
        why = ("it budgets GPU memory, and this run is on CPU" if not run.cuda
               else "gradient checkpointing is off, so no layer recomputes" if not run.checkpointing
               else "the planner models a 4-bit base (quantization: nf4)" if run.quantization != "nf4"
               else "the planner does not model this base (its config.json)")
        notes.append(f"memory_budget_gib ignored: {why}")
        return None
    if config.activation_offloading:
        raise ConfigError("memory_budget_gib keeps activations on the GPU to skip recomputing them, "
                          "activation_offloading: true moves them to host memory; set one of the two",
                          param="memory_budget_gib")
    request = PlanRequest(shape=shape, seq_len=run.longest_tokens, batch_size=run.micro_batch, rank=config.lora_r,
                          double_quant=config.double_quant, autocast=run.bf16_autocast,
                          upcast_fp32=run.compute_dtype == "float16")
    layers = layers_to_checkpoint(request, budget)
    if layers is None:
        notes.append(f"memory_budget_gib {budget:g}: planned {plan(request).total_gib:.1f} GiB with every layer "
                     "checkpointed, above the budget; every layer is checkpointed")
        return None
    total = plan(request.model_copy(update={"checkpointed_layers": layers})).total_gib
    kept = shape.num_layers - layers
    notes.append(f"memory_budget_gib {budget:g}: {kept} of {shape.num_layers} layers keep their activations instead "
                 f"of recomputing them (planned {total:.1f} GiB at {run.micro_batch} x {run.longest_tokens} tokens)")
    return None if kept == 0 else layers


#: Model families on which liger's kernels were checked to give the plain recipe's loss
#: (bench/train_gpu.py: per-step loss within 0.003 over 20 steps on the Llama-3.1-8B shape).
LIGER_CHECKED = frozenset({"llama"})


def cuda_speedups(config: TrainConfig, cuda: bool, model_type: str | None,
                  notes: list[str]) -> tuple[bool, bool, bool, bool]:
    """(liger kernels, padding-free batches, activation offloading, torch.compile) as they will run here.

    All are GPU-side savings: Triton kernels (liger's and the compiler's) need CUDA, and on CPU the
    micro-batches are sized to the longest row already, so padding costs little there.
    """
    if not cuda:
        if config.liger_kernels or config.padding_free or config.activation_offloading or config.torch_compile:
            notes.append("liger_kernels / padding_free / activation_offloading / torch_compile are CUDA-side: "
                         "off on CPU")
        return False, False, False, False
    compiled = can_compile(notes) if config.torch_compile is None else config.torch_compile
    if compiled:
        notes.append("torch_compile: the decoder layers compile during the first step (13-53 s measured on "
                     "an H200 for an 8B) and again at the first evaluation; later steps reuse them")
    liger = config.liger_kernels
    if liger is None and compiled:
        liger = False  # the compiler fuses the same norms, activations and rotary products
    elif liger is None:
        import importlib.util

        liger = model_type in LIGER_CHECKED and importlib.util.find_spec("liger_kernel") is not None
        if model_type not in LIGER_CHECKED:
            notes.append(f"liger kernels off for {model_type or 'this model'}: their loss was checked on "
                         f"{', '.join(sorted(LIGER_CHECKED))} only (liger_kernels: true turns them on)")
        elif not liger:
            notes.append("liger-kernel is not installed (the `gpu` extra brings it): plain RMSNorm/SwiGLU/RoPE")
    # One row per forward pass has nothing to pad, and the single-row path keeps SDPA's flash kernel.
    padding_free = config.per_device_batch_size > 1 if config.padding_free is None else config.padding_free
    offloading = config.activation_offloading
    if offloading is None:
        offloading = config.per_device_batch_size == 1
    return liger, padding_free, offloading, compiled


def can_compile(notes: list[str]) -> bool:
    """Whether torch.compile can build GPU kernels here: Triton, and a C compiler for its launchers."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("triton") is None or not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        notes.append("torch_compile off: it needs Triton and a C compiler (cc/gcc/clang) on this machine")
        return False
    return True


def attention_for(config: TrainConfig, padding_free: bool, compute_dtype: str, needs: dict[str, bool]) -> str:
    """The attention implementation: the config's, or for 'auto' the one that suits the batches.

    A padding-free batch is one long row with positions restarting per example. SDPA then gets a
    block-diagonal mask, which rules out its flash kernel and still computes every masked block;
    flex attention's block mask skips them, and so does the varlen kernel, which takes the rows'
    bounds instead of a mask (padding-free is CUDA-only, and so is this choice).
    """
    from trainer.attention import varlen_supported

    if config.attention == "varlen" and padding_free and not (
            compute_dtype in ("bfloat16", "float16") and varlen_supported(**needs)):
        raise ConfigError("attention: varlen needs CUDA, torch >= 2.10 (torch.nn.attention.varlen), bf16 or fp16 "
                          "compute and a base without attention soft-capping; use attention: auto",
                          param="attention")
    if config.attention != "auto":
        return config.attention
    return "flex_attention" if padding_free else "sdpa"


def cpu_compute_dtype(config: TrainConfig, notes: list[str]) -> str:
    """The dtype a CPU run loads the base in: the config's, unless bf16 is emulated here.

    On a CPU without native bf16 matrix kernels a bf16 training step is tens of times slower
    than fp32 (``ragtune.hardware``); unless the recipe names ``compute_dtype`` itself, such a
    machine trains in fp32 (twice the weight memory: 1 GiB for a 270M base). The adapter is
    saved in ``save_dtype`` either way.
    """
    from ragtune.hardware import cpu_has_native_bf16

    if "compute_dtype" in config.model_fields_set or cpu_has_native_bf16():  # unset means the bf16 default
        return config.compute_dtype
    notes.append("compute_dtype bfloat16 -> float32: this CPU has no native bf16 matrix kernels "
                 "(bf16 would be emulated, tens of times slower)")
    return "float32"
