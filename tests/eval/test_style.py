"""The per-suite style classifier on the real embedding model (small fits to stay fast)."""

from __future__ import annotations

import json

import pytest

from eval.suites import REPO, StylePairs

pytestmark = pytest.mark.slow
BIBLE = REPO / "data" / "bible_bbe2asv"


def test_classifier_fits_the_suites_own_pairs_and_is_cached(tmp_path):
    from eval.style import StyleClassifier, content_similarity

    spec = StylePairs(path=BIBLE / "train.jsonl", heldout_path=BIBLE / "test.jsonl", fit_pairs=150, heldout_pairs=40)
    clf = StyleClassifier.load_or_fit(tmp_path, spec)
    assert not clf.info.cached and clf.info.train_pairs == 150 and clf.info.test_pairs == 40
    assert clf.info.heldout_accuracy > 0.7 and not clf.info.near_chance  # chance is 0.5
    archaic, plain, empty = clf.target_probability([
        "And he said unto them, Go ye into the city, and thou shalt find him that hath the key.",
        "He told them to go into the town, where they would find the man who had the key.",
        "   ",
    ])
    assert archaic > 0.5 > plain and empty == 0.0
    again = StyleClassifier.load_or_fit(tmp_path, spec)
    assert again.info.cached and again.info.heldout_accuracy == clf.info.heldout_accuracy

    same, other = content_similarity(["He went back to his house.", "The price of fish rose."],
                                     ["He returned to his home.", "He returned to his home."])
    assert same > other and -1.0 <= other <= 1.0


def test_pairs_without_a_voice_difference_are_near_chance(tmp_path):
    """Both sides plain English (two different BBE verses): nothing tells them apart."""
    from eval.style import StyleClassifier

    rows = [json.loads(line) for line in (BIBLE / "train.jsonl").read_text().splitlines()[:240]]
    pairs = [{"source_text": a["source_text"], "target_text": b["source_text"]} for a, b in zip(rows[::2], rows[1::2])]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    clf = StyleClassifier.load_or_fit(tmp_path, StylePairs(path=path, heldout_fraction=0.25))
    assert clf.info.test_pairs == 30 and clf.info.near_chance, clf.info


def test_too_few_pairs_is_a_clear_error(tmp_path):
    from eval.style import StyleClassifier
    from ragtune.errors import ConfigError

    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"source_text": "a b", "target_text": "c d"}) + "\n")
    with pytest.raises(ConfigError, match="needs at least 10"):
        StyleClassifier.load_or_fit(tmp_path, StylePairs(path=path))
