"""QLoRA training speed and memory on one GPU: the plain HF recipe, ragtune's trainer, Unsloth.

    python bench/train_gpu.py [--recipes hf ragtune-plain ragtune ragtune-offload unsloth]
                              [--data fixed-2048@1 long-tail@8 e2e-json@64] [--steps 20] [--warmup 5]
                              [--unsloth-path DIR] [--out FILE]

One call, one GPU, one model shape (Llama-3.1-8B: hidden 4096, 32 layers, intermediate 14336, 32/8
heads, vocab 128256, untied; random bf16 weights — memory and speed do not depend on the values),
built once and saved with a word-level tokenizer of the same vocabulary, so text rows of "w<id>"
words are exactly as many tokens as they have words. Every (recipe, data) pair runs in its own
process (clean allocator, clean peaks); the driver collects their JSON and rewrites ``--out``
after each run. Recipes:

  hf               the plain baseline: transformers + peft + bitsandbytes, NF4 + double quant, bf16
                   compute, prepare_model_for_kbit_training with gradient checkpointing, LoRA r=16 on
                   all seven projections, PagedAdamW8bit, rows padded to the longest in the batch,
                   transformers' own loss on the full logits
  ragtune          ``trainer.train.train_adapter`` exactly as ``ragtune train-adapter`` runs it on CUDA
                   (trl SFTTrainer, completion-only loss through trl's chunked LM head, paged 8-bit
                   AdamW without per-parameter syncs, card and publish) with the default recipe:
                   decoder layers compiled (torch.compile), padding-free batches through flex
                   attention; at one row per pass no packing (SDPA) and activation offloading
  ragtune-varlen   the default with ``attention: varlen`` (padding-free rows through PyTorch's
                   FlashAttention varlen kernel)
  ragtune-ckpt-in-graph  the default with ``checkpoint_in_graph: true`` (checkpointing inside each
                   compiled layer's graph: the backward recomputes only what it reads)
  ragtune-next     both of the above
  ragtune-budget15 the default with ``memory_budget_gib: 15`` (the planner picks the fewest layers to
                   checkpoint within 15 GiB; the others skip their recompute)
  ragtune-eager    the default with ``torch_compile: false`` (liger's kernels then, the recipe before)
  ragtune-compile-liger  the default + ``liger_kernels: true``
  ragtune-plain    ``liger_kernels: false, padding_free: false, torch_compile: false``
  ragtune-sdpa     the default with ``attention: sdpa`` (padding-free rows through SDPA's masked kernel)
  ragtune-offload  the default + ``activation_offloading: true`` (``ragtune-no-offload``: false)
  ragtune-bnb-syncs  the default with bitsandbytes' per-parameter device synchronisation in the
                   8-bit optimizer step left in (the recipe before; the trainer now drops it)
  ragtune-nan-filter  the default with transformers' NaN filter on the loss left on (a host read
                   of every step's loss after the backward, so a device sync before the optimizer
                   step; the recipe before; the trainer now turns it off)
  ragtune-fixed-segments  the default with the caching allocator's fixed segments
                   (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:False``; the trainer asks for
                   expandable ones where the variable is unset)
  unsloth          Unsloth's FastLanguageModel (4-bit, its gradient checkpointing, LoRA on the same
                   seven projections, PagedAdamW8bit) in the same loop as ``hf``; it pins older
                   transformers/trl/datasets, so its worker runs with ``--unsloth-path`` first on
                   PYTHONPATH (an environment of its own, same machine, same call)
  unsloth-no-gc    the same without gradient checkpointing (``use_gradient_checkpointing=False``):
                   Unsloth's fastest setting where the activations fit, the counterpart of
                   ``ragtune-budget15`` when comparing at an equal memory budget

Data ``NAME@BATCH`` (lengths in bench/train_gpu_lengths.json: prompt/completion token counts of the
shipped training rows under the base model's tokenizer, and a seeded long-tail): ``fixed-2048``
(every row 2,048 tokens), ``e2e-json``, ``bible-asv``, ``long-tail`` (real lengths, rows drawn in a
seeded order). Every recipe sees the same token ids (ragtune's template adds a few prompt tokens).
Reported per run: peak reserved / allocated GiB over the training steps, tokens/s over the steps
after ``--warmup`` (real tokens, padding excluded; each step timed from its start, batch in hand,
to the end of its optimizer step, data loading and logging excluded, in every loop alike: up to
call 19 of the results file ragtune's steps were timed end to end, its collation and per-step
logging included, the manual loop's not), the loss per step, and MFU =
6 x matmul parameters x tokens/s / the bf16 matmul peak measured in the same call (an 8192^3
torch.matmul; attention FLOPs and the recompute of checkpointing are not counted). Without CUDA it
prints a skip line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GIB = 2**30
MODEL_DIR = Path(tempfile.gettempdir()) / "ragtune-bench-llama8b"  # the random model, built once per machine
VOCAB = 128256
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OVERRIDES = {"ragtune": {}, "ragtune-plain": {"liger_kernels": False, "padding_free": False, "torch_compile": False},
             "ragtune-eager": {"torch_compile": False}, "ragtune-compile-liger": {"liger_kernels": True},
             "ragtune-sdpa": {"attention": "sdpa"}, "ragtune-varlen": {"attention": "varlen"},
             "ragtune-ckpt-in-graph": {"checkpoint_in_graph": True},
             "ragtune-next": {"attention": "varlen", "checkpoint_in_graph": True},
             "ragtune-budget15": {"memory_budget_gib": 15},
             "ragtune-offload": {"activation_offloading": True},
             "ragtune-no-offload": {"activation_offloading": False},
             "ragtune-fixed-segments": {}, "ragtune-bnb-syncs": {}, "ragtune-nan-filter": {}}
# Environment of a recipe's worker process (the trainer leaves a PYTORCH_CUDA_ALLOC_CONF it finds alone).
RECIPE_ENV = {"ragtune-fixed-segments": {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}}
UNSLOTH = {"unsloth": "unsloth", "unsloth-no-gc": False}  # recipe -> use_gradient_checkpointing


def keep_bnb_step_syncs() -> None:
    """The default with bitsandbytes' per-parameter ``torch.cuda.synchronize()`` in the 8-bit
    optimizer step left in (the trainer drops it for the training call: ``bnb_steps_without_syncs``)."""
    import trainer.train

    trainer.train.bnb_steps_without_syncs = nullcontext


def keep_nan_filter() -> None:
    """The default with transformers' ``logging_nan_inf_filter`` on (the trainer turns it off)."""
    import trainer.train

    arguments = trainer.train.sft_config

    def with_filter(*args, **kwargs):
        sft_args = arguments(*args, **kwargs)
        sft_args.logging_nan_inf_filter = True
        return sft_args

    trainer.train.sft_config = with_filter


