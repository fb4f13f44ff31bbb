"""Train one LoRA/QLoRA adapter with trl's SFTTrainer and publish it atomically.

Layout under the adapters dir (``A``) for style ``S``::

    A/.work-S/           checkpoints + run.json; survives a crash so ``resume`` can continue
    A/.tmp-S-XXXX/       the finished adapter being assembled (weights, tokenizer, card, report)
    A/S/                 the published adapter: appears only by rename, complete or not at all

An interrupted run (exception, Ctrl-C) removes its ``.tmp`` folder and never touches ``A/S``;
its checkpoints stay in ``.work-S`` until a successful run publishes and removes them.
"""

from __future__ import annotations

import gc
import json
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table
from transformers import TrainerCallback

from ragtune.card import AdapterCard, CardWarning, Compute, DataInfo, HistoryPoint, Metrics
from ragtune.errors import InvalidRequestError
from ragtune.jsonformat import load_schema
from ragtune.models import base_model_hash, prepare_base_model
from ragtune.publish import clear_staging, publish, recover
from ragtune.settings import Settings
from trainer.attention import implementation, model_attention_needs
from trainer.config import Runtime, TrainConfig, resolve_runtime
from trainer.data import (
    PreparedData,
    TrainingFile,
    check_completions_schema,
    load_training_file,
    prepare,
    supervised_fraction,
    tokenize_dataset,
)
from trainer.distributed import Rank
from trainer.guardrails import GuardrailCallback, early_stopping_callbacks, static_checks
from trainer.report import REPORT_FILE, write_report
from trainer.task_metric import json_task_metric

RUN_FILE = "run.json"  # in the work dir: what the checkpoints there belong to
LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets")


@dataclass
class TrainResult:
    adapter_dir: Path
    card: AdapterCard
    report_path: Path

    @property
    def warnings(self) -> list[CardWarning]:
        return self.card.warnings


