"""Task metric scoring (pure logic; the generation path runs in test_train's real run)."""

from __future__ import annotations

import json

import pytest

from ragtune.errors import InvalidRequestError
from ragtune.jsonformat import load_schema
from trainer.data import check_completions_schema, load_training_file
from trainer.task_metric import is_json_task, score_json, strip_eos


def test_score_json_uses_the_shared_scorer():
    expected = ['{"a": 1, "b": 2}', '{"a": 1}', '{"a": 1}', '{"a": 1}']
    generated = ['{"b": 2, "a": 1}', '{"a": 2}', "not json", '{"a":1}']
    scores = score_json(expected, generated)
    assert scores["json_valid"] == 0.75 and scores["json_exact"] == 0.5  # key order and spacing do not matter
    assert "schema_valid" not in scores


def test_is_json_task_and_strip_eos():
    assert is_json_task(['{"a": 1}', "[]"])
    assert not is_json_task(['{"a": 1}', "plain text"])
    assert not is_json_task([])
    assert strip_eos('{"a": 1}<eos>', "<eos>") == '{"a": 1}'


def test_off_schema_completions_are_refused_with_line_numbers(tmp_path):
    schema_path = tmp_path / "schema.json"
    schema_path.write_text(json.dumps({"type": "object", "additionalProperties": False,
                                       "properties": {"area": {"enum": ["riverside"]}}}))
    data = tmp_path / "fmt.jsonl"
    rows = [{"prompt": "p1", "completion": '{"area":"riverside"}'},
            {"prompt": "p2", "completion": '{"area":"London"}'},
            {"prompt": "p3", "completion": "no json"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    schema = load_schema(schema_path)
    with pytest.raises(InvalidRequestError) as err:
        check_completions_schema(load_training_file(data), schema, schema_path)
    message = str(err.value)
    assert "fmt.jsonl:2: completion breaks schema.json" in message and "'London'" in message
    assert "fmt.jsonl:3: completion is not one JSON object" in message and "fmt.jsonl:1" not in message
    assert "nothing was trained" in message
