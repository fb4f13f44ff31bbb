"""Multi-GPU scaling of ``ragtune train-adapter --gpus N`` (DDP through accelerate), Llama-3.1-8B shape.

    python bench/train_scaling.py [--gpus 1 2] [--steps 30] [--batch 2] [--out FILE]

Runs the real command once per GPU count, on the random-weight 8B shape of ``bench/train_gpu.py``
(built there, reused) and rows of exactly 2,048 tokens, the same per-GPU batch every time; then
reads each adapter's card: tokens/s = steps x batch x GPUs x 2,048 / the training loop's seconds
(``metrics.train_seconds``: the first, slower steps included, alike for every N), the peak GPU
memory and the loss per step. Scaling efficiency = tokens/s(N) / (N x tokens/s(1)). A GPU count
this machine does not have is recorded as blocked, not run. Without CUDA it prints a skip line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
ROW_TOKENS = 2048


def write_inputs(folder: Path, rows: int, batch: int, steps: int) -> tuple[Path, Path]:
    from train_gpu import rows_of

    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": " ".join(f"w{i}" for i in p), "completion": " ".join(f"w{i}" for i in c)})
                            + "\n" for p, c in rows_of("fixed-2048", rows)))
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "max_steps": steps, "per_device_batch_size": batch, "gradient_accumulation_steps": 1,
        "max_seq_length": ROW_TOKENS, "eval_fraction": 0.01, "eval_steps": 100_000, "early_stopping_patience": None,
        "task_eval_limit": 0, "logging_steps": 1, "warmup_ratio": 0.0,
    }))
    return data, recipe


def run(gpus: int, model_dir: Path, data: Path, recipe: Path, home: Path, batch: int) -> dict:
    style = f"scale-{gpus}"
    env = {**os.environ, "RAGTUNE_HOME": str(home), "RAGTUNE_BASE_MODEL": str(model_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ragtune.cli", "train-adapter", "--style", style, "--data", str(data),
           "--config", str(recipe), "--gpus", str(gpus)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"gpus": gpus, "error": (proc.stderr or proc.stdout)[-2500:]}
    card = json.loads((home / "adapters" / style / "card.json").read_text())
    m, compute = card["metrics"], card["compute"]
    tokens = m["steps"] * batch * gpus * ROW_TOKENS
    return {"gpus": gpus, "command": " ".join(cmd[1:]), "steps": m["steps"], "train_seconds": m["train_seconds"],
            "tokens_per_s": tokens / m["train_seconds"], "peak_gpu_memory_gib": compute["peak_gpu_memory_gib"],
            "cost_usd": compute["cost_usd"], "losses": [h["train_loss"] for h in card["history"] if h.get("train_loss")]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2, help="rows per GPU per step")
    ap.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "ragtune-bench-llama8b")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/train_scaling.json")
    args = ap.parse_args()

    import torch

    available = torch.cuda.device_count()
    if available == 0:
        print("train_scaling: no CUDA device here; skipped (this bench needs GPUs)")
        return 0
    from train_gpu import build_model

    if not (args.model_dir / "config.json").is_file():
        print(f"building the random Llama-3.1-8B-shape model in {args.model_dir} …", flush=True)
        build_model(args.model_dir)
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    data, recipe = write_inputs(work, args.batch * args.steps * max(args.gpus) + 8, args.batch, args.steps)
    out = {"bench": "train_scaling", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "command": " ".join(["python", *sys.argv]), "gpu": torch.cuda.get_device_name(0),
           "gpus_here": available, "batch_per_gpu": args.batch, "runs": []}
    for n in args.gpus:
        if n > available:
            out["runs"].append({"gpus": n, "blocked": f"this machine has {available} GPU(s)"})
        else:
            out["runs"].append(run(n, args.model_dir, data, recipe, work / f"home-{n}", args.batch))
        print(json.dumps({k: v for k, v in out["runs"][-1].items() if k != "losses"}), flush=True)
    one = next((r["tokens_per_s"] for r in out["runs"] if r["gpus"] == 1 and "tokens_per_s" in r), None)
    for r in out["runs"]:
        if one and "tokens_per_s" in r:
            r["scaling_efficiency"] = r["tokens_per_s"] / (r["gpus"] * one)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