def train_adapter(
    config: TrainConfig,
    settings: Settings,
    *,
    callbacks: list | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> TrainResult | None:
    """Train ``config.style`` on ``config.data`` and publish it under the adapters dir.

    ``callbacks`` are extra transformers TrainerCallbacks (logging, tests). Raises
    InvalidRequestError for bad data before any model is loaded. In a multi-GPU launch every
    process trains and rank 0 alone settles the work dir, evaluates and publishes; the other
    ranks return None.
    """
    started = time.perf_counter()
    rank = Rank.from_env()
    console = console or Console(stderr=True, quiet=not progress or not rank.is_main)

    # Data first: a bad file must fail in a second, not after a minute of model loading.
    data = load_training_file(config.data)
    schema = load_schema(config.json_schema) if config.json_schema else None
    if schema is not None:
        check_completions_schema(data, schema, config.json_schema)
    base_dir = prepare_base_model(settings, progress=progress)
    tokenizer = _load_tokenizer(base_dir)
    prepared = prepare(data, tokenizer, max_seq_length=config.max_seq_length,
                       eval_fraction=config.eval_fraction, seed=config.seed)
    model_config = _model_config(base_dir)
    runtime = resolve_runtime(config, longest_tokens=min(config.max_seq_length, prepared.longest_tokens(tokenizer)),
                              processes=rank.world, model_type=model_config.get("model_type"),
                              attention_needs=model_attention_needs(model_config),
                              shape=_model_shape(model_config, base_dir) if config.memory_budget_gib else None)
    for note in runtime.notes:
        console.print(f"[dim]note:[/dim] {note}")
    if runtime.device == "cuda":
        use_expandable_segments()
    warnings = static_checks(config, len(prepared.train_rows))
    if prepared.rejected:
        warnings.append(CardWarning(code="rows-rejected", message=f"{len(prepared.rejected)} row(s) left out: "
                                    + "; ".join(prepared.rejected[:5]) + (" ..." if len(prepared.rejected) > 5 else "")))
    for w in warnings:
        _print_warning(console, w)

    final_dir = config.adapter_dir(settings)
    work_dir = config.work_dir(settings)
    if rank.is_main:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        recover(final_dir.parent)  # a killed earlier publish: the previous version back first
        clear_staging(final_dir.parent, final_dir.name)  # half-assembled folders of a killed run
        resume_from, spent_before = _prepare_work_dir(work_dir, config, data, warnings)
    rank.barrier()  # the other ranks read the work dir once rank 0 has settled it
    if not rank.is_main:
        resume_from, spent_before = (_last_checkpoint(work_dir) if config.resume else None), 0.0

    guard = GuardrailCallback(lambda w: _print_warning(console, w), lora_r=config.lora_r)
    staging: Path | None = None
    try:
        trainer = _build_trainer(config, runtime, base_dir, tokenizer, prepared, work_dir,
                                 [guard, *early_stopping_callbacks(config, runtime.eval_during_training),
                                  *([SyncBeforeCheckpoint()] if runtime.device == "cuda" else []),
                                  *([CheckpointFirstLayers(runtime.checkpointed_layers)]
                                    if runtime.checkpointed_layers is not None else []),
                                  *(callbacks or [])], progress, rank)
        supervised = supervised_fraction(trainer.train_dataset)
        with bnb_steps_without_syncs() if runtime.device == "cuda" else nullcontext():
            trainer.train(resume_from_checkpoint=resume_from)
        if runtime.eval_during_training and not any("eval_loss" in e for e in trainer.state.log_history):
            trainer.evaluate()  # too few steps for eval_steps: still report one held-out loss
        if not rank.is_main:
            return None
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final_dir.name}-", dir=final_dir.parent))
        trainer.model.save_pretrained(staging)
        cast_saved_adapter(staging, config.save_dtype)
        tokenizer.save_pretrained(staging)
        state = trainer.state
        world_size = trainer.args.world_size
        del trainer
        gc.collect()
        _empty_cuda_cache()

        task = json_task_metric(base_dir, staging, prepared.eval_rows, limit=config.task_eval_limit,
                                max_new_tokens=config.task_max_new_tokens, device=runtime.device,
                                dtype=runtime.compute_dtype, schema=schema)
        wall = spent_before + time.perf_counter() - started
        card = AdapterCard(
            name=final_dir.name,
            base_model=settings.base_model,
            base_model_path=str(base_dir),
            base_model_hash=base_model_hash(settings),
            method=runtime.method,
            data=DataInfo(path=str(config.data), sha256=data.sha256, format=data.format,
                          rows_total=data.rows_total, rows_train=len(prepared.train_rows),
                          rows_eval=len(prepared.eval_rows), rows_rejected=len(prepared.rejected)),
            config=config.model_dump(mode="json"),
            effective=runtime.as_dict(),
            metrics=_metrics(state, guard, supervised, task),
            warnings=[*warnings, *guard.warnings],
            history=_history(state.log_history),
            compute=_compute(runtime, config, wall, world_size),
            libraries=_library_versions(),
        )
        card.write(staging)
        write_report(card, staging / REPORT_FILE)
        publish(staging, final_dir)
    except BaseException:
        # Interrupted or failed: nothing under the final name; checkpoints stay for --resume.
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if rank.is_main:
            _record_spent(work_dir, spent_before + time.perf_counter() - started)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    result = TrainResult(final_dir, card, final_dir / REPORT_FILE)
    print_summary(console, result)
    return result


# ---------------------------------------------------------------------------------------------
# Building blocks


def cast_saved_adapter(folder: Path, dtype: str) -> None:
    """Rewrite the saved LoRA weights in ``dtype`` (peft saves them as trained, in float32)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    target = getattr(torch, dtype)
    tensors = load_file(path)
    if all(t.dtype == target or not t.is_floating_point() for t in tensors.values()):
        return
    cast = {k: t.to(target) if t.is_floating_point() else t for k, t in tensors.items()}
    save_file(cast, path, metadata={"format": "pt"})


def _model_config(base_dir: Path) -> dict:
    config = base_dir / "config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


def _model_shape(model_config: dict, base_dir: Path):
    """The base's shape for the memory planner, or None where the planner does not model it (MoE)."""
    from trainer.plan import shape_from_dict

    try:
        return shape_from_dict(model_config, name=base_dir.name, source=str(base_dir / "config.json"))
    except InvalidRequestError:
        return None


