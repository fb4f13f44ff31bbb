"""A small real eval: real model, real Chroma, real vLLM (the session engine), shipped e2e-json adapter.

Also the changing-facts protocol end to end at toy size: 4 facts, an adapter trained for 2 steps,
v2 upserted over v1 before asking.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path, settings, vllm_backend, suites, limit, run_id="t", **extra):
    from eval.run import EvalConfig, run_eval

    before = vllm_backend.adapter_names()
    config = EvalConfig(suites=suites, limit=limit, out=tmp_path / "reports", run_id=run_id, progress=False,
                        cache_dir=tmp_path / "cache", batch_size=4, **extra)
    results, run_dir = run_eval(config, settings, backend=vllm_backend)
    assert vllm_backend.adapter_names() == before  # adapters loaded for the run were unloaded
    return results, run_dir


def test_format_and_hybrid_end_to_end(tmp_path, settings, vllm_backend, api_server, price_file):
    """All six arms: the api arms ask ragtune's own service (an OpenAI-compatible server) as the hosted model."""
    from eval.results import EvalResults, validate_results

    api = tmp_path / "api.yaml"
    api.write_text(f"base_url: {api_server}/v1\nmodel: base\napi_key_env: null\nprice: test-model\nconcurrency: 2\n")
    results, run_dir = _run(tmp_path, settings, vllm_backend, ["format", "hybrid"], 2, api_config=api,
                            prices=price_file, traffic=50_000)
    assert (run_dir / "report.html").is_file()
    parsed = validate_results(run_dir / "results.json")  # against eval/results.schema.json
    assert isinstance(parsed, EvalResults) and [s.name for s in parsed.suites] == ["format", "hybrid"]
    for suite in parsed.suites:
        assert suite.n_items == 2 and suite.adapter == "e2e-json"
        arms = {a.arm: a for a in suite.arms}
        assert set(arms) == {"base", "rag", "ft", "hybrid", "api", "api-rag"}
        assert all(a.status == "ok" for a in arms.values()), [(a.arm, a.reason) for a in arms.values()]
        assert arms["api"].items[0].route == "api:base" and arms["api-rag"].items[0].citations
        assert arms["api"].endpoint.startswith("base at http://127.0.0.1")
        assert arms["ft"].items[0].route == "e2e-json" and arms["base"].items[0].route == "base"
        assert arms["rag"].items[0].citations and not arms["ft"].items[0].citations
        assert arms["hybrid"].items[0].citations
        for arm in arms.values():
            assert 0.0 <= arm.metrics["field_f1"].mean <= 1.0 and arm.latency.p50_ms > 0
            assert arm.cost_per_1k_usd > 0 and arm.completion_tokens_mean > 0
        assert [t.adapter for t in suite.training] == ["e2e-json"] and suite.training[0].cost_usd > 0  # its card
        assert all(a.empty_rate is not None and a.empty_answers is not None for a in arms.values())
        assert suite.decision.winner in arms and suite.decision.expected == ("ft" if suite.name == "format" else "hybrid")
        cost = suite.cost
        assert {c.arm for c in cost.arms} == set(arms) and cost.traffic == 50_000
        api_cost = next(c for c in cost.arms if c.arm == "api")
        expected = (arms["api"].prompt_tokens_mean * 2.0 + arms["api"].completion_tokens_mean * 10.0) / 1e6 * 1000
        assert api_cost.kind == "api" and api_cost.per_1k_usd == pytest.approx(expected)
        ft_cost = next(c for c in cost.arms if c.arm == "ft")
        assert ft_cost.kind == "self-hosted" and ft_cost.one_off_usd > 0  # the card's GPU hours, priced
        assert cost.pick is not None and cost.pick.arm in cost.pick.eligible and str(price_file) == cost.prices.source
    html = (run_dir / "report.html").read_text()
    assert "Decision" in html and "data:image/png;base64," in html and "hybrid" in html
    assert "Cost and break-even" in html and "Cost pick:" in html and "test-model" in html
    # the run's store is private to the run folder
    assert (run_dir / "chroma").is_dir()


