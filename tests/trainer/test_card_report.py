"""Adapter card round trip and the self-contained HTML report."""

from __future__ import annotations

import pytest

from ragtune.card import AdapterCard, CardWarning, Compute, DataInfo, HistoryPoint, Metrics, TaskMetrics
from ragtune.errors import InvalidRequestError
from trainer.report import render_report, write_report


def make_card() -> AdapterCard:
    return AdapterCard(
        name="acme-json", base_model="gemma-3-270m", base_model_path="/m", base_model_hash="ab" * 32,
        method="lora-bf16",
        data=DataInfo(path="d.jsonl", sha256="cd" * 32, format="prompt-completion",
                      rows_total=10, rows_train=8, rows_eval=1, rows_rejected=1),
        config={"lora_r": 16, "style": "acme-json"},
        effective={"optimizer": "adamw_torch"},
        metrics=Metrics(steps=4, epochs=2.0, final_train_loss=0.5, best_train_loss=0.4, final_eval_loss=0.9,
                        best_eval_loss=0.8, best_step=2, lora_grad_norm_first_step=1.0,
                        supervised_token_fraction=0.4,
                        task=TaskMetrics(kind="json", rows=1, json_valid_rate=1.0, exact_match_rate=0.0,
                                         samples=[{"prompt": "p", "expected": '{"a": 1}', "generated": '{"a": <2>}'}])),
        warnings=[CardWarning(code="memorising", message="loss < 0.2 <b>", step=3)],
        history=[HistoryPoint(step=1, train_loss=2.0), HistoryPoint(step=2, train_loss=1.0, eval_loss=0.8),
                 HistoryPoint(step=4, train_loss=0.5, eval_loss=0.9)],
        compute=Compute(device="cpu", wall_seconds=36.0, gpu_hours=0.0, cpu_hours=0.01, hour_usd=0.0, cost_usd=0.0),
        libraries={"peft": "0.21.2"},
    )


def test_card_round_trip(tmp_path):
    card = make_card()
    path = card.write(tmp_path)
    assert path.name == "card.json"
    again = AdapterCard.read(tmp_path)
    assert again == card
    assert AdapterCard.read(path).base_model_hash == "ab" * 32


def test_card_read_errors(tmp_path):
    with pytest.raises(InvalidRequestError, match="No adapter card"):
        AdapterCard.read(tmp_path)
    (tmp_path / "card.json").write_text('{"name": "x"}')
    with pytest.raises(InvalidRequestError, match="not a valid adapter card"):
        AdapterCard.read(tmp_path)


def test_report_is_self_contained_with_chart_warnings_and_cost(tmp_path):
    html = render_report(make_card())
    assert "data:image/png;base64," in html
    assert "memorising" in html and "loss &lt; 0.2 &lt;b&gt;" in html  # escaped
    assert "lora_r" in html and "$0.0000" in html
    assert "JSON valid" in html and "{&quot;a&quot;: &lt;2&gt;}" in html
    assert "<script" not in html and "http" not in html.split("<body>")[1]
    out = write_report(make_card(), tmp_path / "report.html")
    assert out.read_text().startswith("<!doctype html>")
