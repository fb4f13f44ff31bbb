"""Measure the real peak GPU memory of one QLoRA training setting, and compare it with the planner.

Recipe (ragtune's): NF4 + double quant, bf16 compute, LoRA r on all seven projections
(alpha = r, dropout 0), gradient checkpointing (non-reentrant), bitsandbytes PagedAdamW8bit,
random tokens. Two loops (``--loop``):

  plain  a plain PyTorch loop (no trl, no autocast; the outputs stay referenced through backward):
         transformers' own loss on the full logits (planner ``loss_impl="full"``).
  trl    trl's SFTTrainer, as ``trainer/train.py`` runs it: bf16 autocast, completion-only loss,
         paged_adamw_8bit, gradient checkpointing, LoRA added by the trainer (peft_config), and
         trl >= 1.16's chunked fused LM head (planner ``loss_impl="chunked"``). Rows are random
         token ids of exactly ``--seq`` tokens: ``--prompt-len`` prompt tokens (masked out of the
         loss) and the rest completion. Memory is recorded over ``trainer.train()`` only.

Shapes:
  llama8b    Llama-3.1-8B shape (hidden 4096, 32 layers, intermediate 14336, 32/8 heads,
             vocab 128256, untied) with random weights: built in bf16 directly on the GPU,
             saved to a temporary folder, reloaded quantised.
  gemma270m  gemma-3-270m: the real weights from --model-dir if it holds safetensors, otherwise
             random weights from its published config.

Run from the repository root (so ``trainer.plan`` imports and the estimate is printed beside
the measurement)::

    python bench/qlora_peak.py --shape llama8b --seq 2048 --batch 1 --rank 16 --steps 3 --out llama8b_b1.json
    python bench/qlora_peak.py --shape gemma270m --seq 2048 --batch 1 --out gemma_b1.json
    python bench/qlora_peak.py --loop trl --shape gemma270m --seq 128 --batch 8 --out trl_gemma_s128_b8.json

Memory figures (GiB): ``train_peak_*`` cover the training steps only (stats reset after loading,
setup and ``empty_cache``), ``run_peak_*`` the whole run from loading on (building and saving the
random model excluded). ``device_used_gib`` is total minus free memory as the driver reports it
(what nvidia-smi shows: CUDA context and the paged optimizer states included).
To measure several settings of one shape without rebuilding, pass ``--model-dir DIR``: the first
run saves the random model there, later runs reuse it.
Without CUDA the script prints a skip message and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024**3
REPO = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=["llama8b", "gemma270m"], default="llama8b")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument(
        "--model-dir", type=Path, default=None,
        help="A model folder: used as is if it holds safetensors (gemma270m's real weights, or a random model "
        "saved by an earlier run); otherwise the random model is saved there and kept (gemma270m: its config is read).",
    )
    p.add_argument("--loop", choices=["plain", "trl"], default="plain", help="Training loop (see the module doc).")
    p.add_argument("--prompt-len", type=int, default=16, help="trl loop: prompt tokens per row (no loss on them).")
    p.add_argument("--grad-accum", type=int, default=1, help="trl loop: gradient_accumulation_steps.")
    p.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    p.add_argument(
        "--compare", type=Path, nargs="+", default=None, metavar="RESULT_JSON",
        help="No measuring: add the planner's estimate and errors to result files written by --out "
        "(for GPU machines without pydantic), print them and rewrite them in place.",
    )
    p.add_argument(
        "--kbit-prepare", action=argparse.BooleanOptionalAction, default=True,
        help="Call peft.prepare_model_for_kbit_training (casts embeddings/head/norms to fp32). "
        "--no-kbit-prepare keeps them bf16, as trl 1.x's SFTTrainer does.",
    )
    return p.parse_args(argv)


def _config(shape: str, model_dir: Path | None):
    from transformers import AutoConfig, LlamaConfig

    if shape == "llama8b":
        return LlamaConfig(
            hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
            num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False,
            max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128001,
        )
    if model_dir is not None and (model_dir / "config.json").is_file():
        return AutoConfig.from_pretrained(model_dir)
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        hidden_size=640, num_hidden_layers=18, intermediate_size=2048, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, vocab_size=262144, tie_word_embeddings=True,
        query_pre_attn_scalar=256, sliding_window=512, max_position_embeddings=32768,
        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
    )


def _has_weights(folder: Path | None) -> bool:
    return folder is not None and any(folder.glob("*.safetensors"))


def _add_estimate(result: dict) -> dict:
    args = argparse.Namespace(shape=result["shape"], seq=result["seq"], batch=result["batch"], rank=result["rank"])
    trl_loop = result.get("loop", "plain") == "trl"
    try:
        est = _planner_estimate(
            args, upcast=result["kbit_prepare"], loss_impl="chunked" if trl_loop else "full", autocast=trl_loop,
            loss_fraction=result.get("loss_token_fraction", 1.0),
        )
    except Exception as exc:  # noqa: BLE001 - keep the measurement; compare later with --compare
        est = {"error": f"planner failed: {exc!r}"}
    result["planner"] = est
    if "peak_reserved_gib" in est:
        result["rel_error_reserved"] = round(est["peak_reserved_gib"] / result["train_peak_reserved_gib"] - 1, 4)
        result["rel_error_allocated"] = round(est["peak_allocated_gib"] / result["train_peak_allocated_gib"] - 1, 4)
        result["rel_error_static"] = round(est["static_gib"] / result["static_after_load_gib"] - 1, 4)
        result["rel_error_device_total"] = round(est["total_gib"] / result["device_used_gib"] - 1, 4)
    return result


def compare(files: list[Path]) -> int:
    for file in files:
        result = _add_estimate(json.loads(file.read_text()))
        text = json.dumps(result, indent=2)
        file.write_text(text + "\n")
        keys = ("train_peak_allocated_gib", "train_peak_reserved_gib", "device_used_gib")
        est = result["planner"]
        print(
            f"{file}: {result.get('loop', 'plain')} loop, {result['shape']} seq {result['seq']} batch {result['batch']} "
            f"prepare={result['kbit_prepare']} loss={est.get('loss_impl')}"
        )
        if "error" in est:
            print("  ", est["error"])
            continue
        for k, e in zip(keys, ("peak_allocated_gib", "peak_reserved_gib", "total_gib")):
            print(f"   {k:26} measured {result[k]:7.2f}  planned {est[e]:7.2f}  ({est[e] / result[k] - 1:+.1%})")
    return 0


def _planner_estimate(args, upcast: bool, loss_impl: str = "full", autocast: bool = False, loss_fraction: float = 1.0) -> dict:
    sys.path.insert(0, str(REPO))
    try:
        from trainer.plan import PRESETS, PlanRequest, plan
    except Exception as exc:  # noqa: BLE001 - any import problem just means "no estimate"
        return {"error": f"trainer.plan not importable ({exc!r}); run from the repo root"}
    shape = PRESETS["8B" if args.shape == "llama8b" else "270M"]
    res = plan(
        PlanRequest(
            shape=shape, seq_len=args.seq, batch_size=args.batch, rank=args.rank, upcast_fp32=upcast,
            loss_impl=loss_impl, autocast=autocast, loss_token_fraction=loss_fraction,
        )
    )
    return {
        "peak_allocated_gib": round(res.peak_allocated_gib, 3),
        "peak_reserved_gib": round(res.peak_reserved_gib, 3),
        "total_gib": round(res.total_gib, 3),
        "static_gib": round(sum(res.term(k).gib for k in ("nf4_weights", "quant_constants", "embeddings", "norms")), 3),
        "peak_phase": res.peak_phase,
        "upcast_fp32": upcast,
        "loss_impl": loss_impl,
        "autocast": autocast,
        "terms": {t.key: round(t.gib, 3) for t in res.terms},
    }


def _finish(result: dict, args, tmp: Path | None, marks: tuple[float, float, float]) -> int:
    """Add the phase timings and the planner's estimate, write the JSON, drop the temp model."""
    t_start, t_built, t_loaded = marks
    result["seconds"] = {
        "build_and_save": round(t_built - t_start, 1),
        "load_quantised": round(t_loaded - t_built, 1),
        "total": round(time.perf_counter() - t_start, 1),
    }
    _add_estimate(result)
    _write(result, args.out)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _write(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def _tiny_tokenizer():
    """A three-token tokenizer: the rows are token ids already, trl only needs a pad token."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _train_trl(args, model) -> dict:
    """Train ``model`` (loaded NF4) with trl's SFTTrainer, ragtune's recipe; memory over ``train()`` only."""
    import random

    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    gc_kwargs = {"use_reentrant": False}
    if args.kbit_prepare:  # what trainer/train.py's load_training_model does
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=gc_kwargs
        )
    vocab = model.get_input_embeddings().weight.shape[0]
    rows = args.steps * args.batch * args.grad_accum
    prompt = min(args.prompt_len, args.seq - 2)
    rng = random.Random(0)
    data = Dataset.from_dict({
        "input_ids": [[rng.randrange(3, vocab) for _ in range(args.seq)] for _ in range(rows)],
        "completion_mask": [[0] * prompt + [1] * (args.seq - prompt) for _ in range(rows)],
    })
    work = Path(tempfile.mkdtemp(prefix="qlora_peak_trl_"))
    cfg = SFTConfig(
        output_dir=str(work), max_steps=args.steps, per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.grad_accum, learning_rate=2e-4, max_grad_norm=1.0,
        optim="paged_adamw_8bit" if cuda else "adamw_torch", gradient_checkpointing=True,
        gradient_checkpointing_kwargs=gc_kwargs, bf16=cuda, use_cpu=not cuda, logging_steps=1,
        save_strategy="no", eval_strategy="no", max_length=args.seq, completion_only_loss=True, packing=False,
        report_to=[], disable_tqdm=True, seed=0,
    )
    lora = LoraConfig(
        r=args.rank, lora_alpha=args.rank, lora_dropout=0.0, bias="none", target_modules=TARGETS, task_type="CAUSAL_LM"
    )
    gib = lambda b: round(b / GIB, 3)  # noqa: E731
    steps: list[dict] = []

    class Peaks(TrainerCallback):
        def on_step_end(self, _args, state, control, **kw):
            if cuda:
                free, total = torch.cuda.mem_get_info()
                steps.append({
                    "step": state.global_step,
                    "max_reserved_gib": gib(torch.cuda.max_memory_reserved()),
                    "max_allocated_gib": gib(torch.cuda.max_memory_allocated()),
                    "device_used_gib": gib(total - free),
                })

    trainer = SFTTrainer(
        model=model, args=cfg, train_dataset=data, processing_class=_tiny_tokenizer(), peft_config=lora,
        callbacks=[Peaks()],
    )
    tmodel = trainer.model
    trainable = sum(p.numel() for p in tmodel.parameters() if p.requires_grad)
    lora_dtypes = sorted({str(p.dtype) for p in tmodel.parameters() if p.requires_grad})
    embed_dtype = str(tmodel.get_input_embeddings().weight.dtype)
    batch0 = next(iter(trainer.get_train_dataloader()))
    label_fraction = float((batch0["labels"][:, 1:] != -100).float().mean())
    if cuda:
        torch.cuda.synchronize()
        setup_allocated = torch.cuda.memory_allocated()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
    result = {
        "versions": {
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "trl": trl.__version__, **_bnb_version(),
        },
        "recipe": "trainer/train.py: SFTTrainer, bf16 autocast, completion_only_loss, paged_adamw_8bit, GC, LoRA via peft_config",
        "prompt_len": prompt,
        "grad_accum": args.grad_accum,
        "loss_token_fraction": round(label_fraction, 4),
        "trainable_params": trainable,
        "lora_dtypes": lora_dtypes,
        "embedding_dtype": embed_dtype,
        "train_seconds": round(wall, 1),
        "tokens_per_s": round(args.steps * args.grad_accum * args.batch * args.seq / wall, 1),
        "losses": [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h],
        "train_loss": round(out.training_loss, 4),
        "per_step": steps,
    }
    if cuda:
        result.update({
            "allocated_after_setup_gib": gib(setup_allocated),
            "train_peak_reserved_gib": gib(torch.cuda.max_memory_reserved()),
            "train_peak_allocated_gib": gib(torch.cuda.max_memory_allocated()),
            "device_used_gib": max((s["device_used_gib"] for s in steps), default=0.0),
        })
    shutil.rmtree(work, ignore_errors=True)
    return result


def _bnb_version() -> dict:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return {}
    return {"bitsandbytes": bnb.__version__}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare:
        return compare(args.compare)
    try:
        import torch
    except ImportError:
        print("qlora_peak: torch is not installed; skipping (needs a CUDA GPU).")
        return 0
    if not torch.cuda.is_available():
        print("qlora_peak: no CUDA device here; skipping (this benchmark measures GPU memory).")
        return 0

    import bitsandbytes as bnb
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dev = torch.device("cuda")
    t_start = time.perf_counter()
    cfg = _config(args.shape, args.model_dir)
    tmp = None
    if _has_weights(args.model_dir):
        folder = args.model_dir
        weights = "real" if args.shape == "gemma270m" and not (folder / "RANDOM").exists() else "random (reused)"
    else:
        # Random weights: build in bf16 straight on the GPU (init kernels are fast there), save once.
        if args.model_dir is not None:
            folder = args.model_dir
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = tmp = Path(tempfile.mkdtemp(prefix=f"qlora_peak_{args.shape}_"))
        weights = "random"
        torch.manual_seed(0)
        with dev:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        (folder / "RANDOM").write_text("random weights written by bench/qlora_peak.py\n")
        del model
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    t_built = time.perf_counter()

    torch.cuda.reset_peak_memory_stats()
    bnb_cfg = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=bnb_cfg, dtype=torch.bfloat16, device_map={"": 0}
    )
    torch.cuda.synchronize()
    static_gib = torch.cuda.memory_allocated() / GIB
    load_peak_reserved = torch.cuda.max_memory_reserved() / GIB
    t_loaded = time.perf_counter()

    if args.loop == "trl":
        result = {
            "shape": args.shape, "loop": "trl", "weights": weights, "seq": args.seq, "batch": args.batch,
            "rank": args.rank, "steps": args.steps, "kbit_prepare": args.kbit_prepare,
            "gpu": torch.cuda.get_device_name(0),
            "static_after_load_gib": round(static_gib, 3),
        }
        result.update(_train_trl(args, model))
        return _finish(result, args, tmp, (t_start, t_built, t_loaded))

    gc_kwargs = {"use_reentrant": False}
    if args.kbit_prepare:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=gc_kwargs
        )
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.config.use_cache = False
    lora = LoraConfig(r=args.rank, lora_alpha=args.rank, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora_dtypes = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad})
    embed_dtype = str(model.get_input_embeddings().weight.dtype)
    opt = bnb.optim.PagedAdamW8bit([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    torch.cuda.synchronize()
    setup_allocated = torch.cuda.memory_allocated() / GIB
    run_peak_reserved = max(load_peak_reserved, torch.cuda.max_memory_reserved() / GIB)
    run_peak_allocated = torch.cuda.max_memory_allocated() / GIB

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator(device=dev).manual_seed(0)
    step_times, losses, device_used = [], [], 0.0
    for _ in range(args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq), device=dev, generator=gen)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        step_times.append(time.perf_counter() - t0)
        losses.append(round(out.loss.item(), 4))
        free, total = torch.cuda.mem_get_info()
        device_used = max(device_used, (total - free) / GIB)
        del out
    train_peak_reserved = torch.cuda.max_memory_reserved() / GIB
    train_peak_allocated = torch.cuda.max_memory_allocated() / GIB
    tokens = args.batch * args.seq
    timed = step_times[1:] or step_times  # the first step warms kernels and pages the optimizer in

    result = {
        "shape": args.shape,
        "weights": weights,
        "seq": args.seq,
        "batch": args.batch,
        "rank": args.rank,
        "steps": args.steps,
        "kbit_prepare": args.kbit_prepare,
        "gpu": torch.cuda.get_device_name(0),
        "versions": {
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "bitsandbytes": bnb.__version__,
        },
        "trainable_params": trainable,
        "lora_dtypes": lora_dtypes,
        "embedding_dtype": embed_dtype,
        "static_after_load_gib": round(static_gib, 3),
        "allocated_after_setup_gib": round(setup_allocated, 3),
        "train_peak_reserved_gib": round(train_peak_reserved, 3),
        "train_peak_allocated_gib": round(train_peak_allocated, 3),
        "run_peak_reserved_gib": round(max(run_peak_reserved, train_peak_reserved), 3),
        "run_peak_allocated_gib": round(max(run_peak_allocated, train_peak_allocated), 3),
        "device_used_gib": round(device_used, 3),
        "tokens_per_s": round(tokens / (sum(timed) / len(timed)), 1),
        "step_seconds": [round(t, 3) for t in step_times],
        "losses": losses,
    }
    return _finish(result, args, tmp, (t_start, t_built, t_loaded))


if __name__ == "__main__":
    sys.exit(main())
