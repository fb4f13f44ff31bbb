"""Where a step of ragtune's CUDA trainer goes: torch.profiler over two steps of the bench worker.

    python bench/train_gpu_profile.py [DATA] [BATCH] [RECIPE] [TRACE]   (default: fixed-2048 1 ragtune-sdpa)

Runs ``bench/train_gpu.py``'s ragtune worker with RECIPE's overrides (``train_adapter`` as ``ragtune train-adapter`` runs it)
for 8 steps on the random Llama-3.1-8B-shape model that ``bench/train_gpu.py`` builds, profiles steps
6-7, and prints the kernel table sorted by GPU time with the total GPU time of the two steps. Compare
that total with the steps' wall time: the difference is time the GPU waited for the CPU; the
second table (by CPU time) says where the host spends it. TRACE, if given, is where the Chrome
trace of the two steps goes (gzip it for the trip back). Without CUDA it prints a skip line and
exits 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_gpu  # noqa: E402 - the bench's worker and model folder


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("train_gpu_profile: no CUDA device here; skipped (this bench needs one GPU)")
        return 0
    from torch.profiler import ProfilerActivity, profile, schedule
    from transformers import TrainerCallback

    given, defaults = sys.argv[1:4], ["fixed-2048", "1", "ragtune-sdpa"]
    data, batch, recipe = given + defaults[len(given):]
    trace = sys.argv[4] if len(sys.argv) > 4 else None
    model_dir = train_gpu.MODEL_DIR
    if not (model_dir / "config.json").is_file():
        train_gpu.build_model(model_dir)

    class Profiled(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                                schedule=schedule(wait=5, warmup=1, active=2, repeat=1))
            self.prof.__enter__()

        def on_step_end(self, args, state, control, **kw):
            self.prof.step()

        def on_train_end(self, args, state, control, **kw):
            self.prof.__exit__(None, None, None)
            table = self.prof.key_averages()
            print(table.table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=70))
            gpu_ms = sum(e.self_device_time_total for e in table) / 1e3
            print(f"PROF total self cuda ms over 2 steps: {gpu_ms:.0f}")
            print(table.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=70))
            if trace:
                self.prof.export_chrome_trace(trace)

    result = train_gpu.worker_ragtune(model_dir, data, int(batch), 8, 3, train_gpu.OVERRIDES[recipe],
                                       (Profiled(),))
    print("PROF", {k: v for k, v in result.items() if k != "losses"}, result["losses"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
