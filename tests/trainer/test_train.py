"""Real training runs on gemma-3-270m (bf16 LoRA on CPU): publish, card, report, guardrails, resume.

Kept tiny for a 2-core machine: a handful of short examples, batch = the whole train split,
max_seq_length 64, 3-4 optimizer steps per run. One run serves several checks (adapter,
card, report, memorisation, gradients) because each CPU step costs seconds to tens of seconds.
"""

from __future__ import annotations

import pytest
from transformers import TrainerCallback

from ragtune.card import AdapterCard
from ragtune.errors import InvalidRequestError
from tests.trainer.helpers import json_rows, write_jsonl
from trainer.config import TrainConfig
from trainer.train import publish, train_adapter

TINY = dict(max_seq_length=64, gradient_checkpointing=False, logging_steps=1, warmup_ratio=0.0,
            lr_scheduler="constant", gradient_accumulation_steps=1, early_stopping_patience=None)


def leftovers(adapters_dir):
    return sorted(p.name for p in adapters_dir.iterdir() if p.name.startswith((".tmp-", ".old-")))


def test_bad_data_trains_nothing(tmp_path, settings):
    path = write_jsonl(tmp_path / "bad.jsonl", [*json_rows(3), {"prompt": "no completion"}])
    config = TrainConfig(style="bad", data=path, max_steps=1, **TINY)
    with pytest.raises(InvalidRequestError, match="bad.jsonl:4: missing 'completion'"):
        train_adapter(config, settings, progress=False)
    adapters = settings.resolved_adapters_dir
    assert not adapters.exists() or list(adapters.iterdir()) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_model_dir):
    """6 rows (5 train, 1 held out), 3 steps at a high learning rate: memorises on purpose."""
    from ragtune.settings import Settings

    home = tmp_path_factory.mktemp("train-home")
    settings = Settings(home=home, base_model=str(base_model_dir))
    data = write_jsonl(home / "tiny.jsonl", json_rows(6))
    config = TrainConfig(style="tiny-json", data=data, max_steps=3, per_device_batch_size=5, learning_rate=2e-3,
                         eval_steps=3, task_eval_limit=1, task_max_new_tokens=16, **TINY)
    result = train_adapter(config, settings, progress=False)
    return settings, result


@pytest.mark.slow
def test_training_publishes_a_complete_adapter(trained):
    settings, result = trained
    folder = result.adapter_dir
    assert folder == settings.resolved_adapters_dir / "tiny-json"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "card.json", "report.html"):
        assert (folder / name).is_file(), name
    # Published by rename: no temp or work folders left behind.
    assert leftovers(settings.resolved_adapters_dir) == []
    assert not (settings.resolved_adapters_dir / ".work-tiny-json").exists()


