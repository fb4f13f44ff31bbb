"""Fixtures for trainer tests: the real base tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer(base_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_dir)
