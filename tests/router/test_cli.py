"""`ragtune ingest` then `ragtune ask --retrieval` as a user runs them (a real subprocess).

Uses the transformers backend so this test does not start a second vLLM engine beside the
session's one; the vLLM path of the same router is covered over HTTP in tests/service.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _ragtune(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ragtune.cli", *args], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )


def test_ingest_and_ask_with_citation(tmp_path, base_model_dir):
    env = {
        **os.environ,
        "RAGTUNE_HOME": str(tmp_path),
        "RAGTUNE_BASE_MODEL": str(base_model_dir),
        "RAGTUNE_BACKEND": "transformers",
        "HF_HUB_OFFLINE": "1",
    }
    done = _ragtune("ingest", str(REPO / "data/demo/corpus"), "--collection", "demo", env=env)
    assert done.returncode == 0, done.stderr
    done = _ragtune(
        "ask", "What is the name of the gardening robot on Tycho Station?", "--retrieval",
        "--collection", "demo", "--max-tokens", "12", "--local", env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Bramblewick" in done.stdout
    assert "lunar-greenhouse.md" in done.stdout  # the citation line names the document


def test_ask_unknown_adapter_is_a_clear_error(tmp_path, base_model_dir):
    env = {**os.environ, "RAGTUNE_HOME": str(tmp_path), "RAGTUNE_BASE_MODEL": str(base_model_dir),
           "RAGTUNE_BACKEND": "transformers", "HF_HUB_OFFLINE": "1"}
    done = _ragtune("ask", "hello", "--adapter", "nope", env=env)
    assert done.returncode == 2
    assert "Unknown adapter or model 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_corpus_path_is_a_clear_error(tmp_path):
    env = {**os.environ, "RAGTUNE_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = _ragtune("ingest", str(tmp_path / "nowhere"), env=env)
    assert done.returncode == 2
    assert "nowhere" in done.stderr
    assert "Traceback" not in done.stderr
