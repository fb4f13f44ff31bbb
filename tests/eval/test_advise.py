"""``ragtune advise``: validation and split on their own, then the whole flow on the shipped example set."""

from __future__ import annotations

import json

import pytest

from eval.advise import AdviseConfig, Row, advise, common_affixes, infer_task, split_rows
from eval.suites import REPO
from ragtune.errors import InvalidRequestError

EXAMPLES = REPO / "data" / "advise" / "restaurants.jsonl"
SCHEMA = REPO / "data" / "e2e_cleaned_text2json" / "schema.json"


def _rows(pairs):
    return [Row(id=f"line-{i}", input=a, output=b, line=i) for i, (a, b) in enumerate(pairs, start=1)]


def test_bad_examples_give_line_numbered_errors_and_write_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\nnot json\n')
    out = tmp_path / "out"
    with pytest.raises(InvalidRequestError, match=r"bad.jsonl:2: .*completion") as exc:
        advise(AdviseConfig(examples=bad, out=out))
    assert "bad.jsonl:3" in exc.value.message and not out.exists()


def test_bad_examples_through_the_cli_exit_2_naming_the_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "ragtune.cli", "advise", "--examples", str(bad), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "bad.jsonl:2" in run.stdout + run.stderr and not out.exists()


def test_off_schema_outputs_are_refused_before_anything_is_written(tmp_path):
    rows = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    rows[4]["completion"] = '{"name":"X","colour":"blue"}'
    path = tmp_path / "ex.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InvalidRequestError, match=r"ex.jsonl:5: completion breaks schema.json"):
        advise(AdviseConfig(examples=path, schema_path=SCHEMA, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_split_is_deterministic_deduplicated_and_does_not_leak():
    pairs = [(f"question {i}", f"answer {i}") for i in range(30)]
    pairs += [("question 3", "answer 3"), ("Question  3", "another answer")]  # a duplicate, and the same input again
    train, test, counts = split_rows(_rows(pairs), 0.2)
    again = split_rows(_rows(pairs), 0.2)
    assert [r.id for r in test] == [r.id for r in again[1]] and counts == again[2]
    assert counts["duplicates"] == 1 and counts["test"] == round(31 * 0.2)
    test_inputs = {" ".join(r.input.lower().split()) for r in test}
    assert not test_inputs & {" ".join(r.input.lower().split()) for r in train}
    assert counts["train"] + counts["test"] + counts["removed_as_test_inputs"] == 31
    with pytest.raises(InvalidRequestError, match="at least 5 held out"):
        split_rows(_rows(pairs[:10]), 0.2)


def test_task_inference_and_the_instruction_around_the_inputs():
    json_rows = _rows([("x", '{"a":1}'), ("y", '{"b":2}')])
    assert infer_task(json_rows, has_docs=False)[0] == "format"
    assert infer_task(_rows([("Who runs Acme?", "Ada Byron")]), has_docs=True)[0] == "facts"
    assert infer_task(_rows([("Rewrite: hi there", "Greetings, friend.")]), has_docs=False)[0] == "voice"
    prefix, suffix = common_affixes(["Rewrite this:\nthe cat sat", "Rewrite this:\na dog ran"])
    assert (prefix, suffix) == ("Rewrite this:\n", "")


@pytest.mark.slow
def test_advise_end_to_end_on_the_shipped_examples(tmp_path, settings, vllm_backend, api_server, price_file):
    """Split, train 2 steps on CPU, ask every arm (the api arms against a real OpenAI-compatible
    server), and write report.html + results.json + suite.yaml with a decision; a rerun resumes."""
    from eval.results import validate_results
    from eval.suites import load_suite

    api = tmp_path / "api.yaml"
    api.write_text(f"base_url: {api_server}/v1\nmodel: base\napi_key_env: null\nprice: test-model\n")
    out = tmp_path / "advise"
    cfg = AdviseConfig(examples=EXAMPLES, schema_path=SCHEMA, max_steps=2, limit=6, out=out, api_config=api,
                       prices=price_file, progress=False)
    results, run_dir = advise(cfg, settings, backend=vllm_backend)
    assert run_dir == out
    for name in ("report.html", "results.json", "suite.yaml", "train.jsonl", "test.jsonl", "advise.json"):
        assert (out / name).is_file(), name
    validate_results(out / "results.json")
    [suite] = results.suites
    assert suite.metric_kind == "json" and suite.expect == "ft" and suite.n_items == 6
    assert {a.arm for a in suite.arms if a.status == "ok"} == {"base", "rag", "ft", "hybrid", "api", "api-rag"}
    assert suite.decision.winner is not None and suite.cost.pick is not None
    assert suite.training[0].origin == "trained-now" and suite.training[0].device == "cpu"
    assert "2 optimizer steps" in suite.description
    manifest = json.loads((out / "advise.json").read_text())
    assert manifest["task"] == "format" and manifest["split"]["test"] == 8
    # the generated suite is an ordinary suite file
    assert load_suite(out / "suite.yaml").name == suite.name
    html = (out / "report.html").read_text()
    assert "Cost and break-even" in html and "Decision" in html

    again, _ = advise(cfg.model_copy(update={"limit": 2}), settings, backend=vllm_backend)
    assert again.suites[0].training[0].origin == "cached"  # resumed: the adapter is not trained twice


@pytest.mark.parametrize("task", ["format", "facts", "voice"])
def test_the_generated_suite_loads_for_every_task(tmp_path, task):
    """The suite advise writes is an ordinary suite: it loads, renders its items and few-shot turns,
    and names the right metric, expectation and retrieval documents."""
    import yaml

    from eval.advise import _load_docs, build_suite, write_inputs
    from eval.suites import load_suite

    if task == "format":
        pairs = [(f"Extract: place {i} is cheap", json.dumps({"name": f"P{i}", "priceRange": "cheap"})) for i in range(30)]
    elif task == "facts":
        pairs = [(f"What is fact number {i} about Tycho Station?", f"fact {i}") for i in range(30)]
    else:
        pairs = [(f"Rewrite in the house voice:\nwe shipped version {i} today", f"Behold, version {i} hath shipped.")
                 for i in range(30)]
    train, test, _ = split_rows(_rows(pairs), 0.2)
    docs = _load_docs(REPO / "data" / "demo" / "corpus") if task == "facts" else []
    cfg = AdviseConfig(examples=tmp_path / "x.jsonl", out=tmp_path / "out", max_steps=3)
    cfg.out.mkdir()
    write_inputs(cfg, task, train, test, docs)
    spec = build_suite(cfg, task, train, test, len(docs), cuda=False, name="advise-x")
    (cfg.out / "suite.yaml").write_text(yaml.safe_dump(spec))
    suite = load_suite(cfg.out / "suite.yaml")
    items = suite.items()
    assert len(items) == len(test) and items[0].user == test[0].input and len(suite.few_shot) == 3
    kind, expect = {"format": ("json", "ft"), "facts": ("qa", "rag"), "voice": ("style", "ft")}[task]
    assert (suite.spec.metric.kind, suite.spec.expect) == (kind, expect)
    assert suite.spec.adapter.train.config["max_steps"] == 3
    documents = suite.spec.retrieval.documents
    if task == "facts":
        assert documents.kind == "fact" and (cfg.out / "documents.jsonl").is_file()
        assert items[0].reference == [test[0].output]
    else:  # no documents: similar training examples are retrieved as solved examples
        assert documents.kind == "example" and documents.path.name == "train.jsonl"
    if task == "voice":  # the classifier sees the text without the instruction every input repeats
        row = json.loads((cfg.out / "train.jsonl").read_text().splitlines()[0])
        assert row["source"].startswith("we shipped version") and suite.spec.metric.style.source_field == "source"
    if task == "format":
        assert isinstance(items[0].reference, dict) and suite.spec.prompt.stop == ["\n"]
