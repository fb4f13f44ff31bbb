"""The base-weights hash tells apart two fine-tunes of one architecture (same names and sizes)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from ragtune.models import base_model_hash
from ragtune.settings import Settings


def _model(folder, seed: int, config: dict | None = None):
    folder.mkdir()
    torch.manual_seed(seed)
    save_file({"w": torch.randn(256, 256), "b": torch.randn(256)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "gemma3_text", "hidden_size": 256}))
    return folder


def _hash(tmp_path, folder) -> str:
    return base_model_hash(Settings(home=tmp_path / "home", base_model=str(folder)))


def test_same_shapes_other_weights_hash_differently(tmp_path):
    a, b = _model(tmp_path / "a", seed=0), _model(tmp_path / "b", seed=1)
    assert (a / "model.safetensors").stat().st_size == (b / "model.safetensors").stat().st_size
    assert _hash(tmp_path, a) != _hash(tmp_path, b)


def test_the_same_weights_hash_the_same_wherever_they_are(tmp_path):
    assert _hash(tmp_path, _model(tmp_path / "a", seed=3)) == _hash(tmp_path, _model(tmp_path / "b", seed=3))


def test_a_changed_config_changes_the_hash(tmp_path):
    a = _model(tmp_path / "a", seed=3)
    b = _model(tmp_path / "b", seed=3, config={"model_type": "gemma3_text", "hidden_size": 256, "rope_theta": 1.0})
    assert _hash(tmp_path, a) != _hash(tmp_path, b)


def test_a_one_tensor_change_deep_in_the_file_is_seen(tmp_path):
    a = _model(tmp_path / "a", seed=3)
    b = tmp_path / "b"
    b.mkdir()
    (b / "config.json").write_text((a / "config.json").read_text())
    torch.manual_seed(3)
    w, bias = torch.randn(256, 256), torch.randn(256)
    w[-1, -64:] += 1.0  # the last 256 bytes of the weight: inside the last sample
    save_file({"w": w, "b": bias}, str(b / "model.safetensors"))
    assert _hash(tmp_path, a) != _hash(tmp_path, b)
