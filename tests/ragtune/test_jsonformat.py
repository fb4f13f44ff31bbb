"""The shared strict-JSON scorer (trainer task metric and eval format suites)."""

import json

import pytest

from ragtune.errors import ConfigError
from ragtune.jsonformat import json_scores, load_schema, parse_strict

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "area": {"enum": ["riverside", "city centre"]}},
}


@pytest.fixture
def schema(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return load_schema(path)


@pytest.mark.parametrize("text", ['{"a": 1} trailing', 'Answer: {"a": 1}', "", '{"a": 1', "null", "3", '"s"',
                                  '{"a": 1, "a": 2}'])
def test_parse_strict_rejects_non_json_scalars_and_duplicate_keys(text):
    assert parse_strict(text) is None


def test_parse_strict_accepts_objects_and_arrays_with_whitespace():
    assert parse_strict(' {"a": 1} \n') == {"a": 1}
    assert parse_strict("[1, 2]") == [1, 2]


def test_wrong_top_level_type_is_not_the_format():
    assert json_scores("[1, 2]", {"a": "1"})["json_valid"] == 0.0
    assert json_scores('{"a": 1}', [1])["json_valid"] == 0.0
    assert json_scores("[1, 2]", [1, 2]) == {"json_valid": 1.0, "json_exact": 1.0}


def test_schema_validity_is_stricter_than_parsing(schema):
    gold = {"name": "The Mill", "area": "riverside"}
    ok = json_scores('{"name":"The Mill","area":"riverside"}', gold, schema)
    assert ok["json_valid"] == ok["schema_valid"] == ok["json_exact"] == 1.0
    # parses, but the value is outside the vocabulary and a key is invented
    bad_value = json_scores('{"name":"The Mill","area":"London"}', gold, schema)
    assert bad_value["json_valid"] == 1.0 and bad_value["schema_valid"] == 0.0
    assert json_scores('{"name":"The Mill","food":"French"}', gold, schema)["schema_valid"] == 0.0
    assert json_scores("not json", gold, schema)["schema_valid"] == 0.0
    assert "schema_valid" not in json_scores('{"name":"x"}', gold)


def test_duplicate_keys_score_zero():
    scores = json_scores('{"area":"riverside","area":"city centre"}', {"area": "city centre"})
    assert scores == {"json_valid": 0.0, "key_match": 0.0, "field_f1": 0.0, "json_exact": 0.0}


def test_load_schema_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_schema(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_schema(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"type": "no-such-type"}))
    with pytest.raises(ConfigError, match="not a valid schema"):
        load_schema(tmp_path / "wrong.json")
