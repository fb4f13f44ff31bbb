"""Multi-GPU launches (``--gpus N``): the command and configs they build, the checks before
anything starts, ``--gpus 1`` staying the single-process path, and a real 2-process run on CPU
(the same accelerate launch; gloo instead of NCCL)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from ragtune.errors import InvalidRequestError
from tests.trainer.helpers import json_rows, write_jsonl
from trainer.config import TrainConfig, resolve_runtime
from trainer.distributed import (
    ACCELERATE_FILE,
    SPEC_FILE,
    Rank,
    accelerate_config,
    check_gpus,
    launch,
    launch_command,
    read_spec,
    write_spec,
)

TINY = dict(max_seq_length=64, logging_steps=1, warmup_ratio=0.0, lr_scheduler="constant",
            gradient_accumulation_steps=1, early_stopping_patience=None, task_eval_limit=0)


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_accelerate_config_is_ddp_on_one_machine_with_one_process_per_gpu(gpus):
    cfg = accelerate_config(gpus)
    assert (cfg["distributed_type"], cfg["num_processes"], cfg["num_machines"]) == ("MULTI_GPU", gpus, 1)
    assert cfg["use_cpu"] is False and cfg["gpu_ids"] == "all"
    assert cfg["mixed_precision"] == "no"  # bf16 autocast comes from the trainer's SFTConfig, not accelerate


def test_launch_command_runs_the_worker_module_under_accelerate(tmp_path):
    import sys

    cmd = launch_command(tmp_path, 29555)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1] == str(tmp_path / ACCELERATE_FILE)
    assert cmd[cmd.index("--main_process_port") + 1] == "29555"
    assert cmd[-3:] == ["-m", "trainer.worker", str(tmp_path / SPEC_FILE)]


def test_spec_round_trip_keeps_what_was_set(tmp_path, settings):
    config = TrainConfig(style="s", data=tmp_path / "d.jsonl", max_steps=3, lora_r=8)
    write_spec(tmp_path, config, settings, 2)
    back, back_settings = read_spec(tmp_path / SPEC_FILE)
    assert back == config and back.model_fields_set == config.model_fields_set
    assert back_settings.resolved_adapters_dir == settings.resolved_adapters_dir
    assert back_settings.base_model == settings.base_model
    # Unset defaults stay unset, so the worker resolves the runtime exactly as this process would.
    assert resolve_runtime(back, cuda=False) == resolve_runtime(config, cuda=False)
    assert yaml.safe_load((tmp_path / ACCELERATE_FILE).read_text())["num_processes"] == 2
    assert "lora_r" in json.loads((tmp_path / SPEC_FILE).read_text())["config"]


def test_launch_is_refused_without_the_gpus(tmp_path):
    with pytest.raises(InvalidRequestError, match=r"--gpus 2: this machine has 0 CUDA GPU\(s\)"):
        check_gpus(2, cuda_devices=0)
    with pytest.raises(InvalidRequestError, match="needs 2 or more"):
        check_gpus(1, cuda_devices=8)
    check_gpus(8, cuda_devices=8)


def test_rank_defaults_to_one_process(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert Rank.from_env() == Rank(0, 0, 1) and Rank.from_env().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert Rank.from_env() == Rank(3, 1, 4) and not Rank.from_env().is_main
    Rank().barrier()  # one process: no process group, returns at once


def test_runtime_notes_the_global_batch_of_a_launch():
    cfg = TrainConfig(style="s", data="d", per_device_batch_size=2, gradient_accumulation_steps=4)
    assert not any("DDP" in n for n in resolve_runtime(cfg, cuda=True).notes)
    notes = resolve_runtime(cfg, cuda=True, processes=4).notes
    assert any("4 processes (DDP)" in n and "32 rows" in n for n in notes)


def test_cli_gpus_on_a_machine_without_them_fails_before_writing(tmp_path, monkeypatch):
    from tests.conftest import cli_app
    from trainer.cli import register

    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "home"))
    data = write_jsonl(tmp_path / "d.jsonl", json_rows(4))
    result = CliRunner().invoke(cli_app(register), ["train-adapter", "--style", "s", "--data", str(data), "--gpus", "2"])
    assert isinstance(result.exception, InvalidRequestError)
    assert "--gpus 2: this machine has 0 CUDA GPU(s)" in result.exception.message
    assert not (tmp_path / "home").exists()


def test_cli_gpus_1_is_the_single_process_path(tmp_path, monkeypatch, base_model_dir):
    """--gpus 1 trains in this process: the launcher is never reached (it would refuse here)."""
    import trainer.distributed
    from tests.conftest import cli_app
    from trainer.cli import register

    def no_launch(*args, **kwargs):
        raise AssertionError("--gpus 1 must not launch processes")

    monkeypatch.setattr(trainer.distributed, "launch", no_launch)
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAGTUNE_BASE_MODEL", str(base_model_dir))
    data = write_jsonl(tmp_path / "d.jsonl", json_rows(4))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({"task_eval_limit": 0, "gradient_accumulation_steps": 1}))
    result = CliRunner().invoke(cli_app(register), ["train-adapter", "--style", "one", "--data", str(data),
                                                    "--config", str(recipe), "--max-steps", "1",
                                                    "--max-seq-length", "64", "--gpus", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "adapters" / "one" / "card.json").is_file()


@pytest.mark.slow
def test_two_process_launch_trains_once_and_rank_0_publishes(tmp_path, settings):
    """The real launch (accelerate -> torchrun -> 2 workers) on CPU: the data is split between the
    ranks (half the optimizer steps of one process), gradients are all-reduced by DDP, and one
    adapter is published with one card."""
    data = write_jsonl(tmp_path / "d.jsonl", json_rows(8))
    config = TrainConfig(style="ddp", data=data, epochs=1, per_device_batch_size=1, eval_fraction=0.25, **TINY)
    result = launch(config, settings, 2, require_cuda=False)
    card = result.card
    adapters = settings.resolved_adapters_dir
    assert sorted(p.name for p in adapters.iterdir()) == ["ddp"]  # no .tmp-, .old- or .work- left
    assert (result.adapter_dir / "adapter_model.safetensors").is_file() and result.report_path.is_file()
    assert any("2 processes (DDP)" in n for n in card.effective["notes"])
    # 6 training rows, 1 per process per step, 2 processes: 3 steps (one process would take 6).
    assert card.data.rows_train == 6
    assert max(p.step for p in card.history) == 3
    assert card.metrics.lora_grad_norm_first_step > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failing_rank_ends_the_launch_with_an_error_and_publishes_nothing(tmp_path, settings):
    """Rank 0 refuses the run (nothing to resume) while rank 1 waits for it: the launch ends, says so."""
    from ragtune.errors import RagtuneError

    data = write_jsonl(tmp_path / "d.jsonl", json_rows(4))
    config = TrainConfig(style="fails", data=data, max_steps=1, resume=True, **TINY)
    with pytest.raises(RagtuneError, match="2-process training exited with status"):
        launch(config, settings, 2, require_cuda=False)
    assert not (settings.resolved_adapters_dir / "fails").exists()
