"""Uncertainty: bootstrap intervals, paired comparisons, sample sizes, latency percentiles.

Eval suites are small (tens of items), so every mean is reported with a 95% interval and every
"A beats B" with a paired interval: the same items answered by two arms are compared item by
item, which removes the between-item variance that would otherwise swamp the difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 20240601


class Interval(BaseModel):
    """A mean with its bootstrap 95% interval (percentile method)."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    low: float
    high: float
    n: int


class PairedDiff(BaseModel):
    """mean(a - b) over items both arms answered, with its paired bootstrap interval."""

    model_config = ConfigDict(extra="forbid")

    a: str
    b: str
    metric: str
    diff: float = Field(description="mean(a) - mean(b) over the shared items.")
    low: float
    high: float
    p_value: float = Field(description="Two-sided bootstrap p-value for 'no difference'.")
    significant: bool = Field(description="True when the 95% interval excludes 0.")
    n: int
    n_needed: int | None = Field(
        default=None, description="When not significant: paired items a difference of this size would need to be "
        "significant (two-sided 5%, 80% power, the observed spread of per-item differences).")


def bootstrap_mean(
    values: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = 0.95
) -> Interval:
    """Percentile bootstrap interval of the mean (seeded: the same data give the same interval)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Interval(mean=float("nan"), low=float("nan"), high=float("nan"), n=0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return Interval(
        mean=float(x.mean()),
        low=float(np.quantile(means, alpha)),
        high=float(np.quantile(means, 1 - alpha)),
        n=int(x.size),
    )


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    names: tuple[str, str] = ("a", "b"),
    metric: str = "",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> PairedDiff:
    """Paired bootstrap of mean(a - b): resample items, keep each item's two scores together.

    p-value: twice the smaller share of resampled differences on either side of 0 (the usual
    bootstrap sign test), floored at 1/resamples so it never reads as exactly 0.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs equal lengths (got {x.size} and {y.size})")
    d = x - y
    if d.size == 0:
        nan = float("nan")
        return PairedDiff(a=names[0], b=names[1], metric=metric, diff=nan, low=nan, high=nan,
                          p_value=1.0, significant=False, n=0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
    if np.all(d == 0):
        p = 1.0
    else:
        p = 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
        p = float(min(1.0, max(p, 1.0 / resamples)))
    significant = bool(low > 0 or high < 0)
    return PairedDiff(
        a=names[0], b=names[1], metric=metric, diff=float(d.mean()), low=low, high=high,
        p_value=p, significant=significant, n=int(d.size), n_needed=None if significant else items_needed(d),
    )


Z_TWO_SIDED_5PCT = 1.959964
Z_POWER_80PCT = 0.841621


def items_needed(differences: Sequence[float]) -> int | None:
    """Paired items for a difference of the observed mean to be significant with 80% power.

    The usual normal-approximation sample size for a paired mean, n = ((z_0.975 + z_0.8) sd / |mean|)^2,
    with sd the spread of the per-item differences. None when the differences are all equal (no
    spread to estimate, or no difference at all): more items of the same kind would not help.
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 2 or d.std(ddof=1) == 0 or d.mean() == 0:
        return None
    return int(np.ceil(((Z_TWO_SIDED_5PCT + Z_POWER_80PCT) * d.std(ddof=1) / abs(d.mean())) ** 2))


class LatencyStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p50_ms: float
    p95_ms: float
    mean_ms: float
    total_s: float = Field(description="Wall time of all batches of this arm (retrieval + generation).")


def latency_stats(per_item_ms: Sequence[float], total_s: float) -> LatencyStats:
    x = np.asarray(per_item_ms, dtype=float)
    if x.size == 0:
        return LatencyStats(p50_ms=0.0, p95_ms=0.0, mean_ms=0.0, total_s=total_s)
    return LatencyStats(
        p50_ms=float(np.percentile(x, 50)), p95_ms=float(np.percentile(x, 95)), mean_ms=float(x.mean()), total_s=total_s
    )
