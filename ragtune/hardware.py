"""What this machine's processor can do fast, where the choice of dtype depends on it."""

from __future__ import annotations

import functools


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether bf16 matrix products on this CPU run through oneDNN's bf16 kernels.

    Without them (an AVX2-only CPU: no AVX-512 / AVX512-BF16 / AMX) PyTorch falls back to a
    reference GEMM: a 1024^3 bf16 product took 2.65 s against 0.038 s in fp32 on a 2-core AMD
    EPYC with AVX2 only (70x, ``bench/cpu_matmul_dtype.py``), so training there computes in fp32.
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bf16 either
        return False
