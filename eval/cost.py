"""What each arm costs a month at a given traffic, where the lines cross, and the cheapest good arm.

Every price comes from the price table (``eval/prices.yaml`` or the user's ``--prices`` copy);
every quantity it is multiplied by is measured by the run:

* self-hosted arms (base, rag, ft, hybrid): the measured seconds per request under the serving
  path, billed at the table's hourly price — at least ``min_instances`` always-on machines, more
  when the traffic needs more busy hours than they give at ``utilization``;
* api arms: the measured prompt and completion tokens per request times the model's prices;
* one-off: the adapter card's training hours times the training price, spread over
  ``amortize_months`` and repeated ``retrains_per_month`` times a month when the suite's facts change.

Monthly cost is piecewise linear in requests per month, so crossovers are found by bisection.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragtune.errors import ConfigError

DEFAULT_PRICES = Path(__file__).resolve().parent / "prices.yaml"
TRAFFIC_RANGE = (1.0, 1e10)  # requests per month searched for crossovers and drawn in the chart


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelfHostedPrice(_Strict):
    device: str = Field(description="The machine hour_usd buys (printed in the report).")
    hour_usd: float = Field(ge=0)
    min_instances: float = Field(default=1, ge=0, description="Always-on machines billed every hour.")
    utilization: float = Field(default=0.5, gt=0, le=1, description="Share of a billed hour spent serving.")
    hours_per_month: float = Field(default=730, gt=0)


class TrainingPrice(_Strict):
    gpu_hour_usd: float = Field(ge=0)
    cpu_hour_usd: float = Field(default=0.0, ge=0)
    amortize_months: float = Field(default=12, gt=0, description="The first training is spread over these months.")


class TokenPrice(_Strict):
    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)


class PriceTable(_Strict):
    source: str = Field(default="", description="The file the prices were read from.")
    self_hosted: SelfHostedPrice
    training: TrainingPrice
    api: dict[str, TokenPrice] = Field(default_factory=dict)

    def token_price(self, name: str) -> TokenPrice:
        if name not in self.api:
            raise ConfigError(f"{self.source or 'price table'}: no api price for {name!r} (has: "
                              f"{', '.join(sorted(self.api)) or 'none'}); add it under 'api:'", param="prices")
        return self.api[name]


def load_prices(path: Path | None = None, *, hour_usd: float | None = None) -> PriceTable:
    """Read a price table; ``hour_usd`` (the --gpu-hour-usd flag) overrides the self-hosted hour."""
    path = Path(path or DEFAULT_PRICES)
    if not path.is_file():
        raise ConfigError(f"price table {path} does not exist", param="prices")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        table = PriceTable.model_validate({**raw, "source": str(path)})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})", param="prices") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}", param="prices") from exc
    if hour_usd is not None:
        table.self_hosted.hour_usd = hour_usd
    return table


class ArmCost(_Strict):
    """One arm's cost structure: monthly = fixed + per-request terms (see module docstring)."""

    arm: str
    kind: Literal["self-hosted", "api"]
    basis: str = Field(description="How the serving cost was priced, in words.")
    per_1k_usd: float = Field(description="Serving cost of 1,000 requests at steady traffic.")
    seconds_per_request: float | None = Field(default=None, description="Self-hosted: measured throughput cost.")
    hour_usd: float | None = None
    min_instances: float = 0.0
    utilization: float = 1.0
    hours_per_month: float = 730.0
    one_off_usd: float = Field(default=0.0, description="Training the adapter once.")
    retrains_per_month: float = Field(default=0.0, description="Retraining when the facts change.")
    amortize_months: float = 12.0

    @property
    def training_per_month_usd(self) -> float:
        return self.one_off_usd * (1.0 / self.amortize_months + self.retrains_per_month)

    def monthly_usd(self, requests: float | np.ndarray) -> float | np.ndarray:
        r = np.asarray(requests, dtype=float)
        if self.kind == "api":
            serving = r * self.per_1k_usd / 1000
        else:
            busy_hours = r * (self.seconds_per_request or 0.0) / 3600 / self.utilization
            serving = np.maximum(self.min_instances * self.hours_per_month, busy_hours) * (self.hour_usd or 0.0)
        out = serving + self.training_per_month_usd
        return float(out) if out.ndim == 0 else out


def self_hosted_cost(arm: str, seconds_per_request: float, prices: PriceTable, *, measured_on: str,
                     one_off_usd: float = 0.0, retrains_per_month: float = 0.0) -> ArmCost:
    p = prices.self_hosted
    per_1k = seconds_per_request * 1000 / 3600 / p.utilization * p.hour_usd
    basis = (f"{seconds_per_request:.3f} s/request measured on {measured_on}, billed as {p.device} at "
             f"${p.hour_usd:g}/h, {p.utilization:.0%} utilised, at least {p.min_instances:g} always on")
    return ArmCost(arm=arm, kind="self-hosted", basis=basis, per_1k_usd=per_1k, seconds_per_request=seconds_per_request,
                   hour_usd=p.hour_usd, min_instances=p.min_instances, utilization=p.utilization,
                   hours_per_month=p.hours_per_month, one_off_usd=one_off_usd, retrains_per_month=retrains_per_month,
                   amortize_months=prices.training.amortize_months)


