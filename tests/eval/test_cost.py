"""The cost model on hand-made inputs whose crossovers are known in closed form."""

from __future__ import annotations

import pytest

from eval.cost import (
    ArmCost,
    TokenPrice,
    api_cost,
    cheapest_within,
    crossovers,
    load_prices,
    self_hosted_cost,
    training_usd,
)
from ragtune.errors import ConfigError


def _prices(tmp_path, **self_hosted):
    sh = {"device": "test GPU", "hour_usd": 2.0, "min_instances": 1, "utilization": 0.5, "hours_per_month": 730,
          **self_hosted}
    lines = ["self_hosted:"] + [f"  {k}: {v!r}" if isinstance(v, str) else f"  {k}: {v}" for k, v in sh.items()]
    lines += ["training:", "  gpu_hour_usd: 4.0", "  cpu_hour_usd: 0.5", "  amortize_months: 10",
              "api:", "  m:", "    input_per_1m: 1.0", "    output_per_1m: 5.0"]
    path = tmp_path / "prices.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_prices(path)


def test_api_vs_always_on_server_crosses_where_the_fixed_bill_is_paid_off(tmp_path):
    prices = _prices(tmp_path)
    # api: 1000 prompt + 100 completion tokens = $0.0015 / request
    api = api_cost("api", 1000, 100, prices.token_price("m"), "m")
    assert api.per_1k_usd == pytest.approx(1.5)
    # self-hosted: one always-on $2/h machine = $1,460 / month until traffic needs more busy hours:
    # 0.18 s/request at 50% utilisation = 0.0001 h/request -> more than 730 h beyond 7.3M requests.
    server = self_hosted_cost("ft", 0.18, prices, measured_on="cpu", one_off_usd=10.0)
    assert server.per_1k_usd == pytest.approx(0.18 * 1000 / 3600 / 0.5 * 2.0)
    assert server.training_per_month_usd == pytest.approx(1.0)  # $10 over 10 months
    assert server.monthly_usd(1000) == pytest.approx(1461.0)
    assert server.monthly_usd(10_000_000) == pytest.approx(10_000_000 * 0.0001 * 2.0 + 1.0)
    [x] = crossovers([api, server])
    # 1.5e-3 R = 1461  ->  R = 974,000 requests / month; the api is cheaper below it
    assert x.requests_per_month == pytest.approx(1461 / 1.5e-3, rel=1e-6)
    assert x.cheaper_below == "api" and x.monthly_usd == pytest.approx(1461.0, rel=1e-6)


def test_retraining_when_facts_change_moves_the_crossover(tmp_path):
    prices = _prices(tmp_path, min_instances=0)  # pay only for busy hours: serving cost is per request
    rag = self_hosted_cost("rag", 0.36, prices, measured_on="cpu")  # $0.0004 / request, no training
    ft = self_hosted_cost("ft", 0.18, prices, measured_on="cpu", one_off_usd=50.0, retrains_per_month=2.0)
    assert ft.training_per_month_usd == pytest.approx(50 * (0.1 + 2))  # $105 / month
    [x] = crossovers([rag, ft])
    # 0.0004 R = 0.0002 R + 105  ->  R = 525,000: the adapter pays for its retraining above it
    assert x.requests_per_month == pytest.approx(525_000, rel=1e-6) and x.cheaper_below == "rag"
    # no crossover without the retraining: ft is cheaper at every traffic but the very lowest
    never = self_hosted_cost("ft", 0.18, prices, measured_on="cpu")
    assert crossovers([rag, never]) == []


def test_cheapest_within_the_quality_margin(tmp_path):
    prices = _prices(tmp_path, min_instances=0)
    costs = [self_hosted_cost("rag", 0.36, prices, measured_on="cpu"),
             self_hosted_cost("ft", 0.18, prices, measured_on="cpu", one_off_usd=1.0),
             api_cost("api", 1000, 100, prices.token_price("m"), "m")]
    quality = {"rag": 0.80, "ft": 0.79, "api": 0.90}
    pick = cheapest_within(costs, quality, higher_is_better=True, margin=0.02, traffic=1e5, metric="f1")
    assert pick.best_arm == "api" and pick.eligible == ["api"] and pick.arm == "api"
    pick = cheapest_within(costs, quality, higher_is_better=True, margin=0.15, traffic=1e5, metric="f1")
    assert pick.eligible == ["ft", "rag", "api"] and pick.arm == "ft" and "within 0.15" in pick.summary
    # lower-is-better metrics (the stale rate) pick the lowest
    pick = cheapest_within(costs, quality, higher_is_better=False, margin=0.0, traffic=1e5, metric="stale")
    assert pick.best_arm == "ft" and pick.arm == "ft"


def test_equal_bills_go_to_the_better_arm(tmp_path):
    prices = _prices(tmp_path)  # one always-on machine: every self-hosted arm pays $1,460 at low traffic
    costs = [self_hosted_cost("rag", 0.36, prices, measured_on="cpu"),
             self_hosted_cost("ft", 0.18, prices, measured_on="cpu", one_off_usd=0.01)]  # + $0.001 / month
    pick = cheapest_within(costs, {"rag": 0.80, "ft": 0.81}, higher_is_better=True, margin=0.02, traffic=1e4,
                           metric="f1")
    assert pick.arm == "ft" and pick.best_arm == "ft"


def test_training_cost_from_the_cards_hours(tmp_path):
    prices = _prices(tmp_path)
    assert training_usd(0.5, 0.0, prices) == pytest.approx(2.0) and training_usd(0.0, 2.0, prices) == pytest.approx(1.0)


def test_bad_price_tables_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_prices(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("self_hosted: {device: x, hour_usd: -1}\ntraining: {gpu_hour_usd: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: self_hosted.hour_usd"):
        load_prices(bad)
    prices = load_prices(hour_usd=9.0)  # the shipped table, with --gpu-hour-usd
    assert prices.self_hosted.hour_usd == 9.0 and "gpt-4o-mini" in prices.api
    with pytest.raises(ConfigError, match="no api price for 'x'"):
        prices.token_price("x")


def test_flat_lines_do_not_cross():
    a = ArmCost(arm="a", kind="api", basis="", per_1k_usd=1.0)
    b = ArmCost(arm="b", kind="api", basis="", per_1k_usd=2.0)
    assert crossovers([a, b]) == [] and isinstance(TokenPrice(input_per_1m=0, output_per_1m=0), TokenPrice)
