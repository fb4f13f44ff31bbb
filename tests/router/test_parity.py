"""`ragtune parity`: vLLM+adapter vs transformers+peft+adapter greedy tokens, for the shipped adapters.

Uses the session's engines (one vLLM, one transformers); the shipped adapters are loaded into
both and unloaded again afterwards (the vLLM engine is shared with other test folders).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.parity import ParityReport, PromptParity, parity_prompts, style_prompts

REPO = Path(__file__).resolve().parents[2]
TOKENS = 16
MIN_IDENTICAL = 8


def test_prompt_parity_first_divergence_pure():
    assert PromptParity("g", "p", [1, 2, 3], [1, 2, 3]).first_divergence is None
    assert PromptParity("g", "p", [1, 2, 3], [1, 9, 3]).first_divergence == 1
    assert PromptParity("g", "p", [1, 2], [1, 2, 3]).first_divergence == 2  # one engine hit EOS first
    report = ParityReport("a", 3, 2, [PromptParity("g", "p", [1, 2, 3], [1, 2, 4]),
                                      PromptParity("g", "p", [1], [1])])
    assert report.ok and "1/2 prompts identical" in report.summary()
    report.results.append(PromptParity("g", "p", [5, 2, 3], [1, 2, 3]))
    assert not report.ok and "MISMATCH" in report.summary()


def test_parity_prompts_come_from_the_adapters_training_style():
    prompts = parity_prompts(REPO / "adapters/e2e-json", 6)
    assert [k for k, _ in prompts] == ["style"] * 4 + ["generic"] * 2
    assert all("restaurant" in p for k, p in prompts if k == "style")
    assert len(style_prompts(REPO / "adapters/bible-asv", 2)) == 2
    assert style_prompts(REPO / "adapters/does-not-exist", 2) == []


@pytest.fixture(scope="module")
def shipped(vllm_backend, hf_backend):
    names = ("e2e-json", "bible-asv")
    for backend in (vllm_backend, hf_backend):
        for name in names:
            backend.load_adapter(name, REPO / "adapters" / name)
    yield vllm_backend, hf_backend
    for backend in (vllm_backend, hf_backend):
        for name in names:
            if name in backend.adapter_names():
                backend.unload_adapter(name)


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["e2e-json", "bible-asv"])
def test_shipped_adapters_match_peft(shipped, base_model_dir, adapter):
    from router.parity import check_parity
    from router.prompt import PromptBuilder

    vllm, hf = shipped
    report = check_parity(vllm, hf, adapter, parity_prompts(REPO / "adapters" / adapter, 6),
                          PromptBuilder(base_model_dir), tokens=TOKENS, min_identical=MIN_IDENTICAL)
    print(report.summary())
    for r in report.results:
        print(f"  [{r.kind}] {r.prompt[:50]!r}: {r.describe()}")
    # Measured 2026-11-30: e2e-json 6/6 prompts identical for 16 tokens (its first version: 5/6, one
    # diverged at token 12); bible-asv 6/6 identical (two generic prompts end in EOS after 8 tokens).
    # Every prompt must agree on at least 8 greedy tokens (an exact bf16 logit tie may flip a
    # later token between the engines; a LoRA bug shows as an early or widespread divergence).
    assert report.ok, report.summary()
    identical = sum(r.first_divergence is None for r in report.results)
    assert identical >= len(report.results) - 1, report.summary()


def test_parity_cli_unknown_adapter_is_a_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAGTUNE_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "ragtune.cli", "parity", "no-such-adapter"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no-such-adapter" in done.stdout + done.stderr
