"""Shared fixtures: the real base model (converted once into the repo's .ragtune cache)."""

from __future__ import annotations

import os
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