# What a recipe changes in the worker process before training (experiments outside the config).
RECIPE_PATCHES = {"ragtune-bnb-syncs": keep_bnb_step_syncs, "ragtune-nan-filter": keep_nan_filter}
# The recorded prompt lengths include the trainer's template; this many are taken off for the ids.
# Under the word-level tokenizer ragtune's rows then come out 5 tokens longer than the manual
# loop's (template words and EOS: 2,040 against 2,035 per fixed row, in bench/results).
TEMPLATE_TOKENS = 12


def parse_data(spec: str) -> tuple[str, int]:
    name, _, batch = spec.partition("@")
    return name, int(batch or 1)


def rows_of(data: str, n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """``n`` rows of (prompt ids, completion ids) of a data shape: seeded lengths and ids."""
    if data == "fixed-2048":
        lengths = [(16, 2032)] * n
    else:
        pairs = json.loads((REPO / "bench/train_gpu_lengths.json").read_text())[data]
        pick = random.Random(seed)
        lengths = [tuple(pick.choice(pairs)) for _ in range(n)]
    ids = random.Random(seed + 1)
    return [([ids.randrange(4, VOCAB) for _ in range(max(1, p - TEMPLATE_TOKENS))],
             [ids.randrange(4, VOCAB) for _ in range(max(1, c - 1))]) for p, c in lengths]


def build_model(folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    config = LlamaConfig(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=VOCAB, tie_word_embeddings=False,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    torch.manual_seed(0)  # the same weights on every machine: losses compare across calls
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, VOCAB)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                            unk_token="<unk>").save_pretrained(folder)


def matmul_peak_tflops() -> float:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    return 20 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12


# ---------------------------------------------------------------------------------------------
# Workers (one process each)


def worker_hf(model_dir: Path, data: str, batch: int, steps: int, warmup: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=q, dtype=torch.bfloat16,
                                                 device_map={"": 0})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    return manual_loop(model, data, batch, steps, warmup)


def worker_unsloth(model_dir: Path, data: str, batch: int, steps: int, warmup: int,
                   checkpointing: str | bool = "unsloth") -> dict:
    import unsloth  # noqa: F401 - first, so that it patches transformers before anything imports it
    import torch
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(model_name=str(model_dir), max_seq_length=2048,
                                                 dtype=torch.bfloat16, load_in_4bit=True)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0, bias="none",
                                             target_modules=TARGETS, use_gradient_checkpointing=checkpointing,
                                             random_state=0)
    result = manual_loop(model, data, batch, steps, warmup)
    result["unsloth"] = unsloth.__version__
    return result


