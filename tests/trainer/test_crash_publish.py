"""kill -9 during training and during an adapter's publish: the adapters dir never holds a half
adapter, a replaced adapter is never lost, and the service starts with what is there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from ragtune.publish import publish, recover
from tests.conftest import REPO, service_process, soak_record
from tests.trainer.helpers import json_rows, write_jsonl

SHIPPED = REPO / "adapters" / "e2e-json"

TRAINER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ragtune.settings import Settings
    from trainer.config import TrainConfig
    from trainer.train import train_adapter
    home, data, base, steps = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    config = TrainConfig(style="crashy", data=data, max_steps=steps, per_device_batch_size=2, learning_rate=1e-3,
                         eval_steps=1, task_eval_limit=2, max_seq_length=64, gradient_checkpointing=False,
                         logging_steps=1, warmup_ratio=0.0, lr_scheduler="constant", gradient_accumulation_steps=1,
                         early_stopping_patience=None)
    train_adapter(config, Settings(home=home, base_model=base), progress=False)
""")


def test_recover_puts_back_an_adapter_whose_replacement_was_killed_between_renames(tmp_path):
    # The state a kill between publish's two renames leaves: no S, the previous version aside.
    aside = tmp_path / ".old-style-1a2b3c4d"
    aside.mkdir()
    (aside / "adapter_model.safetensors").write_text("old weights")
    done = tmp_path / ".old-other-99999999"  # a publish that finished, its clean-up cut
    done.mkdir()
    (tmp_path / "other").mkdir()
    assert recover(tmp_path) == ["style"]
    assert (tmp_path / "style" / "adapter_model.safetensors").read_text() == "old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "style"]


def test_publish_then_recover_is_a_no_op(tmp_path):
    (tmp_path / "style").mkdir()
    staging = tmp_path / ".tmp-style-x"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    publish(staging, tmp_path / "style")
    assert recover(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["style"]


def _visible(adapters):
    return sorted(p.name for p in adapters.iterdir() if not p.name.startswith("."))


def _train_and_kill(tmp_path, base_model_dir, when, steps: int) -> None:
    data = write_jsonl(tmp_path / "crashy.jsonl", json_rows(6))
    proc = subprocess.Popen([sys.executable, "-c", TRAINER, str(tmp_path), str(data), str(base_model_dir), str(steps)],
                            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not when():
        if proc.poll() is not None:
            pytest.fail(f"the trainer ended before the kill point: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["training", "publish"])
def test_kill_9_leaves_no_half_adapter_and_keeps_the_old_one(tmp_path, base_model_dir, phase):
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    old = shutil.copytree(SHIPPED, adapters / "crashy", ignore=shutil.ignore_patterns("report.html"))
    old_card = json.loads((old / "card.json").read_text())

    def training():  # a checkpoint written: the run is well into training
        return any((adapters / ".work-crashy").glob("checkpoint-*"))

    def publishing():  # the new adapter is being assembled next to the old one
        return any(adapters.glob(".tmp-crashy-*/adapter_model.safetensors"))

    if phase == "training":
        _train_and_kill(tmp_path, base_model_dir, training, steps=40)
    else:
        _train_and_kill(tmp_path, base_model_dir, publishing, steps=2)

    assert _visible(adapters) == ["crashy"]
    assert json.loads((adapters / "crashy" / "card.json").read_text()) == old_card  # the old one, whole
    with service_process(tmp_path, base_model_dir) as (base, _):
        models = {m["id"] for m in httpx.get(f"{base}/v1/models", timeout=30).json()["data"]}
        assert "crashy" in models
        r = httpx.post(f"{base}/v1/chat/completions", timeout=120, json={
            "model": "crashy", "messages": [{"role": "user", "content": "Restaurant: Aromi."}], "max_tokens": 8})
        assert r.status_code == 200, r.text
    soak_record(f"kill -9 trainer during {phase}", visible_adapters=_visible(adapters), old_adapter_intact=True)
