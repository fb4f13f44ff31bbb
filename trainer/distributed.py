"""Multi-GPU training: the same recipe, one process per GPU, launched by accelerate (DDP).

``ragtune train-adapter --gpus N`` (N >= 2) writes the run's config and settings to a spec file
and an accelerate config (``MULTI_GPU``: DDP, each process holding the whole 4-bit base on its own
GPU), then runs ``accelerate launch -m trainer.worker SPEC``. Every process trains; rank 0 alone
prepares the work dir, evaluates, writes the card and report, and publishes (atomically, as a
single-GPU run does). ``--gpus 1`` never comes here: it is the single-process path unchanged.

DDP suits QLoRA: the 4-bit 8B base is ~5.5 GiB, so it is replicated, and only the LoRA
gradients are all-reduced. Sharding the base itself (FSDP + QLoRA, for bases that do not fit one
GPU) is not built.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ragtune.errors import InvalidRequestError, RagtuneError
from ragtune.settings import Settings
from trainer.config import TrainConfig

SPEC_FILE = "spec.json"
ACCELERATE_FILE = "accelerate.yaml"


@dataclass(frozen=True)
class Rank:
    """This process's place in a launch (torchrun's environment variables; one process when unset)."""

    index: int = 0
    local: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Rank:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def barrier(self) -> None:
        """Wait for every process (starts the process group that the Trainer then reuses)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local)
                dist.init_process_group("nccl", device_id=torch.device("cuda", self.local))
            else:  # CPU processes (tests): gloo, as accelerate picks there
                dist.init_process_group("gloo")
        dist.barrier()


def accelerate_config(processes: int) -> dict:
    """accelerate's config for DDP on one machine; bf16 autocast is the trainer's own (SFTConfig)."""
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU",
        "num_machines": 1,
        "machine_rank": 0,
        "num_processes": processes,
        "gpu_ids": "all",
        "mixed_precision": "no",
        "downcast_bf16": "no",
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }


def launch_command(spec_dir: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(spec_dir / ACCELERATE_FILE),
            "--main_process_port", str(port), "-m", "trainer.worker", str(spec_dir / SPEC_FILE)]


def write_spec(spec_dir: Path, config: TrainConfig, settings: Settings, processes: int) -> None:
    """The run as the worker reads it back. Only the fields that were set travel, so the worker's
    config is the same one (defaults and "set by the user" alike: the runtime tells them apart)."""
    spec = {"config": config.model_dump(mode="json", exclude_unset=True),
            "settings": settings.model_dump(mode="json", exclude_unset=True)}
    (spec_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    (spec_dir / ACCELERATE_FILE).write_text(yaml.safe_dump(accelerate_config(processes), sort_keys=False))


def read_spec(path: Path) -> tuple[TrainConfig, Settings]:
    spec = json.loads(Path(path).read_text())
    return TrainConfig(**spec["config"]), Settings(**spec["settings"])


def check_gpus(gpus: int, *, cuda_devices: int | None = None) -> None:
    """Refuse a launch this machine cannot run, before anything is written."""
    if gpus < 2:
        raise InvalidRequestError(f"--gpus {gpus}: a multi-GPU launch needs 2 or more", param="gpus")
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count()
    if cuda_devices < gpus:
        raise InvalidRequestError(f"--gpus {gpus}: this machine has {cuda_devices} CUDA GPU(s)", param="gpus")


def launch(config: TrainConfig, settings: Settings, gpus: int, *, require_cuda: bool = True):
    """Train on ``gpus`` processes through accelerate; returns the published adapter's TrainResult.

    ``require_cuda=False`` lets the same launch run CPU processes (gloo), which is how the tests
    exercise it on machines without GPUs.
    """
    from ragtune.card import read_card
    from trainer.data import load_training_file
    from trainer.report import REPORT_FILE
    from trainer.train import TrainResult

    check_gpus(gpus, cuda_devices=None if require_cuda else gpus)
    load_training_file(config.data)  # bad rows fail here, line-numbered, before N processes start
    with tempfile.TemporaryDirectory(prefix="ragtune-launch-") as tmp:
        spec_dir = Path(tmp)
        write_spec(spec_dir, config, settings, gpus)
        proc = subprocess.run(launch_command(spec_dir, free_port()), env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RagtuneError(f"the {gpus}-process training exited with status {proc.returncode}: its output is "
                           "above; nothing was published (checkpoints, if any, stay for --resume)")
    final_dir = config.adapter_dir(settings)
    return TrainResult(final_dir, read_card(final_dir), final_dir / REPORT_FILE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
