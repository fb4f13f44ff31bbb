"""The api arms against a real OpenAI-compatible server (ragtune's own service on the session's vLLM
engine), through the official openai client: tokens from usage, cost from the price file, errors
surfaced, 429s retried."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def _format_items(n):
    from eval.suites import resolve_suites

    [suite] = resolve_suites(["format"])
    return suite, suite.items(n)


def test_api_arm_answers_with_usage_tokens_and_is_priced_from_the_table(api_server, price_file):
    from eval.api import ApiConfig, api_messages, run_api_arm
    from eval.cost import api_cost, load_prices

    suite, items = _format_items(3)
    config = ApiConfig(base_url=f"{api_server}/v1", model="base", api_key_env=None, price="test-model", concurrency=2)
    run, retried = run_api_arm(config, "api", None, suite, items)
    assert retried == 0 and len(run.answers) == 3 and run.total_s > 0
    for answer, latency in zip(run.answers, run.latency_ms):
        assert answer.text and answer.prompt_tokens > 50 and answer.completion_tokens > 0 and latency > 0
        assert answer.route.name == "api:base" and not answer.citations
    # the few-shot turns went out as chat turns, the question last
    messages = api_messages(suite, items[0])
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]

    prices = load_prices(price_file)
    prompt = sum(a.prompt_tokens for a in run.answers) / 3
    completion = sum(a.completion_tokens for a in run.answers) / 3
    cost = api_cost("api", prompt, completion, prices.token_price("test-model"), "test-model")
    assert cost.per_1k_usd == pytest.approx((prompt * 2.0 + completion * 10.0) / 1e6 * 1000)
    assert cost.monthly_usd(1_000_000) == pytest.approx(cost.per_1k_usd * 1000)


def test_api_errors_are_surfaced_with_the_status_and_message(api_server):
    from eval.api import ApiConfig, run_api_arm
    from eval.arms import ArmFailedError

    suite, items = _format_items(2)
    config = ApiConfig(base_url=f"{api_server}/v1", model="no-such-model", api_key_env=None, max_retries=0)
    with pytest.raises(ArmFailedError, match=r"2/2 requests .* failed .*HTTP 404.*no-such-model"):
        run_api_arm(config, "api", None, suite, items)


def test_a_missing_key_env_var_is_named(monkeypatch, api_server):
    from eval.api import ApiConfig, run_api_arm
    from ragtune.errors import ConfigError

    monkeypatch.delenv("RAGTUNE_TEST_KEY", raising=False)
    suite, items = _format_items(1)
    with pytest.raises(ConfigError, match="RAGTUNE_TEST_KEY"):
        run_api_arm(ApiConfig(base_url=f"{api_server}/v1", model="base", api_key_env="RAGTUNE_TEST_KEY"),
                    "api", None, suite, items)


def test_429s_are_retried_with_backoff_until_answered(tmp_path, base_model_dir, vllm_backend):
    """A service that admits one request and queues none: concurrent requests get 429 + Retry-After,
    and the client retries them until every one is answered."""
    from eval.api import ApiConfig, run_api_arm
    from ragtune.settings import Settings
    from router.factory import build_router
    from service.app import create_app
    from tests.service.conftest import serve

    # Retry-After 2 s x 20 retries: room for two whole generations ahead of a request even on a slow
    # CPU (an AVX2-only machine took 14 s for one; 8 retries of 1 s ran out there).
    settings = Settings(home=tmp_path, base_model=str(base_model_dir), max_inflight=1, max_queue=0, retry_after_s=2)
    suite, items = _format_items(3)
    with serve(create_app(settings, router=build_router(settings, backend=vllm_backend))) as base:
        config = ApiConfig(base_url=f"{base}/v1", model="base", api_key_env=None, concurrency=3, max_retries=20)
        run, retried = run_api_arm(config, "api", None, suite, items)
    assert retried >= 1 and all(a.text for a in run.answers)
