"""Metrics on hand-made cases (pure logic)."""

from __future__ import annotations

import pytest

from eval import metrics


def test_normalisation_follows_squad():
    assert metrics.normalize_answer("The  University of Arizona , Tucson.") == "university of arizona tucson"
    assert metrics.normalize_answer("An Apple!") == "apple"


def test_exact_match_is_max_over_answers_and_normalised():
    assert metrics.exact_match("university of Arizona, Tucson", ["University of Arizona , Tucson"]) == 1.0
    assert metrics.exact_match("Arizona", ["University of Arizona , Tucson", "Arizona"]) == 1.0
    assert metrics.exact_match("Arizona State", ["Arizona"]) == 0.0


def test_token_f1():
    # pred {university, of, arizona}, gold {university, of, arizona, tucson}: P=1, R=3/4
    assert metrics.token_f1("University of Arizona", ["University of Arizona , Tucson"]) == pytest.approx(6 / 7)
    assert metrics.token_f1("Berlin", ["Paris"]) == 0.0
    assert metrics.token_f1("Paris", ["Berlin", "Paris"]) == 1.0
    assert metrics.token_f1("", ["Paris"]) == 0.0


@pytest.mark.parametrize("text", ['{"a": 1} trailing', 'Answer: {"a": 1}', "[1, 2]", "", '{"a": 1', "null"])
def test_json_invalid_outputs_score_zero(text):
    assert metrics.json_scores(text, {"a": "1"}) == {"json_valid": 0.0, "key_match": 0.0, "field_f1": 0.0,
                                                     "json_exact": 0.0}


def test_json_scores_field_level():
    gold = {"name": "Blue Spice", "eatType": "coffee shop", "area": "riverside"}
    exact = metrics.json_scores('  {"name":"blue spice","eatType":"Coffee shop","area":"riverside"}\n', gold)
    assert exact == {"json_valid": 1.0, "key_match": 1.0, "field_f1": 1.0, "json_exact": 1.0}
    # one wrong value, one extra key: 2 of 4 predicted pairs right, 2 of 3 gold pairs found
    partial = metrics.json_scores('{"name":"Blue Spice","eatType":"pub","area":"riverside","near":"X"}', gold)
    assert partial["json_valid"] == 1.0 and partial["key_match"] == 0.0 and partial["json_exact"] == 0.0
    assert partial["field_f1"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    same_keys = metrics.json_scores('{"name":"A","eatType":"B","area":"C"}', gold)
    assert same_keys["key_match"] == 1.0 and same_keys["field_f1"] == 0.0


def test_name_correct():
    assert metrics.name_correct('{"name":"Galrostav Rooms"}', "Galrostav Rooms") == 1.0
    assert metrics.name_correct('{"name":"Galrostav"}', "Galrostav Rooms") == 0.0
    assert metrics.name_correct("not json", "Galrostav Rooms") == 0.0


def test_staleness():
    assert metrics.fact_scores("Tobias Renwick.", "Tobias Renwick", "Mara Ilves") == {"current": 1.0, "stale": 0.0}
    assert metrics.fact_scores("The CEO is Mara Ilves", "Tobias Renwick", "Mara Ilves") == {"current": 0.0, "stale": 1.0}
    # stating both is not stale (the new value is there), stating neither is neither
    assert metrics.fact_scores("Mara Ilves, then Tobias Renwick", "Tobias Renwick", "Mara Ilves")["stale"] == 0.0
    assert metrics.fact_scores("I don't know", "Tobias Renwick", "Mara Ilves") == {"current": 0.0, "stale": 0.0}
    # whole words only: 'teal' is not found inside 'steal'
    assert metrics.fact_scores("They steal it", "crimson", "teal")["stale"] == 0.0


def test_qa_drops_citations_and_scores_abstention_squad2_style():
    gold = ["University of Arizona , Tucson"]
    assert metrics.qa_scores("University of Arizona, Tucson [2]", gold) == {"em": 1.0, "f1": 1.0}
    # unanswerable (every gold answer empty): abstaining is right, an answer is wrong
    for abstain in ("", "not in the passages", "Not in the passages [1].", "Unknown"):
        assert metrics.qa_scores(abstain, [""]) == {"em": 1.0, "f1": 1.0}, abstain
    assert metrics.qa_scores("Tucson", [""]) == {"em": 0.0, "f1": 0.0}
    # answerable: abstaining scores 0 even where F1 of the words would not be
    assert metrics.qa_scores("not in the passages", ["passages"]) == {"em": 0.0, "f1": 0.0}
