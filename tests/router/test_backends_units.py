"""Pure logic of the backends: slot planning and adapter-folder validation (no engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.errors import InvalidRequestError
from router.adapters import discover_adapters, validate_adapter_dir, validate_adapter_name
from router.backends.slots import SlotPlanner, split_batch


def test_split_batch_keeps_small_batches_whole():
    assert split_batch([None, 1, None, 1, 2], usable_slots=2) == [[0, 1, 2, 3, 4]]
    assert split_batch([], usable_slots=2) == []


def test_split_batch_limits_distinct_adapters_and_keeps_order():
    groups = split_batch([None, 1, 2, 3, None, 1, 4, 3], usable_slots=2)
    assert groups == [[0, 1, 2, 4, 5], [3, 6, 7]]
    for g in groups:
        assert len({[None, 1, 2, 3, None, 1, 4, 3][i] for i in g} - {None}) <= 2
    assert sorted(i for g in groups for i in g) == list(range(8))


def test_slot_planner_never_exceeds_usable_slots():
    planner = SlotPlanner(usable_slots=2)
    assert planner.admit({1}) == []
    assert planner.admit({2}) == []
    assert planner.admit({3}) == [1]  # least recently used goes first
    assert planner.admit({2}) == []  # already active: only touched
    assert planner.admit({4}) == [3]
    assert planner.active == [2, 4]
    assert planner.admit({5, 6}) == [2, 4]
    planner.forget(5)
    assert planner.active == [6]
    with pytest.raises(ValueError):
        planner.admit({7, 8, 9})


def _fake_adapter(path: Path, *, r: int = 8, config: dict | None = None, weights: bool = True) -> Path:
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": r, "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": "some/base"}
    cfg.update(config or {})
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    if weights:
        key = "base_model.model.model.layers.0.self_attn.q_proj"
        save_file({f"{key}.lora_A.weight": torch.zeros(r, 4), f"{key}.lora_B.weight": torch.zeros(4, r)},
                  str(path / "adapter_model.safetensors"))
    return path


def test_validate_good_adapter(tmp_path):
    info = validate_adapter_dir(_fake_adapter(tmp_path / "good", r=8), max_rank=16)
    assert (info.name, info.rank, info.alpha) == ("good", 8, 8.0)
    assert info.target_modules == ["q_proj", "v_proj"] and info.base_model_name_or_path == "some/base"


def test_validate_missing_weights(tmp_path):
    with pytest.raises(InvalidRequestError, match="adapter_model.safetensors"):
        validate_adapter_dir(_fake_adapter(tmp_path / "a", weights=False), max_rank=16)


def test_validate_missing_config(tmp_path):
    path = _fake_adapter(tmp_path / "a")
    (path / "adapter_config.json").unlink()
    with pytest.raises(InvalidRequestError, match="adapter_config.json"):
        validate_adapter_dir(path, max_rank=16)


def test_validate_missing_folder(tmp_path):
    with pytest.raises(InvalidRequestError, match="does not exist"):
        validate_adapter_dir(tmp_path / "nope", max_rank=16)


def test_validate_rank_too_high(tmp_path):
    with pytest.raises(InvalidRequestError, match="rank 32.*max_lora_rank 16"):
        validate_adapter_dir(_fake_adapter(tmp_path / "a", r=32), max_rank=16)
    # a per-module override counts too
    with pytest.raises(InvalidRequestError, match="rank 64"):
        validate_adapter_dir(_fake_adapter(tmp_path / "b", r=8, config={"rank_pattern": {"q_proj": 64}}), max_rank=16)


def test_validate_corrupt_json(tmp_path):
    path = _fake_adapter(tmp_path / "a")
    (path / "adapter_config.json").write_text('{"r": 8, ')
    with pytest.raises(InvalidRequestError, match="Cannot parse"):
        validate_adapter_dir(path, max_rank=16)


def test_validate_corrupt_weights_and_bad_fields(tmp_path):
    path = _fake_adapter(tmp_path / "a")
    (path / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InvalidRequestError, match="Cannot read"):
        validate_adapter_dir(path, max_rank=16)
    with pytest.raises(InvalidRequestError, match="'r' must be"):
        validate_adapter_dir(_fake_adapter(tmp_path / "b", config={"r": "sixteen"}), max_rank=16)
    with pytest.raises(InvalidRequestError, match="only LORA"):
        validate_adapter_dir(_fake_adapter(tmp_path / "c", config={"peft_type": "IA3"}), max_rank=16)


def test_adapter_names():
    assert validate_adapter_name("acme-json_v1.2") == "acme-json_v1.2"
    for bad in ("base", "", "../x", "a/b", "-x", "x" * 65):
        with pytest.raises(InvalidRequestError):
            validate_adapter_name(bad)


def test_discover_adapters_skips_hidden_invalid_and_plain_folders(tmp_path):
    _fake_adapter(tmp_path / "acme")
    _fake_adapter(tmp_path / ".acme-tmp123")  # an unfinished atomic publish
    _fake_adapter(tmp_path / "broken", weights=False)
    (tmp_path / "notes").mkdir()
    found = discover_adapters(tmp_path)
    assert list(found) == ["acme"] and found["acme"].path == (tmp_path / "acme").resolve()
    assert discover_adapters(tmp_path / "missing") == {}
    assert discover_adapters(tmp_path, max_rank=4) == {}  # rank 8 > 4


def test_real_peft_adapter_validates(lora_adapter_dir):
    info = validate_adapter_dir(lora_adapter_dir, max_rank=16)
    assert info.rank == 16 and sorted(info.target_modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
