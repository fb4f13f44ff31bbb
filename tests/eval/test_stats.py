"""Bootstrap intervals and paired comparisons on synthetic data with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from eval import stats


def test_bootstrap_interval_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    true_mean, n, replicates = 0.3, 60, 200
    covered = 0
    for r in range(replicates):
        sample = (rng.random(n) < true_mean).astype(float)
        iv = stats.bootstrap_mean(sample, resamples=1000, seed=r)
        assert iv.low <= iv.mean <= iv.high
        covered += iv.low <= true_mean <= iv.high
    # Percentile intervals on n=60 under-cover slightly; 95% nominal must land in [88%, 99%].
    assert 0.88 <= covered / replicates <= 0.99


def test_bootstrap_is_seeded_and_handles_constant_data():
    x = [0.0, 1.0, 1.0, 0.0, 1.0]
    assert stats.bootstrap_mean(x, seed=1) == stats.bootstrap_mean(x, seed=1)
    iv = stats.bootstrap_mean([1.0] * 10)
    assert (iv.mean, iv.low, iv.high, iv.n) == (1.0, 1.0, 1.0, 10)


def test_paired_bootstrap_sign_and_significance():
    rng = np.random.default_rng(1)
    b = rng.random(80)
    a = b + 0.2 + rng.normal(0, 0.05, 80)  # a is better on every item
    d = stats.paired_bootstrap(a, b, names=("ft", "rag"), metric="f1")
    assert d.diff > 0 and d.low > 0 and d.significant and d.p_value < 0.01
    rev = stats.paired_bootstrap(b, a)
    assert rev.diff < 0 and rev.high < 0 and rev.significant
    same = stats.paired_bootstrap(b, b)
    assert same.diff == 0 and not same.significant and same.p_value == 1.0
    noise = stats.paired_bootstrap(rng.random(30), rng.random(30))
    assert noise.low < 0 < noise.high or noise.p_value < 0.05  # consistent either way
    assert noise.significant == (noise.low > 0 or noise.high < 0)
    with pytest.raises(ValueError):
        stats.paired_bootstrap([1.0], [1.0, 0.0])


def test_latency():
    lat = stats.latency_stats([10.0] * 19 + [100.0], total_s=0.29)
    assert lat.p50_ms == 10.0 and lat.p95_ms == pytest.approx(14.5) and lat.total_s == 0.29


def test_items_needed_follows_the_paired_sample_size_formula():
    # differences with mean 0.1 and sd 0.5: n = ((1.96 + 0.8416) * 0.5 / 0.1)^2 = 196.2 -> 197
    d = np.array([0.6, -0.4] * 10)
    assert d.mean() == pytest.approx(0.1) and d.std(ddof=1) == pytest.approx(0.513, abs=1e-3)
    expected = int(np.ceil(((1.959964 + 0.841621) * d.std(ddof=1) / 0.1) ** 2))
    assert stats.items_needed(d) == expected
    diff = stats.paired_bootstrap(d + 0.5, np.full(20, 0.5))
    assert not diff.significant and diff.n_needed == expected > diff.n
    # a significant difference needs no estimate; equal scores give none (more items would not help)
    assert stats.paired_bootstrap(np.ones(20), np.zeros(20)).n_needed is None
    assert stats.items_needed(np.zeros(20)) is None