def _load_tokenizer(base_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:  # trl would pick EOS; say so here, where it is visible
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_training_model(base_dir: Path, runtime: Runtime, config: TrainConfig, rank: Rank = Rank()):
    """The base model as training needs it: NF4 (+ k-bit preparation) or plain bf16."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, runtime.compute_dtype)
    if runtime.quantization == "nf4":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                 bnb_4bit_use_double_quant=config.double_quant, bnb_4bit_compute_dtype=dtype)
        model = AutoModelForCausalLM.from_pretrained(
            base_dir, quantization_config=bnb, dtype=dtype, attn_implementation=implementation(runtime.attention),
            device_map={"": rank.local} if runtime.device == "cuda" else None,  # DDP: this process's GPU
        )
        apply_layer_speedups(model, runtime)
        if runtime.compute_dtype == "bfloat16":
            return freeze_base(model, runtime)
        # fp16 needs peft's preparation: it keeps every weight that is not 4-bit in fp32.
        return prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=runtime.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype,
                                                 attn_implementation=implementation(runtime.attention)).to(runtime.device)
    apply_layer_speedups(model, runtime)
    return model


def apply_layer_speedups(model, runtime: Runtime) -> None:
    """liger's kernels and/or the compiled decoder layers, as the runtime resolved them."""
    if runtime.liger_kernels:
        apply_liger_kernels(model)
    if runtime.torch_compile:
        compile_decoder_layers(model, checkpoint_in_graph=runtime.checkpoint_in_graph)


def decoder_layers(model) -> list:
    """The model's repeated decoder layers, in order: the modules transformers checkpoints."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def compile_decoder_layers(model, *, checkpoint_in_graph: bool = False) -> int:
    """torch.compile every decoder layer in place; returns how many.

    Regional compilation: the layers are instances of one class, so they share one graph (compiled
    at the first step, reused by all). The compile is lazy, so the LoRA layers peft inserts
    afterwards are inside the graph. With ``checkpoint_in_graph`` the checkpointing moves from
    transformers' wrapper around the layer call into the compiled forward (:func:`checkpoint_inside`):
    the backward graph then recomputes only what the backward reads, which leaves out the down
    projection's matmuls (the layer's output is not needed to differentiate it; ~27% of a Llama
    layer's recomputed FLOPs). Without it the recompute reruns the whole compiled forward.
    """
    layers = decoder_layers(model)
    for layer in layers:
        if checkpoint_in_graph:
            layer.__class__ = checkpoint_inside(type(layer))
        layer.compile()
    return len(layers)


_CHECKPOINT_INSIDE: dict[type, type] = {}


def checkpoint_inside(layer_class: type) -> type:
    """A subclass of a transformers decoder layer that checkpoints inside its own ``forward``.

    transformers checkpoints a layer by wrapping the whole call (``GradientCheckpointingLayer.__call__``),
    outside any compiled region, and the recompute then reruns the whole compiled forward. Here the
    call goes straight to ``nn.Module.__call__`` and ``forward`` calls ``torch.utils.checkpoint``
    itself when the model's checkpointing flag is on (set by ``gradient_checkpointing_enable``, as
    before), which torch.compile traces into one forward and one backward graph.
    """
    if layer_class not in _CHECKPOINT_INSIDE:
        import torch
        from torch.utils.checkpoint import checkpoint

        class CheckpointedInside(layer_class):
            def __call__(self, *args, **kwargs):
                return torch.nn.Module.__call__(self, *args, **kwargs)

            def forward(self, *args, **kwargs):
                if self.gradient_checkpointing and self.training:
                    return checkpoint(super().forward, *args, use_reentrant=False, **kwargs)
                return super().forward(*args, **kwargs)

        CheckpointedInside.__name__ = CheckpointedInside.__qualname__ = layer_class.__name__
        _CHECKPOINT_INSIDE[layer_class] = CheckpointedInside
    return _CHECKPOINT_INSIDE[layer_class]


def checkpoint_first_layers(model, count: int) -> int:
    """Leave gradient checkpointing on for the first ``count`` decoder layers only; returns how many are off.

    The last layers are the ones left out: their backward runs first, so by the time a checkpointed
    layer recomputes its forward, the kept activations are already freed.
    """
    left_out = decoder_layers(model)[count:]
    for layer in left_out:
        layer.gradient_checkpointing = False
    return len(left_out)


class CheckpointFirstLayers(TrainerCallback):
    """Applies :func:`checkpoint_first_layers` once training starts: transformers' Trainer turns
    checkpointing on for every layer at the start of ``train()``, after the model is built."""

    def __init__(self, count: int):
        self.count = count

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        checkpoint_first_layers(model, self.count)


def use_expandable_segments() -> None:
    """Let the CUDA caching allocator grow segments in place rather than cache fixed-size blocks, so
    the reserved peak follows the allocated one. A PYTORCH_CUDA_ALLOC_CONF the user set wins."""
    import os

    import torch

    if not torch.cuda.is_available() or {"PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"} & set(os.environ):
        return
    # torch 2.11 moved the setter to the accelerator-generic one and deprecated the CUDA name.
    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None) or torch.cuda.memory._set_allocator_settings
    setter("expandable_segments:True")


@contextmanager
def bnb_steps_without_syncs():
    """bitsandbytes 0.50's 8-bit optimizer step calls ``torch.cuda.synchronize()`` after every
    parameter's update (448 times a step for LoRA on an 8B's seven projections), so the GPU idles
    while the host launches each next update. The updates, the prefetches of paged states and the
    training itself are ordered on the default stream, so those syncs order nothing on the device
    (upstream PR bitsandbytes#2050 drops them for non-paged states); the one thing the host reads,
    the paged states when a checkpoint is saved, waits for :class:`SyncBeforeCheckpoint`.
    Measured on an H200 at 2,048 x 1: 0.376 -> 0.324 s a step (BENCHMARKS.md). Scoped to the
    training call."""
    import bitsandbytes.optim.optimizer as bnb_optimizer

    per_parameter_sync = bnb_optimizer.sync_gpu
    bnb_optimizer.sync_gpu = lambda tensor: None
    try:
        yield
    finally:
        bnb_optimizer.sync_gpu = per_parameter_sync


class SyncBeforeCheckpoint(TrainerCallback):
    """A device sync before each checkpoint save, the one place the host reads the optimizer's
    paged states: bitsandbytes keeps them in managed memory, which ``torch.save`` reads as host
    memory, without the stream order a device-to-host copy has. transformers' flow callback, which
    runs before this one, has decided by ``on_step_end`` whether this step saves or evaluates (a
    ``save_strategy: best`` save follows an evaluation); other steps run without a sync, so the
    host queues the next step while the device finishes this one."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or control.should_evaluate:
            import torch

            torch.cuda.synchronize()


def freeze_base(model, runtime: Runtime):
    """A 4-bit bf16 base made ready for LoRA: frozen, checkpointing on when the runtime says so.

    peft's ``prepare_model_for_kbit_training`` also casts every weight that is not 4-bit to fp32:
    for an 8B that is the embeddings and the LM head, +2 GiB each and an fp32 LM-head matmul per
    token (measured on an H200, Llama-3.1-8B shape at seq 2048: 9.7 GiB peak with the cast, 6.8 without). fp16 training needs that
    for stability; bf16 has fp32's range and does not.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    if runtime.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def apply_liger_kernels(model) -> None:
    """liger-kernel's Triton RMSNorm, SwiGLU and RoPE on this model instance (before LoRA wraps it:
    the SwiGLU kernel calls the projections as modules, so their LoRA layers still run)."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      bias=config.lora_bias, target_modules=list(config.target_modules), task_type="CAUSAL_LM")


