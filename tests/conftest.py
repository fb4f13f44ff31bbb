"""Shared fixtures: the real base model (converted once into the repo's .ragtune cache)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
# The model cache is shared with `make demo` so a machine converts the GGUF once.
CACHE_HOME = Path(os.environ.get("RAGTUNE_TEST_HOME", REPO / ".ragtune"))


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    from ragtune.models import prepare_base_model
    from ragtune.settings import Settings

    return prepare_base_model(Settings(home=CACHE_HOME), progress=False)


@pytest.fixture()
def settings(tmp_path, base_model_dir):
    """Settings with a private store and adapters dir, and the shared converted base model."""
    from ragtune.settings import Settings

    return Settings(home=tmp_path, base_model=str(base_model_dir))


# --- Generation backends (router/backends): one engine of each kind per test session ---------

# The fixed prompt the parity tests and fixtures share.
PARITY_PROMPT = "The capital of France is Paris. The capital of Germany is"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_random_lora_adapter(base_model_dir: Path, out: Path, *, seed: int, std: float, rank: int = 16) -> Path:
    """Save a real peft LoRA adapter for the base model with seeded random, non-zero B matrices.

    peft initialises B to zero (an adapter that changes nothing); random B makes the adapter's
    effect visible in greedy tokens without training. The base weights are irrelevant to the
    adapter's shapes, so the model is built from its config (random init) rather than loaded,
    with a tiny vocabulary: the embedding (168 M of the 268 M parameters) is not a LoRA target.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(base_model_dir)
    config.vocab_size = 256
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.name_or_path = str(base_model_dir)  # recorded as base_model_name_or_path
    lora = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    peft_model.save_pretrained(out, save_embedding_layers=False)
    del peft_model, model
    return out


@pytest.fixture(scope="session")
def lora_adapter_dir(tmp_path_factory, base_model_dir) -> Path:
    """A rank-16 LoRA adapter on all seven projections; changes the greedy output of PARITY_PROMPT.

    std 0.05 changes the output from the 3rd token on and stays readable (0.1 ends in EOS after 6
    tokens, 0.2 is gibberish). The seed is chosen: vLLM and peft both run the LoRA in bf16, whose
    logits are quantised to 0.125 here, so an adapter whose greedy path passes an exact tie
    can flip a token between engines (seen for seeds 1234, 99 and 5 within 16 tokens). Seeds 314
    and 42 agreed for 24/24 tokens with peft in both fp32 and bf16 adapter modes.
    """
    return make_random_lora_adapter(base_model_dir, tmp_path_factory.mktemp("adapters") / "lora-a", seed=314, std=0.05)


@pytest.fixture(scope="session")
def lora_adapter_dir_b(tmp_path_factory, base_model_dir) -> Path:
    """A second, different adapter (other seed), for mixed batches with two adapters."""
    return make_random_lora_adapter(base_model_dir, tmp_path_factory.mktemp("adapters") / "lora-b", seed=42, std=0.05)


@pytest.fixture(scope="session")
def vllm_backend(tmp_path_factory, base_model_dir):
    """The one in-process vLLM engine of the test session (start-up ~70 s on CPU).

    Shared by every test folder: tests that load adapters into it must unload them again.
    """
    from ragtune.settings import Settings
    from router.backends.vllm_local import VLLMBackend

    backend = VLLMBackend(Settings(home=tmp_path_factory.mktemp("vllm-home"), base_model=str(base_model_dir)), base_model_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def hf_backend(tmp_path_factory, base_model_dir):
    """The transformers+peft reference engine, loaded once per session."""
    from ragtune.settings import Settings
    from router.backends.hf import TransformersBackend

    backend = TransformersBackend(
        Settings(home=tmp_path_factory.mktemp("hf-home"), base_model=str(base_model_dir), backend="transformers"),
        base_model_dir,
    )
    yield backend
    backend.close()


@contextlib.contextmanager
def service_process(home: Path, base_model_dir: Path, *, backend: str = "transformers", env: dict | None = None,
                    ready_s: float = 300):
    """``ragtune serve`` in its own process (the transformers engine starts in seconds); yields
    (base URL, Popen). Killed at the end if still running."""
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "RAGTUNE_HOME": str(home),
                "RAGTUNE_BASE_MODEL": str(base_model_dir), "RAGTUNE_BACKEND": backend, **(env or {})}
    log = open(home / "service.log", "ab")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen([sys.executable, "-m", "ragtune.cli", "serve", "--port", str(port)], env=full_env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            assert proc.poll() is None, f"the service exited ({proc.returncode}); see {home / 'service.log'}"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


def cli_app(register):
    """A typer app with one part's commands mounted, as ``ragtune.cli`` mounts them."""
    import typer

    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps typer in multi-command mode, as in ragtune.cli
    def _noop() -> None:
        pass

    return app


def soak_record(test: str, **figures) -> None:
    """Append a test's figures to $RAGTUNE_SOAK_REPORT (make soak: the numbers in RELIABILITY.md)."""
    import json

    path = os.environ.get("RAGTUNE_SOAK_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": test, **figures}) + "\n")
