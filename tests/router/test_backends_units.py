"""Pure logic of the backends: LoRA slot admission and adapter-folder validation (no engine)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ragtune.errors import InvalidRequestError
from router.adapters import discover_adapters, validate_adapter_dir, validate_adapter_name
from router.backends.lora_slots import AdapterBusyError, LoraSlots


def _slots(usable=2, wait_s=0.3):
    evicted: list[int] = []

    async def evict(lora_id):
        evicted.append(lora_id)

    return LoraSlots(usable, evict, wait_s=wait_s), evicted


def test_slots_admit_up_to_usable_and_evict_idle_lru_first():
    async def run():
        slots, evicted = _slots()
        async with slots.use(1):
            pass
        async with slots.use(2):
            pass
        assert slots.resident == [1, 2] and evicted == []
        async with slots.use(3):  # no room: the least recently used idle adapter goes
            assert slots.resident == [2, 3] and evicted == [1]
        async with slots.use(2):  # resident: only touched (most recent now)
            pass
        async with slots.use(4):
            assert slots.resident == [2, 4] and evicted == [1, 3]
        async with slots.use(None):  # no adapter never waits nor evicts
            pass
        await slots.forget(4)
        assert slots.resident == [2]

    asyncio.run(run())


def test_slots_make_a_further_adapter_wait_until_one_is_idle():
    async def run():
        slots, evicted = _slots(usable=2, wait_s=5)
        order = []
        release = asyncio.Event()

        async def hold(lora_id):
            async with slots.use(lora_id):
                order.append(f"in {lora_id}")
                await release.wait()
            order.append(f"out {lora_id}")

        holders = [asyncio.create_task(hold(1)), asyncio.create_task(hold(2))]
        await asyncio.sleep(0.01)

        async def third():
            async with slots.use(3):
                order.append("in 3")

        waiting = asyncio.create_task(third())
        await asyncio.sleep(0.05)
        assert "in 3" not in order and slots.resident == [1, 2]  # both slots busy: it waits
        release.set()
        await asyncio.gather(*holders, waiting)
        assert order.index("in 3") > order.index("out 1") and evicted == [1]
        assert len(slots.resident) <= 2

    asyncio.run(run())


def test_slots_wait_is_bounded():
    async def run():
        slots, _ = _slots(usable=1, wait_s=0.05)
        async with slots.use(1):
            with pytest.raises(AdapterBusyError, match="LoRA slots") as info:
                async with slots.use(2):
                    pass
            assert info.value.status_code == 429
        with pytest.raises(ValueError):
            LoraSlots(0, None)

    asyncio.run(run())


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
