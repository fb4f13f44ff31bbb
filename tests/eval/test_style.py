"""The style classifier on the real embedding model (small fit to stay fast)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_classifier_separates_registers_and_is_cached(tmp_path):
    from eval.style import StyleClassifier, content_similarity

    clf = StyleClassifier.load_or_fit(tmp_path, train_pairs=150, test_pairs=40)
    assert not clf.info.cached and clf.info.train_pairs == 150
    assert clf.info.heldout_accuracy > 0.7  # chance is 0.5
    archaic, plain, empty = clf.archaic_probability([
        "And he said unto them, Go ye into the city, and thou shalt find him that hath the key.",
        "He told them to go into the town, where they would find the man who had the key.",
        "   ",
    ])
    assert archaic > 0.5 > plain and empty == 0.0
    again = StyleClassifier.load_or_fit(tmp_path, train_pairs=150, test_pairs=40)
    assert again.info.cached and again.info.heldout_accuracy == clf.info.heldout_accuracy

    same, other = content_similarity(["He went back to his house.", "The price of fish rose."],
                                     ["He returned to his home.", "He returned to his home."])
    assert same > other and -1.0 <= other <= 1.0
