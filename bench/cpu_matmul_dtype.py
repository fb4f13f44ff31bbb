"""bf16 against fp32 matrix products on this CPU: why CPU training picks its compute dtype.

    python bench/cpu_matmul_dtype.py [--size 1024] [--repeat 5] [--threads 1]

Prints whether PyTorch has native (oneDNN) bf16 kernels here (``ragtune.hardware``), the CPU's
vector capability, and the mean seconds of one size^3 product in each dtype after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def seconds_per_product(dtype, size: int, repeat: int) -> float:
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return (time.perf_counter() - started) / repeat


def main() -> int:
    import torch

    from ragtune.hardware import cpu_has_native_bf16

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fp32 = seconds_per_product(torch.float32, args.size, args.repeat)
    bf16 = seconds_per_product(torch.bfloat16, args.size, args.repeat)
    print(json.dumps({"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "native_bf16": cpu_has_native_bf16(), "size": args.size, "threads": args.threads,
                      "fp32_s": round(fp32, 4), "bf16_s": round(bf16, 4), "bf16_over_fp32": round(bf16 / fp32, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
