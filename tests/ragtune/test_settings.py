from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragtune.settings import Settings


def test_env_and_yaml_sources(tmp_path, monkeypatch):
    cfg = tmp_path / "ragtune.yaml"
    cfg.write_text("collection: from-yaml\ntop_k: 7\nbackend: transformers\n")
    monkeypatch.setenv("RAGTUNE_CONFIG", str(cfg))
    monkeypatch.setenv("RAGTUNE_TOP_K", "3")  # env beats YAML
    s = Settings(home=tmp_path)
    assert (s.collection, s.top_k, s.backend) == ("from-yaml", 3, "transformers")
    assert s.resolved_chroma_path == tmp_path / "chroma"
    assert s.resolved_adapters_dir == tmp_path / "adapters"


def test_bad_values_name_the_field(tmp_path):
    with pytest.raises(ValidationError, match="chunk_overlap"):
        Settings(home=tmp_path, chunk_words=20, chunk_overlap=20)
    with pytest.raises(ValidationError, match="backend"):
        Settings(home=tmp_path, backend="llamacpp")
    with pytest.raises(ValidationError, match="max_loras"):
        Settings(home=tmp_path, max_loras=1)


def test_unknown_yaml_key_is_an_error(tmp_path, monkeypatch):
    cfg = tmp_path / "ragtune.yaml"
    cfg.write_text("colection: typo\n")
    monkeypatch.setenv("RAGTUNE_CONFIG", str(cfg))
    with pytest.raises(ValidationError, match="colection"):
        Settings(home=tmp_path)
