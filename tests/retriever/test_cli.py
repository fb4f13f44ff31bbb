"""`ragtune ingest` / `ragtune search` end to end (real model, real Chroma under tmp_path)."""

import json

import pytest
import typer
from typer.testing import CliRunner

from ragtune.errors import InvalidRequestError
from retriever.cli import register

pytestmark = pytest.mark.slow


@pytest.fixture()
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAGTUNE_CONFIG", str(tmp_path / "none.yaml"))  # ignore any ./ragtune.yaml
    (tmp_path / "none.yaml").write_text("{}\n", encoding="utf-8")
    app = typer.Typer()
    register(app)
    return app


def test_ingest_and_search(app, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "reactor.md").write_text("The Zorblax-9 reactor is cooled by liquid basalt.", encoding="utf-8")
    # 70 one-chunk records: more than 64 chunks, so the embedding progress path runs too.
    lines = [json.dumps({"id": f"filler-{i}", "text": f"Filler note number {i} about office supplies."}) for i in range(70)]
    (corpus / "filler.jsonl").write_text("\n".join(lines), encoding="utf-8")

    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(corpus), "--collection", "kb-cli", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    assert "new versions" in result.output and "71" in result.output
    assert "kb-cli" in result.output and "acme" in result.output

    result = runner.invoke(app, ["search", "what cools the reactor", "--k", "2", "-c", "kb-cli", "-t", "acme"])
    assert result.exit_code == 0, result.output
    assert "reactor.md::0 v1" in result.output

    result = runner.invoke(app, ["search", "what cools the reactor", "-c", "kb-cli", "-t", "other"])
    assert result.exit_code == 0 and "no passages" in result.output


def test_ingest_bad_path_raises_typed_error(app, tmp_path):
    # The root CLI turns RagtuneError into "error: <message>" and exit code 2.
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "missing")])
    assert isinstance(result.exception, InvalidRequestError)
    assert "no such file or directory" in str(result.exception)


def test_a_bad_file_is_reported_and_the_rest_ingested(app, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.md").write_text("The Quellmoor ferry leaves from pier 7.", encoding="utf-8")
    (corpus / "broken.jsonl").write_text("{not json}\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(corpus), "-c", "kb-bad"], terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "1 file(s) not ingested" in result.output and "broken.jsonl" in result.output
    result = runner.invoke(app, ["search", "which pier", "-c", "kb-bad"])
    assert "good.md::0" in result.output


def test_versions_from_the_cli(app, tmp_path):
    doc = tmp_path / "ferry.md"
    runner = CliRunner()
    doc.write_text("The Quellmoor ferry leaves from pier 7.", encoding="utf-8")
    assert runner.invoke(app, ["ingest", str(doc), "-c", "kb-v", "--valid-from", "2025-01-01"]).exit_code == 0
    again = runner.invoke(app, ["ingest", str(doc), "-c", "kb-v", "--valid-from", "2025-01-01"], terminal_width=200)
    assert again.exit_code == 0 and "unchanged" in again.output
    doc.write_text("The Quellmoor ferry leaves from pier 12.", encoding="utf-8")
    assert runner.invoke(app, ["ingest", str(doc), "-c", "kb-v", "--valid-from", "2026-06-01"]).exit_code == 0

    history = runner.invoke(app, ["history", "ferry.md", "-c", "kb-v"], terminal_width=200)
    assert history.exit_code == 0 and "2025-01-01" in history.output and "2026-06-01" in history.output
    then = runner.invoke(app, ["search", "which pier", "-c", "kb-v", "--as-of", "2026-01-01"], terminal_width=200)
    assert "pier 7" in then.output and "v1" in then.output
    gone = runner.invoke(app, ["delete", "ferry.md", "-c", "kb-v"], terminal_width=200)
    assert gone.exit_code == 0 and "history stays" in gone.output
    assert "no passages" in runner.invoke(app, ["search", "which pier", "-c", "kb-v"]).output
    bad = runner.invoke(app, ["search", "x", "-c", "kb-v", "--as-of", "soon"])
    assert bad.exit_code == 2 and "not a date" in bad.output