def manual_loop(model, data: str, batch: int, steps: int, warmup: int) -> dict:
    """The plain training loop: rows padded to the batch's longest, loss on completion tokens."""
    import bitsandbytes as bnb
    import torch

    opt = bnb.optim.PagedAdamW8bit([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    rows = rows_of(data, batch * steps)
    model.train()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times, tokens, losses = [], [], []
    for s in range(steps):
        chunk = rows[s * batch:(s + 1) * batch]
        longest = max(len(p) + len(c) for p, c in chunk)
        ids = torch.zeros(batch, longest, dtype=torch.long)
        labels = torch.full((batch, longest), -100, dtype=torch.long)
        mask = torch.zeros(batch, longest, dtype=torch.long)
        for i, (p, c) in enumerate(chunk):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p): len(p) + len(c)] = torch.tensor(c)
            mask[i, : len(p) + len(c)] = 1
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model(input_ids=ids.cuda(), attention_mask=mask.cuda(), labels=labels.cuda())
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        tokens.append(int(mask.sum()))
        losses.append(float(out.loss))
    return _summary(times, tokens, warmup, losses, batch)


def worker_ragtune(model_dir: Path, data: str, batch: int, steps: int, warmup: int, overrides: dict,
                   extra_callbacks: tuple = ()) -> dict:
    import torch
    from transformers import TrainerCallback

    from ragtune.settings import Settings
    from trainer.config import load_config
    from trainer.train import train_adapter

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    # The same rows as the manual loop's, and 8 more for the held-out split; the trainer draws its
    # batches in its own seeded order (the same for every ragtune recipe).
    rows = [{"prompt": " ".join(f"w{i}" for i in p), "completion": " ".join(f"w{i}" for i in c)}
            for p, c in rows_of(data, batch * steps) + rows_of(data, 8, seed=99)]
    file = work / "rows.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Probe(TrainerCallback):
        """Times each optimizer step as ``manual_loop`` does: from the step's start, its batch in
        hand and the device idle, to the end of its optimizer step. The Trainer fetches (collates)
        a step's batches before ``on_step_begin`` and logs after ``on_step_end``, so data loading
        and logging fall outside, as the manual loop's batch building and ``float(loss)`` do."""

        def __init__(self):
            self.starts, self.ends, self.tokens, self.losses = [], [], [], []

        def on_train_begin(self, args, state, control, **kw):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kw):
            torch.cuda.synchronize()
            self.starts.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs and "loss" in logs:
                self.tokens.append(float(logs["num_tokens"]))
                self.losses.append(float(logs["loss"]))

        def on_train_end(self, args, state, control, **kw):
            self.peak = (torch.cuda.max_memory_reserved() / GIB, torch.cuda.max_memory_allocated() / GIB)

    settings = Settings(home=work / "home", base_model=str(model_dir))
    config = load_config(None, style="bench", data=file, output_dir=work / "adapter", max_steps=steps,
                         per_device_batch_size=batch, gradient_accumulation_steps=1, max_seq_length=2048,
                         eval_fraction=0.01, eval_steps=100_000, early_stopping_patience=None, task_eval_limit=0,
                         logging_steps=1, warmup_ratio=0.0, **overrides)
    probe = Probe()
    train_adapter(config, settings, callbacks=[probe, *extra_callbacks], progress=False)
    times = [end - start for start, end in zip(probe.starts, probe.ends, strict=True)]
    cumulative = probe.tokens
    tokens = [int(b - a) for a, b in zip([0.0, *cumulative], cumulative)]
    result = _summary(times, tokens, warmup, probe.losses, batch)
    result["train_peak_reserved_gib"], result["train_peak_allocated_gib"] = probe.peak
    return result


