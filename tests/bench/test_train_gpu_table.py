"""bench/train_gpu_table.py: issue 14's acceptance read off recorded GPU runs (no GPU needed)."""

from __future__ import annotations

import json

import pytest

from tests.bench.helpers import load_bench


def _table():
    return load_bench("train_gpu_table")


def test_recorded_calls_give_the_benchmarks_table(capsys):
    # Calls 16-19: one warm H200, the comparison BENCHMARKS.md reports (2026-12-02, fourth session).
    assert _table().main(["--calls", "16", "17", "18", "19"]) == 0
    out = capsys.readouterr().out
    assert "| ragtune | 9,639 | 10.03 | 9.66 | 0.91× | 3.41× |" in out
    assert "fixed-2048 × 1, memory: ragtune 6.36 vs Unsloth 6.40 GiB reserved: **met**" in out
    assert "fixed-2048 × 1, speed (default: ragtune): 1.19× Unsloth (unsloth), 2.94× HF: **met**" in out
    assert "fixed-2048 × 4, speed (default: ragtune): 0.91× Unsloth (unsloth), 3.41× HF: not met" in out
    assert "long-tail × 8, speed (default: ragtune): 1.50× Unsloth (unsloth), 4.13× HF: **met**" in out
    assert "e2e-json × 16, speed (default: ragtune): 0.86× Unsloth (unsloth), 1.66× HF: not met" in out


def _run(recipe, tokens_per_s, reserved):
    return {"recipe": recipe, "data": "e2e-json", "batch": 16, "tokens_per_s": tokens_per_s,
            "train_peak_reserved_gib": reserved, "train_peak_allocated_gib": reserved - 0.3}


def test_budget_decides_which_runs_compete(tmp_path, capsys):
    runs = [_run("ragtune", 5000, 6.8), _run("ragtune-budget15", 6600, 14.1), _run("ragtune-next", 9000, 16.0),
            _run("unsloth", 5800, 6.5), _run("unsloth-no-gc", 9500, 22.0), _run("hf", 3000, 21.7),
            {"recipe": "ragtune-varlen", "data": "e2e-json", "batch": 16, "error": "CUDA out of memory"}]
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"bench": "train_gpu", "calls": [{"runs": runs}]}))
    assert _table().main(["--results", str(results), "--calls", "0", "--budget", "15"]) == 0
    out = capsys.readouterr().out
    # Unsloth without checkpointing is over the budget, so Unsloth's default is the reference; the
    # fastest ragtune run over the budget does not count either; the failed run is left out.
    assert "speed (default: ragtune): 0.86× Unsloth (unsloth), 1.67× HF: not met" in out
    assert "speed (best option: ragtune-budget15): 1.14× Unsloth (unsloth), 2.20× HF: **met**" in out
    assert "ragtune-varlen" not in out
    assert _table().main(["--results", str(results), "--calls", "0", "--budget", "30"]) == 0
    assert "best option: ragtune-next): 0.95× Unsloth (unsloth-no-gc)" in capsys.readouterr().out


def test_a_call_that_is_not_there_is_named():
    with pytest.raises(SystemExit, match="no call 99"):
        _table().main(["--calls", "99"])
