"""The shipped E2E schema accepts every vendored label (train and test) and rejects off-vocabulary JSON."""

import json
from pathlib import Path

from ragtune.jsonformat import load_schema

DATA = Path(__file__).resolve().parents[2] / "data" / "e2e_cleaned_text2json"


def test_every_vendored_label_is_schema_valid():
    errors = load_schema(DATA / "schema.json")
    for split in ("train", "test"):
        for n, line in enumerate((DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            assert errors(json.loads(line)["output_json"]) == [], f"{split}.jsonl:{n}"


def test_off_vocabulary_values_and_keys_are_rejected():
    errors = load_schema(DATA / "schema.json")
    assert errors({"name": "The Vaults", "eatType": "French"})
    assert errors({"name": "The Vaults", "priceRange": "less than 20"})
    assert errors({"name": "The Vaults", "customer ranking": "5 out of 5"})
    assert errors({}) and not errors({"name": "The Vaults", "area": "riverside"})