def api_cost(arm: str, prompt_tokens: float, completion_tokens: float, price: TokenPrice, model: str) -> ArmCost:
    per_request = (prompt_tokens * price.input_per_1m + completion_tokens * price.output_per_1m) / 1e6
    basis = (f"{prompt_tokens:.0f} prompt + {completion_tokens:.1f} completion tokens/request (from usage) at "
             f"${price.input_per_1m:g} / ${price.output_per_1m:g} per 1M ({model})")
    return ArmCost(arm=arm, kind="api", basis=basis, per_1k_usd=per_request * 1000)


def training_usd(gpu_hours: float, cpu_hours: float, prices: PriceTable) -> float:
    """One-off cost of a training run from the hours its card measured."""
    return gpu_hours * prices.training.gpu_hour_usd + cpu_hours * prices.training.cpu_hour_usd


class Crossover(_Strict):
    a: str
    b: str
    requests_per_month: float = Field(description="Traffic at which a and b cost the same.")
    monthly_usd: float
    cheaper_below: str = Field(description="The arm that is cheaper at lower traffic.")


def crossovers(costs: list[ArmCost], lo: float = TRAFFIC_RANGE[0], hi: float = TRAFFIC_RANGE[1]) -> list[Crossover]:
    """Every traffic in [lo, hi] where two arms' monthly costs cross (a sign change of their difference)."""
    grid = np.geomspace(lo, hi, 600)
    found = []
    for i, a in enumerate(costs):
        for b in costs[i + 1:]:
            d = a.monthly_usd(grid) - b.monthly_usd(grid)
            for j in np.nonzero(np.sign(d[:-1]) * np.sign(d[1:]) < 0)[0]:
                r = _bisect(lambda x: a.monthly_usd(x) - b.monthly_usd(x), grid[j], grid[j + 1])
                found.append(Crossover(a=a.arm, b=b.arm, requests_per_month=r, monthly_usd=a.monthly_usd(r),
                                       cheaper_below=a.arm if d[j] < 0 else b.arm))
    return sorted(found, key=lambda c: c.requests_per_month)


def _bisect(f, lo: float, hi: float, iterations: int = 100) -> float:
    f_lo = f(lo)
    for _ in range(iterations):
        mid = math.sqrt(lo * hi)  # in log space: the traffic axis spans ten decades
        f_mid = f(mid)
        if (f_mid < 0) == (f_lo < 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


class CostPick(_Strict):
    """The cheapest arm, at the team's traffic, among those within the quality margin of the best."""

    arm: str | None
    traffic: float = Field(description="Requests per month the pick is made at (--traffic).")
    monthly_usd: float | None
    quality_margin: float = Field(description="Largest shortfall from the best arm's mean still 'as good'.")
    best_arm: str
    eligible: list[str] = Field(description="Arms within the margin, cheapest first.")
    summary: str


def cheapest_within(costs: list[ArmCost], quality: dict[str, float], *, higher_is_better: bool, margin: float,
                    traffic: float, metric: str) -> CostPick | None:
    """``quality``: each arm's mean on the primary metric. Arms without a cost are not candidates."""
    priced = {c.arm: c for c in costs if c.arm in quality}
    if not priced:
        return None
    sign = 1 if higher_is_better else -1
    best = max(priced, key=lambda a: sign * quality[a])
    eligible = [a for a in priced if sign * (quality[best] - quality[a]) <= margin + 1e-12]
    # Bills equal to the cent (always-on servers at low traffic) go to the better arm.
    eligible.sort(key=lambda a: (round(priced[a].monthly_usd(traffic), 2), -sign * quality[a]))
    pick = eligible[0]
    monthly = priced[pick].monthly_usd(traffic)
    if pick == best:
        summary = (f"At {traffic:,.0f} requests/month the best arm on {metric}, {pick}, is also the cheapest "
                   f"within {margin:g} of it: ${monthly:,.2f}/month.")
    else:
        summary = (f"At {traffic:,.0f} requests/month, {pick} ({metric} {quality[pick]:.3f}) is within {margin:g} of "
                   f"the best, {best} ({quality[best]:.3f}), and cheapest: ${monthly:,.2f}/month vs "
                   f"${priced[best].monthly_usd(traffic):,.2f} for {best}.")
    return CostPick(arm=pick, traffic=traffic, monthly_usd=monthly, quality_margin=margin, best_arm=best,
                    eligible=eligible, summary=summary)
