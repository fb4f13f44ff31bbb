"""bench/train_gpu.py's ragtune recipes: valid trainer configs, and A/B patches that restore the
behaviour they name (checked on CPU; the bench itself needs a GPU)."""

from __future__ import annotations

import pytest

from tests.bench.helpers import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("train_gpu")


def test_every_recipe_is_a_valid_train_config(bench):
    from trainer.config import TrainConfig

    for name, overrides in bench.OVERRIDES.items():
        TrainConfig(style="bench", data="rows.jsonl", **overrides)  # raises on a field the trainer lost
    assert set(bench.RECIPE_PATCHES) <= set(bench.OVERRIDES)


def test_nan_filter_recipe_turns_transformers_filter_back_on(bench, monkeypatch, tmp_path):
    import trainer.train
    from trainer.config import TrainConfig, resolve_runtime

    monkeypatch.setattr(trainer.train, "sft_config", trainer.train.sft_config)  # restored after the test
    config = TrainConfig(style="s", data=tmp_path / "rows.jsonl")
    runtime = resolve_runtime(config, cuda=False)
    assert trainer.train.sft_config(config, runtime, tmp_path, False).logging_nan_inf_filter is False
    bench.RECIPE_PATCHES["ragtune-nan-filter"]()
    assert trainer.train.sft_config(config, runtime, tmp_path, False).logging_nan_inf_filter is True


def test_bnb_syncs_recipe_keeps_the_optimizer_syncs(bench, monkeypatch):
    from contextlib import nullcontext

    import trainer.train

    monkeypatch.setattr(trainer.train, "bnb_steps_without_syncs", trainer.train.bnb_steps_without_syncs)
    bench.RECIPE_PATCHES["ragtune-bnb-syncs"]()
    assert trainer.train.bnb_steps_without_syncs is nullcontext
