"""The shipped training sets load, are the advertised formats, and rebuild byte for byte."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from ragtune.jsonformat import load_schema
from trainer.data import check_completions_schema, load_training_file
from trainer.task_metric import is_json_task

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "data" / "train"


def test_shipped_sets_load_and_match_their_kind():
    fmt = load_training_file(TRAIN / "e2e-json.jsonl")
    voice = load_training_file(TRAIN / "bible-asv.jsonl")
    assert fmt.format == voice.format == "prompt-completion"
    assert fmt.rows_total == 2000 and voice.rows_total == 800
    assert is_json_task([e.completion for e in fmt.examples])
    assert not is_json_task([e.completion for e in voice.examples])
    # the format recipe's schema accepts every shipped label (else training refuses the file)
    schema_path = REPO / "data" / "e2e_cleaned_text2json" / "schema.json"
    check_completions_schema(fmt, load_schema(schema_path), schema_path)


def test_build_script_reproduces_the_files(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("build_train", TRAIN / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    monkeypatch.setattr(build, "HERE", tmp_path)
    build.main()
    for name in ("e2e-json.jsonl", "bible-asv.jsonl"):
        rebuilt = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert rebuilt == hashlib.sha256((TRAIN / name).read_bytes()).hexdigest(), name
