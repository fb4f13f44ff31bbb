"""``ragtune train-adapter``: a thin layer over :func:`trainer.train.train_adapter`.

Flags override the YAML recipe given with ``--config``; anything not given on either falls back
to :class:`trainer.config.TrainConfig`'s defaults (``--help`` shows them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trainer.config import TrainConfig

_F = TrainConfig.model_fields


def _help(name: str) -> str:
    return _F[name].description or ""


def register(app: typer.Typer) -> None:
    """Mount ``train-adapter`` on the root ``ragtune`` app."""

    @app.command("train-adapter")
    def train_adapter_cmd(
        style: Annotated[str | None, typer.Option("--style", help=_help("style"))] = None,
        data: Annotated[Path | None, typer.Option("--data", help=_help("data"))] = None,
        config: Annotated[Path | None, typer.Option("--config", help="YAML recipe (e.g. trainer/recipes/format.yaml); "
                                                    "flags override it.")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help=_help("max_steps"))] = None,
        epochs: Annotated[float | None, typer.Option("--epochs", help=_help("epochs"))] = None,
        learning_rate: Annotated[float | None, typer.Option("--learning-rate", help=_help("learning_rate"))] = None,
        lora_r: Annotated[int | None, typer.Option("--lora-r", help=_help("lora_r"))] = None,
        max_seq_length: Annotated[int | None, typer.Option("--max-seq-length", help=_help("max_seq_length"))] = None,
        quantization: Annotated[str | None, typer.Option("--quantization", help=_help("quantization"))] = None,
        gpu_hour_usd: Annotated[float | None, typer.Option("--gpu-hour-usd", help=_help("gpu_hour_usd"))] = None,
        json_schema: Annotated[Path | None, typer.Option("--json-schema", help=_help("json_schema"))] = None,
        output_dir: Annotated[Path | None, typer.Option("--output-dir", help=_help("output_dir"))] = None,
        memory_budget: Annotated[float | None, typer.Option("--memory-budget", help=_help("memory_budget_gib"))] = None,
        resume: Annotated[bool, typer.Option("--resume", help=_help("resume"))] = False,
        gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs to train on. 2 or more: one process per GPU "
                                          "through accelerate (DDP), rank 0 publishes; 1: this process.")] = 1,
    ) -> None:
        """Train a LoRA/QLoRA adapter for a format or voice and publish it under the adapters dir."""
        from rich.console import Console

        from ragtune.settings import Settings
        from trainer.config import load_config
        from trainer.train import train_adapter

        cfg = load_config(
            config, style=style, data=data, max_steps=max_steps, epochs=epochs, learning_rate=learning_rate,
            lora_r=lora_r, max_seq_length=max_seq_length, quantization=quantization, gpu_hour_usd=gpu_hour_usd,
            json_schema=json_schema, output_dir=output_dir, memory_budget_gib=memory_budget, resume=resume or None,
        )
        if gpus == 1:
            train_adapter(cfg, Settings())
            return
        from trainer.distributed import launch
        from trainer.train import print_summary

        print_summary(Console(stderr=True), launch(cfg, Settings(), gpus))