def test_changing_facts_protocol_tiny(tmp_path, settings, vllm_backend):
    rows = [json.loads(line) for line in (REPO / "data/eval/changing_facts.jsonl").read_text().splitlines()][:4]
    data = tmp_path / "facts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite_text = (REPO / "eval/suites/changing.yaml").read_text().replace(
        "data/eval/changing_facts.jsonl", str(data)).replace("epochs: 6", "epochs: 1\n      max_steps: 2")
    suite_file = tmp_path / "tiny-changing.yaml"
    suite_file.write_text(suite_text.replace("name: changing", "name: tiny-changing"))

    results, run_dir = _run(tmp_path, settings, vllm_backend, [str(suite_file)], None)
    suite = results.suites[0]
    [training] = suite.training
    assert suite.n_items == 4 and training.origin == "trained-now" and training.device == "cpu"
    assert suite.ingest.documents == 4 and suite.ingest.updated_documents == 4
    arms = {a.arm: a for a in suite.arms}
    # after the update, v2 holds from its valid_from and v1 before it: the store kept both
    from datetime import date

    from ragtune.settings import Settings
    from retriever.store import FactStore

    store = FactStore(Settings(**{**settings.model_dump(), "chroma_path": run_dir / "chroma"}))
    for r in rows:
        now = " ".join(c.text for c in store.get_document(r["id"], collection="eval-tiny-changing"))
        then = " ".join(c.text for c in store.get_document(r["id"], collection="eval-tiny-changing",
                                                            as_of=date(2026, 1, 1)))
        assert r["v2"] in now and r["v1"] not in now and r["v1"] in then
        history = store.history(r["id"], collection="eval-tiny-changing")
        assert [(v.valid_from, v.valid_to) for v in history] == [(date(2025, 1, 1), date(2026, 6, 1)),
                                                                 (date(2026, 6, 1), None)]
    assert {arms["api"].status, arms["api-rag"].status} == {"not_configured"}  # no --api-config: not an error
    for arm in (a for a in arms.values() if a.status == "ok"):
        assert set(arm.metrics) == {"current", "stale"}
    # the facts change monthly (the suite says so): the adapter arms are retrained that often, rag is not
    retrains = {c.arm: c.retrains_per_month for c in suite.cost.arms}
    assert retrains == {"base": 0.0, "rag": 0.0, "ft": 1.0, "hybrid": 1.0}
    # the as_of probe: rag asked as of a day when v1 held
    assert suite.as_of is not None and suite.as_of.as_of == date(2026, 1, 1)
    assert set(suite.as_of.rag_as_of) == {"current", "stale"} and suite.as_of.ft_today is not None
    assert "As of a past date" in (run_dir / "report.html").read_text()
    assert suite.decision.expected == "rag" and suite.decision.primary_metric == "current"
    # a second run reuses the cached adapter instead of training again
    again, _ = _run(tmp_path, settings, vllm_backend, [str(suite_file)], 1, run_id="t2")
    assert again.suites[0].training[0].origin == "cached"


def test_facts_four_arms_with_the_shipped_reader_and_knowledge_adapter(tmp_path, settings, vllm_backend):
    """ft = the closed-book knowledge adapter trained once on a GPU (found by its data hash), hybrid =
    the reader over the passages; rag stays the bare base model."""
    results, _ = _run(tmp_path, settings, vllm_backend, ["facts"], 3)
    suite = results.suites[0]
    arms = {a.arm: a for a in suite.arms if a.status != "not_configured"}
    assert all(a.status == "ok" for a in arms.values())
    assert suite.adapter.startswith("timeqa-closed-book-") and suite.hybrid_adapter == "reader"
    assert {t.adapter: t.origin for t in suite.training} == {suite.adapter: "shipped", "reader": "shipped"}
    assert arms["ft"].items[0].route == suite.adapter and not arms["ft"].items[0].citations
    assert {i.route for i in arms["hybrid"].items} == {"reader"} and arms["hybrid"].items[0].citations
    assert {i.route for i in arms["rag"].items} == {"base"}  # reader: false for the rag arm
    for item in arms["hybrid"].items:  # the reader answers with a citation, or abstains
        assert item.output == "not in the passages" or "[" in item.output, item.output
    assert suite.decision.expected_arms == ["rag", "hybrid", "api-rag"] and suite.decision.mechanism == "retrieval"