def _summary(times: list[float], tokens: list[int], warmup: int, losses: list[float], batch: int) -> dict:
    import torch

    steady_t, steady_n = times[warmup:], tokens[warmup:len(times)]
    return {
        "batch": batch, "steps": len(times), "warmup_steps": warmup,
        "tokens_per_s": sum(steady_n) / sum(steady_t),
        "s_per_step": sum(steady_t) / len(steady_t),
        "tokens_per_step_mean": sum(steady_n) / len(steady_n),
        "train_peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
        "train_peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
        "losses": losses,
        "step_s": [round(t, 3) for t in times],  # the first steps include compiling, where it is on
    }


# ---------------------------------------------------------------------------------------------
# Driver


def main() -> int:
    ap = argparse.ArgumentParser()
    recipes = ["hf", *OVERRIDES, *UNSLOTH]
    ap.add_argument("--recipes", nargs="+", default=recipes, choices=recipes)
    ap.add_argument("--data", nargs="+", default=["fixed-2048@1", "long-tail@8", "e2e-json@64"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    ap.add_argument("--unsloth-path", default=os.environ.get("BENCH_UNSLOTH_PATH"),
                    help="site-packages folder(s) of Unsloth's environment, put first on PYTHONPATH")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/train_gpu.json")
    ap.add_argument("--worker", nargs=2, metavar=("RECIPE", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("train_gpu: no CUDA device here; skipped (this bench needs one GPU)")
        return 0
    if args.worker:
        recipe, (data, batch) = args.worker[0], parse_data(args.worker[1])
        if recipe == "hf":
            result = worker_hf(args.model_dir, data, batch, args.steps, args.warmup)
        elif recipe in UNSLOTH:
            result = worker_unsloth(args.model_dir, data, batch, args.steps, args.warmup, UNSLOTH[recipe])
        else:
            RECIPE_PATCHES.get(recipe, lambda: None)()
            result = worker_ragtune(args.model_dir, data, batch, args.steps, args.warmup, OVERRIDES[recipe])
        print("RESULT " + json.dumps(result))
        return 0

    if not (args.model_dir / "config.json").is_file():
        print(f"building the random Llama-3.1-8B-shape model in {args.model_dir} …", flush=True)
        build_model(args.model_dir)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(args.model_dir)
    # Parameters every token flows through (the embedding is a lookup, not a matmul).
    n_params = 8.03e9 - cfg.vocab_size * cfg.hidden_size
    out = {"bench": "train_gpu", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "command": " ".join(["python", *sys.argv]), "gpu": torch.cuda.get_device_name(0),
           "bf16_matmul_peak_tflops": matmul_peak_tflops(), "params_in_flops": n_params,
           "versions": versions(), "runs": []}
    for spec in args.data:
        for recipe in args.recipes:
            if recipe in UNSLOTH and not args.unsloth_path:
                continue
            run = run_worker(args, recipe, spec)
            if "tokens_per_s" in run:
                run["mfu"] = 6 * n_params * run["tokens_per_s"] / (out["bf16_matmul_peak_tflops"] * 1e12)
            out["runs"].append(run)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in run.items()
                              if k != "losses"}), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=2) + "\n")  # after each run: a cut-off call keeps its runs
    return 0


def run_worker(args, recipe: str, spec: str) -> dict:
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **RECIPE_ENV.get(recipe, {})}
    if recipe in UNSLOTH:
        env["PYTHONPATH"] = os.pathsep.join([args.unsloth_path, str(REPO)])
        env["UNSLOTH_DISABLE_STATISTICS"] = "1"
    cmd = [sys.executable, __file__, "--worker", recipe, spec, "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--model-dir", str(args.model_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    data, batch = parse_data(spec)
    run = {"recipe": recipe, "data": data, "batch": batch, "wall_s": round(time.perf_counter() - started, 1)}
    if line is None:
        run["error"] = (proc.stderr or proc.stdout)[-2500:]
    else:
        run.update(json.loads(line[len("RESULT "):]))
    return run


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "liger-kernel", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # a missing optional library is just not listed
            pass
    return found


if __name__ == "__main__":
    sys.exit(main())