@pytest.mark.slow
def test_card_records_base_hash_data_metrics_and_cost(trained):
    from ragtune.models import base_model_hash

    settings, result = trained
    card = AdapterCard.read(result.adapter_dir)
    assert card == result.card
    assert card.base_model_hash == base_model_hash(settings)
    assert card.method == "lora-bf16" and card.compute.device == "cpu"
    assert card.effective["optimizer"] == "adamw_torch"  # paged 8-bit AdamW needs CUDA
    assert (card.data.rows_total, card.data.rows_train, card.data.rows_eval, card.data.rows_rejected) == (6, 5, 1, 0)
    assert card.data.format == "prompt-completion" and len(card.data.sha256) == 64
    m = card.metrics
    assert m.steps == 3 and m.final_train_loss is not None and m.final_eval_loss is not None
    assert 0 < m.supervised_token_fraction < 1  # prompt tokens carry no loss in the real trainer dataset
    assert m.task is not None and m.task.kind == "json" and m.task.rows == 1
    assert card.compute.wall_seconds > 0 and card.compute.cpu_hours > 0 and card.compute.cost_usd == 0
    assert {"torch", "transformers", "peft", "trl"} <= card.libraries.keys()
    assert card.config["lora_r"] == 16 and card.config["target_modules"][-1] == "down_proj"
    assert [p.step for p in card.history][:3] == [1, 2, 3]
    html = (result.adapter_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "tiny-json" in html


@pytest.mark.slow
def test_lora_gradients_are_non_zero_and_weights_moved(trained):
    """The NOTES trap: LoRA gradients must flow. peft starts B at zero; training must move it."""
    from safetensors.torch import load_file

    _, result = trained
    assert result.card.metrics.lora_grad_norm_first_step > 0
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    b_norms = [float(t.float().norm()) for name, t in weights.items() if "lora_B" in name]
    assert len(b_norms) == 18 * 7  # 18 layers x all seven projections
    assert min(b_norms) > 0


@pytest.mark.slow
def test_memorisation_guardrail_fires(trained):
    _, result = trained
    codes = [w.code for w in result.card.warnings]
    assert "memorising" in codes and "few-examples" in codes
    memorising = next(w for w in result.card.warnings if w.code == "memorising")
    assert memorising.step is not None and result.card.metrics.best_train_loss < 0.2


@pytest.mark.slow
def test_adapter_loads_with_peft_and_changes_outputs(trained, base_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.data import render_prompt

    _, result = trained
    tok = AutoTokenizer.from_pretrained(result.adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(base, result.adapter_dir).eval()
    inputs = tok(render_prompt("Restaurant: Cotto.", tok), return_tensors="pt")
    with torch.inference_mode():
        tuned = model(**inputs).logits[0, -1].float()
        with model.disable_adapter():
            plain = model(**inputs).logits[0, -1].float()
    assert (tuned - plain).abs().max() > 0.5
    # The adapter learned the format: its next token starts the JSON object.
    assert tok.decode(tuned.argmax()).startswith("{")


class InterruptAt(TrainerCallback):
    """Simulates a crash (or Ctrl-C) right after the given optimizer step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupted_run_publishes_nothing_and_resume_finishes(tmp_path, settings):
    data = write_jsonl(tmp_path / "r.jsonl", json_rows(3))  # 2 train, 1 held out
    config = TrainConfig(style="resumable", data=data, max_steps=2, per_device_batch_size=2, learning_rate=1e-3,
                         eval_steps=1, task_eval_limit=0, **TINY)
    adapters = settings.resolved_adapters_dir
    with pytest.raises(KeyboardInterrupt):
        train_adapter(config, settings, callbacks=[InterruptAt(2)], progress=False)
    assert not (adapters / "resumable").exists()
    assert leftovers(adapters) == []
    work = adapters / ".work-resumable"
    assert (work / "checkpoint-1").is_dir() and not (work / "checkpoint-2").exists()

    result = train_adapter(config.model_copy(update={"resume": True}), settings, progress=False)
    assert (adapters / "resumable" / "adapter_model.safetensors").is_file()
    assert result.card.metrics.steps == 2
    # The history spans both attempts: step 1 from the checkpoint, step 2 from the resumed run.
    assert [p.step for p in result.card.history if p.train_loss is not None] == [1, 2]
    assert result.card.compute.wall_seconds > result.card.metrics.train_seconds  # earlier attempt counted
    assert not work.exists() and leftovers(adapters) == []

    with pytest.raises(InvalidRequestError, match="Nothing to resume"):
        train_adapter(config.model_copy(update={"resume": True}), settings, progress=False)


def test_publish_replaces_an_existing_adapter(tmp_path):
    final = tmp_path / "style"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging = tmp_path / ".tmp-style-x"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    publish(staging, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["style"]


@pytest.mark.slow
def test_forced_nf4_on_cpu_trains_without_in_loop_eval(tmp_path, settings):
    """QLoRA (the GPU recipe) also runs on CPU; in-loop eval is off there (4-bit eval breaks gradients)."""
    data = write_jsonl(tmp_path / "q.jsonl", json_rows(4))
    config = TrainConfig(style="qlora", data=data, quantization="nf4", max_steps=1, per_device_batch_size=3,
                         task_eval_limit=0, **{**TINY, "early_stopping_patience": 3})
    result = train_adapter(config, settings, progress=False)
    card = result.card
    assert card.method == "qlora-nf4" and card.effective["eval_during_training"] is False
    assert card.metrics.lora_grad_norm_first_step > 0
    assert card.metrics.final_eval_loss is None
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
