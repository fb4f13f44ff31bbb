"""results.schema.json is generated from the pydantic models and must be committed up to date."""

from __future__ import annotations

from eval.results import SCHEMA_PATH, schema_json


def test_committed_schema_is_current():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_json(), (
        "eval/results.schema.json is stale: run `python -m eval.results` and commit it")