def sft_config(config: TrainConfig, runtime: Runtime, work_dir: Path, progress: bool):
    from trl import SFTConfig

    evaluate = runtime.eval_during_training
    return SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=runtime.micro_batch,
        per_device_eval_batch_size=runtime.micro_batch,
        gradient_accumulation_steps=runtime.accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio if config.warmup_ratio else 0,  # a float < 1 is a ratio
        max_grad_norm=config.max_grad_norm,
        optim=runtime.optimizer,
        seed=config.seed,
        data_seed=config.seed,
        gradient_checkpointing=runtime.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        activation_offloading=runtime.activation_offloading,
        bf16=runtime.bf16_autocast,
        use_cpu=runtime.device == "cpu",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        # Trainer's NaN filter reads every step's loss on the host right after the backward: a device
        # sync, and the host then launches the 8-bit optimizer's hundreds of small updates one by one
        # while the GPU idles, instead of queueing them behind the backward. The loss goes to the log
        # as computed; the guardrails stop a run whose logged loss is not finite.
        logging_nan_inf_filter=False,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps,
        # Checkpoints at every eval: needed for best-checkpoint restore, and what --resume continues from.
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=evaluate,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        # Padding-free rows come tokenized and truncated already (trl refuses max_length with it).
        max_length=None if runtime.padding_free else config.max_seq_length,
        padding_free=runtime.padding_free,
        completion_only_loss=True,  # loss on completion tokens only; the prompt is context
        packing=False,
        report_to=[],
        disable_tqdm=not progress,
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient: skip DDP's graph walk
    )


