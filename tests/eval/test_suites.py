"""Suite YAML loading, error messages, item rendering, document building and the decision logic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.adapters import train_key, training_rows
from eval.arms import build_query, plan_arm
from eval.ingest import build_documents
from eval.results import ArmResult
from eval.run import _decide
from eval.stats import bootstrap_mean
from eval.suites import load_suite, resolve_suites, shipped_suites
from ragtune.errors import ConfigError
from ragtune.settings import Settings

MINIMAL = """
name: mine
description: my suite
expect: ft
data: {path: DATA, input_field: q, reference_field: a}
prompt: {user: "Q: {q}"}
metric: {kind: qa, primary: f1}
"""


@pytest.fixture()
def data_file(tmp_path) -> Path:
    p = tmp_path / "items.jsonl"
    p.write_text("".join(json.dumps({"id": f"i{i}", "q": f"question {i}", "a": [f"ans {i}"]}) + "\n" for i in range(5)))
    return p


def _write(tmp_path, text: str, data_file: Path) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(text.replace("DATA", str(data_file)))
    return p


def test_shipped_suites_load_and_render():
    assert set(shipped_suites()) == {"facts", "changing", "format", "voice", "hybrid"}
    for suite in resolve_suites(["all"]):
        items = suite.items(3)
        assert len(items) == 3 and all(it.user.strip() for it in items)
        if suite.spec.prompt.few_shot:
            assert len(suite.few_shot) == suite.spec.prompt.few_shot.count
    fmt = resolve_suites(["format"])[0]
    # the ft prompt is exactly the adapter's training prompt layout
    train_prompt = json.loads(Path("data/train/e2e-json.jsonl").read_text().splitlines()[0])["prompt"]
    assert fmt.items(1)[0].user.split("\n\n")[0] == train_prompt.split("\n\n")[0]
    assert fmt.spec.arm_applicable("ft") == (True, "")
    facts = resolve_suites(["facts"])[0]
    # four arms on facts: ft = a closed-book knowledge adapter, hybrid = the reader adapter
    assert facts.spec.arm_applicable("ft") == facts.spec.arm_applicable("hybrid") == (True, "")
    assert facts.spec.arm_adapter("ft").train is not None and facts.spec.arm_adapter("hybrid").name == "reader"
    assert fmt.spec.arm_adapter("hybrid") == fmt.spec.arm_adapter("ft")  # default: the same adapter
    # retrieval searches with the item's field, not the instruction around it; examples are examples
    hyb = resolve_suites(["hybrid"])[0].items(2)
    assert [it.retrieval_query for it in hyb] == [it.name for it in hyb] and hyb[0].name in hyb[0].user
    assert fmt.items(1)[0].retrieval_query == fmt.items(1)[0].input != fmt.items(1)[0].user
    assert facts.items(1)[0].retrieval_query == facts.items(1)[0].row["question"]
    assert fmt.spec.retrieval.documents.kind == "example" and facts.spec.retrieval.documents.kind == "fact"


def test_user_suite_file_loads(tmp_path, data_file):
    suite = load_suite(_write(tmp_path, MINIMAL, data_file))
    items = suite.items(2)
    assert [it.user for it in items] != [] and items[0].reference[0].startswith("ans")
    assert suite.spec.adapter is None and suite.spec.retrieval is None
    assert resolve_suites([str(tmp_path / "suite.yaml")])[0].name == "mine"


@pytest.mark.parametrize(("change", "field"), [
    (("primary: f1", "primary: bleu"), "metric"),
    (("expect: ft", "expect: maybe"), "expect"),
    (("reference_field: a", "reference: a"), "data.reference_field"),
    (("kind: qa, primary: f1", "kind: fact, primary: current"), "old_field"),
    (('user: "Q: {q}"', 'user: "Q: {q}", temperature: 1'), "prompt.temperature"),
    (("kind: qa, primary: f1", "kind: qa, primary: f1, schema: s.json"), "'json' metric only"),
    (("kind: qa, primary: f1", "kind: json, primary: schema_valid"), "needs 'schema'"),
    (("kind: qa, primary: f1", "kind: json, primary: field_f1, schema: missing.json"), "does not exist"),
])
def test_bad_suite_file_names_the_field(tmp_path, data_file, change, field):
    path = _write(tmp_path, MINIMAL.replace(*change), data_file)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert field in err.value.message
    assert "suite.yaml" in err.value.message or "schema" in err.value.message


def test_bad_names_and_templates(tmp_path, data_file):
    with pytest.raises(ConfigError, match="unknown suite 'nope'"):
        resolve_suites(["nope"])
    suite = load_suite(_write(tmp_path, MINIMAL.replace("Q: {q}", "Q: {question}"), data_file))
    with pytest.raises(ConfigError, match="'question'"):
        suite.items()


def test_queries_per_arm_route_as_declared():
    suite = resolve_suites(["format"])[0]
    item = suite.items(1)[0]
    base = build_query(suite, item, plan_arm("base", "e2e-json"))
    assert base.adapter is None and not base.retrieval and len(base.messages) == 7  # 3 examples + question
    rag = build_query(suite, item, plan_arm("rag", "e2e-json"))
    assert rag.retrieval and rag.collection == "eval-format" and rag.top_k == 3 and rag.adapter is None
    ft = build_query(suite, item, plan_arm("ft", "e2e-json"))
    assert ft.adapter == "e2e-json" and len(ft.messages) == 1 and not ft.retrieval
    hybrid = build_query(suite, item, plan_arm("hybrid", "e2e-json"))
    assert hybrid.adapter == "e2e-json" and hybrid.retrieval and hybrid.temperature == 0.0


def test_facts_documents_are_gold_plus_same_page_distractors():
    suite = resolve_suites(["facts"])[0]
    items = suite.items(4)
    docs = build_documents(suite.spec.retrieval.documents, items)
    ids = {d.id for d in docs}
    for it in items:
        assert set(it.row["passage_ids"]) <= ids  # gold always in the store
    pages = {it.row["doc_id"] for it in items}
    assert len(docs) <= sum(len(it.row["passage_ids"]) for it in items) + 10 * len(pages)
    gold = {g for it in items for g in it.row["passage_ids"]}
    assert all(len(d.text.split()) >= 8 or d.id in gold for d in docs)


def test_changing_facts_protocol_pieces(base_model_dir):
    suite = resolve_suites(["changing"])[0]
    items = suite.items()
    v1 = build_documents(suite.spec.retrieval.documents, items)
    v2 = build_documents(suite.spec.retrieval.update, items)
    # same ids: upserting v2 replaces v1 in the store
    assert [d.id for d in v1] == [d.id for d in v2]
    for it, a, b in zip(items, v1, v2):
        assert it.old in a.text and it.reference in b.text and it.old not in b.text
    rows = training_rows(suite.spec.adapter.train, suite)
    assert len(rows) == 3 * len(items)
    assert {r["completion"] for r in rows} == {it.old for it in items}  # the adapter only ever sees v1
    assert any(r["prompt"] == items[0].user for r in rows)
    s = Settings(home=Path("/nonexistent"), base_model=str(base_model_dir))
    assert train_key(suite.spec.adapter.train, rows, s) == train_key(suite.spec.adapter.train, rows, s)
    assert train_key(suite.spec.adapter.train, rows[:-1], s) != train_key(suite.spec.adapter.train, rows, s)
    # the key names the base *weights*: the packaged model by name or by its folder is one adapter
    packaged = Settings(home=base_model_dir.parents[2])  # .ragtune/cache/models/gemma-3-270m -> .ragtune
    assert train_key(suite.spec.adapter.train, rows, packaged) == train_key(suite.spec.adapter.train, rows, s)


def _arms(scores: dict[str, list[float]]) -> list[ArmResult]:
    return [ArmResult(arm=name, status="ok", metrics={"field_f1": bootstrap_mean(v)}) for name, v in scores.items()]


def test_decision_rules():
    suite = load_suite(Path("eval/suites/format.yaml"))  # expects ft; primary field_f1
    good, bad = [1.0, 0.9, 1.0, 0.8] * 10, [0.1, 0.0, 0.2, 0.1] * 10
    scores = {"base": bad, "ft": good}
    arms = _arms(scores) + [ArmResult(arm="hybrid", status="not_applicable", reason="x")]
    d, comps = _decide(suite, arms, scores)
    assert d.winner == "ft" and d.runner_up == "base" and d.verdict == "agrees"
    assert d.margin.diff > 0 and d.margin.significant and len(comps) == 1
    scores = {"base": good, "ft": bad}
    d, _ = _decide(suite, _arms(scores), scores)
    assert d.winner == "base" and d.verdict == "disagrees" and "disagree" in d.note
    noisy = [0.0, 1.0] * 10
    scores = {"base": noisy, "ft": noisy[1:] + noisy[:1]}  # same mean, swapped per item: pure noise
    scores["base"] = [1.0] + scores["base"][1:]  # base ahead by one item
    d, _ = _decide(suite, _arms(scores), scores)
    assert d.winner == "base" and d.verdict == "tie" and "within noise" in d.note
    # not significant: the summary says how many items a difference this size would need
    assert d.margin.n_needed > 40 and f"would need ~{d.margin.n_needed:,} items" in d.summary
    d, _ = _decide(suite, _arms({"base": bad}), {"base": bad})
    assert d.verdict == "undecided" and d.margin is None


def test_decision_rule_names_a_mechanism_not_an_arm():
    """facts -> retrieval: the reader (hybrid) winning agrees; a closed-book arm winning does not."""
    suite = load_suite(Path("eval/suites/facts.yaml"))  # expects rag; primary f1
    strong, weak = [1.0, 0.8, 0.9, 1.0] * 10, [0.1, 0.0, 0.2, 0.0] * 10
    arms = lambda scores: [ArmResult(arm=n, status="ok", metrics={"f1": bootstrap_mean(v)})  # noqa: E731
                           for n, v in scores.items()]
    scores = {"base": weak, "rag": [x * 0.8 for x in strong], "ft": weak, "hybrid": strong}
    d, _ = _decide(suite, arms(scores), scores)
    assert d.winner == "hybrid" and d.verdict == "agrees" and d.expected_arms == ["rag", "hybrid", "api-rag"]
    assert d.mechanism == "retrieval" and d.mechanism_margin.a == "hybrid" and d.mechanism_margin.b in ("base", "ft")
    assert d.mechanism_margin.significant and "With retrieval: best hybrid" in d.summary
    scores = {"base": weak, "rag": weak, "ft": strong, "hybrid": weak}
    d, _ = _decide(suite, arms(scores), scores)
    assert d.winner == "ft" and d.verdict == "disagrees" and "expects retrieval" in d.note


def test_a_voice_suite_whose_classifier_is_near_chance_is_not_decided():
    from eval.results import StyleInfo

    suite = load_suite(Path("eval/suites/voice.yaml"))  # primary: style
    scores = {"base": [0.2, 0.3] * 10, "ft": [0.9, 0.8] * 10}
    arms = [ArmResult(arm=n, status="ok", metrics={"style": bootstrap_mean(v)}) for n, v in scores.items()]
    info = dict(pairs_path="p", train_pairs=100, test_pairs=30, min_accuracy=0.65, fit_seconds=1.0, cached=False,
                data_sha256="x")
    d, _ = _decide(suite, arms, scores, StyleInfo(heldout_accuracy=0.55, **info))
    assert d.verdict == "undecided" and d.winner is None and "55% of held-out texts" in d.summary
    d, _ = _decide(suite, arms, scores, StyleInfo(heldout_accuracy=0.80, **info))
    assert d.verdict == "agrees" and d.winner == "ft"
