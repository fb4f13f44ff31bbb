"""Strict JSON output: parsing, schema validity and field-level comparison.

One scorer for both the trainer's held-out task metric and eval's format suites, so the number on
an adapter's card and the one in the comparison report mean the same thing.

"Valid" is what a program consuming the output needs: the *whole* stripped output is one JSON
object or array, with no duplicate keys (``json.loads`` silently keeps the last one, so a caller
would read a value the model did not mean). "Schema-valid" adds the format's JSON Schema (allowed
keys, closed value vocabularies): parseable JSON with an invented key or value is still unusable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ragtune.errors import ConfigError
from ragtune.textnorm import normalize_answer, overlap_f1

Validator = Callable[[Any], list[str]]


class DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise DuplicateKeyError(f"duplicate key {dup!r}")
    return dict(pairs)


def parse_strict(text: str) -> Any | None:
    """The output as a JSON object or array, or None (not JSON, trailing text, duplicate keys, a scalar)."""
    try:
        value = json.loads(text.strip(), object_pairs_hook=_no_duplicates)
    except ValueError:  # JSONDecodeError and DuplicateKeyError are both ValueErrors
        return None
    return value if isinstance(value, (dict, list)) else None


def load_schema(path: Path) -> Validator:
    """A validator for the JSON Schema at ``path``: value -> list of error messages (empty when valid).

    The schema itself is checked here, so a broken schema is a clear ConfigError at load time
    rather than every output silently scoring 0.
    """
    import jsonschema

    if not path.is_file():
        raise ConfigError(f"JSON schema {path} does not exist", param="schema")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"JSON schema {path} is not JSON: {exc}", param="schema") from exc
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"JSON schema {path} is not a valid schema: {exc.message}", param="schema") from exc
    validator = cls(schema)

    def errors(value: Any) -> list[str]:
        return [e.message for e in validator.iter_errors(value)]

    return errors


def _norm(value: Any) -> str:
    # Values compare as normalised strings so "5 out of 5" and "5 Out of 5." agree and 5 equals "5".
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return normalize_answer(text)


def field_pairs(obj: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(str(k).strip(), _norm(v)) for k, v in obj.items()}


def json_scores(output: str, gold: Any, schema: Validator | None = None) -> dict[str, float]:
    """Per-output scores against a gold JSON value.

    ``json_valid``: strict parse with the gold's top-level type; ``schema_valid`` (only when a
    schema is given); for object golds ``key_match`` (same key set), ``field_f1`` over (key,
    normalised value) pairs and ``json_exact`` (same pairs). An output that does not parse scores
    0 on everything.
    """
    parsed = parse_strict(output)
    if parsed is not None and isinstance(parsed, dict) != isinstance(gold, Mapping):
        parsed = None  # an array where the format is an object (or the reverse) is not the format
    scores = {"json_valid": float(parsed is not None)}
    if schema is not None:
        scores["schema_valid"] = float(parsed is not None and not schema(parsed))
    if not isinstance(gold, Mapping):
        scores["json_exact"] = float(parsed is not None and parsed == gold)
    elif parsed is None:
        scores.update(key_match=0.0, field_f1=0.0, json_exact=0.0)
    else:
        pred, ref = field_pairs(parsed), field_pairs(gold)
        scores["key_match"] = float({k for k, _ in pred} == {k for k, _ in ref})
        scores["field_f1"] = overlap_f1(len(pred & ref), len(pred), len(ref))
        scores["json_exact"] = float(pred == ref)
    return scores