def native_loss_trainer():
    """SFTTrainer with the model's own loss, for CPU runs.

    trl computes the loss through its chunked LM head (log-probabilities in vocabulary tiles, no full
    logits): on a GPU it saves memory; on a CPU its torch fallback upcasts every LM-head tile to fp32
    and makes several elementwise passes over a 262k vocabulary, which was 2/3 of a training step.
    The model's own loss (``labels`` with the prompt masked as -100, normalised by the step's
    supervised tokens) is the same quantity from one bf16 matmul.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class NativeLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, {**inputs, "use_cache": False}, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return NativeLossSFTTrainer


def _build_trainer(config, runtime, base_dir, tokenizer, prepared: PreparedData, work_dir, callbacks, progress,
                   rank: Rank):
    from trl import SFTTrainer

    if runtime.device == "cpu":
        SFTTrainer = native_loss_trainer()  # noqa: N806 - the class to instantiate, chosen per device
    model = load_training_model(base_dir, runtime, config, rank)
    train_ds, eval_ds = prepared.datasets()
    if runtime.padding_free:
        train_ds, eval_ds = (tokenize_dataset(ds, tokenizer, max_length=config.max_seq_length)
                             for ds in (train_ds, eval_ds))
    # trl's dataset preparation shows one datasets bar per map ("Tokenizing train dataset ..."):
    # five lines of noise per split in a second; the training bar is the progress that matters.
    import datasets

    datasets.disable_progress_bars()
    trainer = SFTTrainer(
        model=model,
        args=sft_config(config, runtime, work_dir, progress),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=callbacks,
    )
    if not progress:  # without tqdm, transformers prints every log dict instead; the card keeps them
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer


# ---------------------------------------------------------------------------------------------
# Work dir, resume and publishing


def _prepare_work_dir(work_dir: Path, config: TrainConfig, data: TrainingFile, warnings: list[CardWarning]):
    """Return (checkpoint to resume from or None, seconds spent by earlier attempts)."""
    run_config = config.model_dump(mode="json", exclude={"resume"})
    if config.resume:
        checkpoint = _last_checkpoint(work_dir)
        if checkpoint is None:
            raise InvalidRequestError(
                f"Nothing to resume for '{config.style}': no checkpoint in {work_dir}. Run without --resume.",
                param="resume",
            )
        run = json.loads((work_dir / RUN_FILE).read_text()) if (work_dir / RUN_FILE).is_file() else {}
        if run.get("data_sha256") not in (None, data.sha256):
            raise InvalidRequestError(
                f"{config.data} changed since the interrupted run (sha256 {run['data_sha256'][:12]}... -> "
                f"{data.sha256[:12]}...); resuming would mix two data sets. Run without --resume.",
                param="resume",
            )
        changed = sorted(k for k, v in run.get("config", {}).items() if run_config.get(k) != v)
        if changed:
            warnings.append(CardWarning(code="resume-config-changed",
                                        message=f"resumed with changed settings: {', '.join(changed)}"))
        return checkpoint, float(run.get("spent_seconds", 0.0))
    if work_dir.exists():  # a fresh run: earlier checkpoints are not ours to continue
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    (work_dir / RUN_FILE).write_text(json.dumps(
        {"style": config.style, "data_sha256": data.sha256, "config": run_config, "spent_seconds": 0.0}, indent=2))
    return None, 0.0


def _last_checkpoint(work_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None


def _record_spent(work_dir: Path, seconds: float) -> None:
    path = work_dir / RUN_FILE
    if path.is_file():
        run = json.loads(path.read_text())
        run["spent_seconds"] = seconds
        path.write_text(json.dumps(run, indent=2))


# ---------------------------------------------------------------------------------------------
# Card parts


def _history(log_history: list[dict]) -> list[HistoryPoint]:
    points: dict[int, HistoryPoint] = {}
    for entry in log_history:
        step = int(entry.get("step", 0))
        if "loss" in entry:
            points.setdefault(step, HistoryPoint(step=step)).train_loss = float(entry["loss"])
        if "eval_loss" in entry:
            points.setdefault(step, HistoryPoint(step=step)).eval_loss = float(entry["eval_loss"])
    return [points[s] for s in sorted(points)]


def _metrics(state, guard: GuardrailCallback, supervised: float, task) -> Metrics:
    history = _history(state.log_history)
    train = [p.train_loss for p in history if p.train_loss is not None]
    evals = [(p.step, p.eval_loss) for p in history if p.eval_loss is not None]
    best = min(evals, key=lambda e: e[1]) if evals else None
    return Metrics(
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        final_train_loss=train[-1] if train else None,
        best_train_loss=min(train) if train else None,
        final_eval_loss=evals[-1][1] if evals else None,
        best_eval_loss=best[1] if best else None,
        best_step=best[0] if best else None,
        lora_grad_norm_first_step=guard.first_grad_norm,
        supervised_token_fraction=supervised,
        train_seconds=next((float(e["train_runtime"]) for e in reversed(state.log_history) if "train_runtime" in e),
                           None),
        task=task,
    )


def _compute(runtime: Runtime, config: TrainConfig, wall: float, world_size: int) -> Compute:
    hours = wall / 3600
    if runtime.device == "cuda":
        gpus = max(1, world_size)
        import torch

        return Compute(device="cuda", gpu_name=runtime.gpu_name, gpu_count=gpus, wall_seconds=wall,
                       gpu_hours=hours * gpus, cpu_hours=0.0, hour_usd=config.gpu_hour_usd,
                       cost_usd=hours * gpus * config.gpu_hour_usd,
                       peak_gpu_memory_gib=torch.cuda.max_memory_reserved() / 2**30)
    return Compute(device="cpu", wall_seconds=wall, gpu_hours=0.0, cpu_hours=hours,
                   hour_usd=config.cpu_hour_usd, cost_usd=hours * config.cpu_hour_usd)


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Console output


def _print_warning(console: Console, warning: CardWarning) -> None:
    step = f" (step {warning.step})" if warning.step is not None else ""
    console.print(f"[yellow]warning[/yellow] [bold]{warning.code}[/bold]{step}: {warning.message}")


def print_summary(console: Console, result: TrainResult) -> None:
    card, m = result.card, result.card.metrics
    table = Table(title=f"adapter {card.name} ({card.method})", show_header=False)
    table.add_row("published", str(result.adapter_dir))
    table.add_row("report", str(result.report_path))
    table.add_row("data", f"{card.data.rows_train} train / {card.data.rows_eval} held out / "
                          f"{card.data.rows_rejected} rejected ({card.data.format})")
    table.add_row("steps", f"{m.steps} ({m.epochs:.2f} epochs)")
    if m.final_train_loss is not None:
        table.add_row("train loss", f"{m.final_train_loss:.4f} (best {m.best_train_loss:.4f})")
    if m.best_eval_loss is not None:
        table.add_row("eval loss", f"{m.final_eval_loss:.4f} (best {m.best_eval_loss:.4f} at step {m.best_step})")
    if m.task is not None:
        t = m.task
        parts = [f"valid {t.json_valid_rate:.0%}"]
        if t.schema_valid_rate is not None:
            parts.append(f"schema-valid {t.schema_valid_rate:.0%}")
        parts.append(f"exact {t.exact_match_rate:.0%}")
        if t.field_f1 is not None:
            parts.append(f"field F1 {t.field_f1:.2f}")
        table.add_row("JSON on held-out", " · ".join(parts) + f" ({t.rows} rows)")
    c = card.compute
    hours = f"{c.gpu_hours:.3f} GPU-h" if c.device == "cuda" else f"{c.cpu_hours:.3f} CPU machine-h"
    table.add_row("time / cost", f"{c.wall_seconds:.0f} s · {hours} · ${c.cost_usd:.2f}")
    table.add_row("warnings", ", ".join(w.code for w in card.warnings) or "none")
    console.print(table)
