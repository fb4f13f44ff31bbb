"""Training speed on CPU with the default recipe, as `ragtune train-adapter` runs it.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_cpu.py [--rows 64] [--steps 12] [--recipe default]

Trains the packaged base model on the first ``--rows`` rows of data/train/e2e-json.jsonl for
``--steps`` optimizer steps through ``trainer.train.train_adapter`` (the CLI's code path) and records
the wall time of every optimizer step with a callback. Reported: seconds per step and supervised +
prompt tokens per second after the first two steps (warm-up), the runtime choices the trainer made
on this machine (micro-batch, accumulation, checkpointing) and the whole command's wall time.
Writes bench/results/train_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--recipe", default="default", help="'default' (TrainConfig defaults) or a recipe path")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/train_cpu.json")
    args = ap.parse_args()

    from transformers import AutoTokenizer, TrainerCallback

    from ragtune.models import prepare_base_model
    from ragtune.settings import Settings
    from trainer.config import load_config
    from trainer.train import train_adapter

    work = Path(tempfile.mkdtemp(prefix="bench-train-cpu-"))
    rows = [json.loads(line) for line in (REPO / "data/train/e2e-json.jsonl").read_text().splitlines()][: args.rows]
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = Settings(home=work / "home")
    tokenizer = AutoTokenizer.from_pretrained(prepare_base_model(settings, progress=False))
    tokens_per_row = statistics.mean(len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) for r in rows)

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_begin(self, args_, state, control, **kw):
            if not self.ends:
                self.ends.append(time.perf_counter())

        def on_step_end(self, args_, state, control, **kw):
            self.ends.append(time.perf_counter())

    recipe = None if args.recipe == "default" else Path(args.recipe)
    config = load_config(recipe, style="bench", data=data, output_dir=work / "adapter", max_steps=args.steps,
                         task_eval_limit=0, eval_steps=10_000, early_stopping_patience=None)
    timer = StepTimes()
    started = time.perf_counter()
    result = train_adapter(config, settings, callbacks=[timer], progress=False)
    wall = time.perf_counter() - started
    steps = [b - a for a, b in zip(timer.ends, timer.ends[1:])]
    effective = result.card.effective
    rows_per_step = config.per_device_batch_size * config.gradient_accumulation_steps
    steady = steps[2:] or steps
    s_per_step = statistics.median(steady)
    out = {
        "bench": "train_cpu", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "cpu": platform.processor() or platform.machine(),
        "recipe": args.recipe, "rows": len(rows), "steps": len(steps), "rows_per_step": rows_per_step,
        "tokens_per_row_mean": tokens_per_row, "effective": effective,
        "seconds_per_step_median": s_per_step, "seconds_per_step_all": steps,
        "tokens_per_second": rows_per_step * tokens_per_row / s_per_step,
        "train_adapter_wall_s": wall, "libraries": result.card.libraries,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("seconds_per_step_median", "tokens_per_second", "train_adapter_wall_s",
                                          "rows_per_step", "tokens_per_row_mean")}, indent=2))
    print(f"effective: micro-batch {effective.get('micro_batch')} x {effective.get('accumulation')}, "
          f"checkpointing {effective.get('gradient_checkpointing')}")


if __name__ == "__main__":
    main()
