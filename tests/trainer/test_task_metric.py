"""Task metric scoring (pure logic; the generation path runs in test_train's real run)."""

from __future__ import annotations

from trainer.task_metric import is_json_task, parse_json, score_json, strip_eos


def test_parse_json_accepts_objects_and_arrays_only():
    assert parse_json(' {"a": 1} \n') == (True, {"a": 1})
    assert parse_json("[1, 2]") == (True, [1, 2])
    assert parse_json("3")[0] is False
    assert parse_json('{"a": 1} trailing')[0] is False


def test_score_json_validity_and_exact_match_on_parsed_values():
    expected = ['{"a": 1, "b": 2}', '{"a": 1}', '{"a": 1}', '{"a": 1}']
    generated = ['{"b": 2, "a": 1}', '{"a": 2}', "not json", '{"a":1}']
    valid, exact = score_json(expected, generated)
    assert valid == 0.75 and exact == 0.5  # key order and spacing do not matter


def test_is_json_task_and_strip_eos():
    assert is_json_task(['{"a": 1}', "[]"])
    assert not is_json_task(['{"a": 1}', "plain text"])
    assert not is_json_task([])
    assert strip_eos('{"a": 1}<eos>', "<eos>") == '{"a": 1}'
