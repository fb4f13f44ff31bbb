"""Router-test fixtures: both engines with the two test adapters loaded, and reference outputs."""

from __future__ import annotations

import pytest

from tests.conftest import PARITY_PROMPT

N_TOKENS = 16  # parity is checked on the first 16 greedy tokens
ADAPTER_A, ADAPTER_B = "test-a", "test-b"


@pytest.fixture(scope="session")
def engines(vllm_backend, hf_backend, lora_adapter_dir, lora_adapter_dir_b):
    """(vllm, transformers) with test-a and test-b loaded; unloaded again at the end of the session
    because the vLLM engine is shared with other test folders."""
    for backend in (vllm_backend, hf_backend):
        backend.load_adapter(ADAPTER_A, lora_adapter_dir)
        backend.load_adapter(ADAPTER_B, lora_adapter_dir_b)
    yield vllm_backend, hf_backend
    for backend in (vllm_backend, hf_backend):
        for name in (ADAPTER_A, ADAPTER_B):
            if name in backend.adapter_names():
                backend.unload_adapter(name)


@pytest.fixture(scope="session")
def reference(engines):
    """transformers+peft greedy Generations for PARITY_PROMPT: {None: base, 'test-a': ..., 'test-b': ...}."""
    from router.backends.base import GenerationRequest

    _, hf = engines
    keys = [None, ADAPTER_A, ADAPTER_B]
    outs = hf.generate([GenerationRequest(prompt=PARITY_PROMPT, max_tokens=N_TOKENS, adapter=k) for k in keys])
    return dict(zip(keys, outs, strict=True))
