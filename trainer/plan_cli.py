"""``ragtune plan``: peak GPU memory, a GPU and a cost for a QLoRA run, before renting anything."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ragtune.errors import RagtuneError

console = Console()


class LossImpl(str, Enum):
    chunked = "chunked"
    full = "full"

err_console = Console(stderr=True)


def plan(
    params: Annotated[
        str | None,
        typer.Option("--params", "-p", help="Model size: 270M, 1B, 3B, 7B, 8B, 13B, 14B, 32B, 33B/30B, 70B (published shapes)."),
    ] = None,
    seq: Annotated[int, typer.Option("--seq", help="Tokens per sequence.")] = 2048,
    rank: Annotated[int, typer.Option("--rank", "-r", help="LoRA rank (all seven projections).")] = 16,
    batch: Annotated[int, typer.Option("--batch", "-b", help="Sequences per micro-batch per GPU.")] = 1,
    model_dir: Annotated[
        Path | None, typer.Option("--model-dir", help="A Hugging Face model folder (its config.json) instead of --params.")
    ] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", help="Tokens to train on (all epochs), for the cost.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps, for the cost (if --tokens is not given).")] = None,
    gpu_hour_usd: Annotated[
        float | None, typer.Option("--gpu-hour-usd", help="Your price per GPU-hour for the recommended GPU.")
    ] = None,
    upcast_fp32: Annotated[
        bool, typer.Option("--upcast-fp32", help="Model prepare_model_for_kbit_training (fp32 embeddings, head, norms).")
    ] = False,
    autocast: Annotated[
        bool, typer.Option("--autocast", help="Training under bf16 autocast (HF/trl Trainer bf16=True, as ragtune trains on GPU).")
    ] = False,
    loss: Annotated[
        LossImpl,
        typer.Option(
            "--loss",
            help="chunked: trl>=1.16 SFTTrainer's fused LM head (ragtune's trainer); full: plain transformers loss "
            "on full fp32 logits. ragtune's own trainer on a GPU: --autocast (chunked is the default).",
        ),
    ] = LossImpl.chunked,
    offload: Annotated[
        bool, typer.Option("--offload", help="Checkpointed layer inputs in host memory (activation offloading; "
                           "ragtune's CUDA default at --batch 1).")
    ] = False,
    checkpointed_layers: Annotated[
        int | None, typer.Option("--checkpointed-layers", help="Checkpoint only the first K layers (default: all); "
                                 "the rest keep their activations and skip the recompute.")
    ] = None,
    memory_budget: Annotated[
        float | None, typer.Option("--memory-budget", help="GiB the GPU may fill: plan with the fewest checkpointed "
                                   "layers that fit (what train-adapter's memory_budget_gib picks).")
    ] = None,
    single_quant: Annotated[bool, typer.Option("--single-quant", help="NF4 without double quantisation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the PlanResult as JSON.")] = False,
) -> None:
    """Estimate the peak GPU memory of QLoRA fine-tuning, term by term, and what a run costs."""
    from trainer.plan import plan as plan_model
    from trainer.plan import plan_request

    if (params is None) == (model_dir is None):
        err_console.print("[red]error:[/red] give exactly one of --params (e.g. 8B) or --model-dir PATH")
        raise typer.Exit(2)
    if checkpointed_layers is not None and memory_budget is not None:
        err_console.print("[red]error:[/red] give --checkpointed-layers or --memory-budget, not both")
        raise typer.Exit(2)
    try:
        request = plan_request(
            params, model_dir=model_dir, seq_len=seq, batch_size=batch, rank=rank, tokens=tokens, steps=steps,
            gpu_hour_usd=gpu_hour_usd, upcast_fp32=upcast_fp32, double_quant=not single_quant, autocast=autocast,
            loss_impl=loss.value, activation_offloading=offload, checkpointed_layers=checkpointed_layers,
        )
        if memory_budget is not None:
            request = _within_budget(request, memory_budget)
        result = plan_model(request)
    except RagtuneError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None

    if as_json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
        return

    table = Table(
        title=f"QLoRA plan: {result.model} ({result.total_params / 1e9:.2f}B params), "
        f"seq {result.seq_len} × batch {result.batch_size}, r={result.rank}",
    )
    table.add_column("term")
    table.add_column("GiB", justify="right")
    table.add_column("note", style="dim")
    for t in result.terms:
        label = t.label if t.counted else f"[dim]({t.label})[/dim]"
        table.add_row(label, f"{t.gib:.2f}", t.note)
    table.add_section()
    table.add_row("peak allocated (torch)", f"{result.peak_allocated_gib:.2f}", "≈ max_memory_allocated")
    table.add_row("peak reserved (torch)", f"{result.peak_reserved_gib:.2f}", "≈ max_memory_reserved")
    table.add_row("[bold]total on the GPU[/bold]", f"[bold]{result.total_gib:.2f}[/bold]", "+ CUDA context, paged optimizer")
    console.print(table)

    if result.recommended_gpu:
        line = f"recommended GPU: [bold]{result.recommended_gpu}[/bold] (fits with 10% headroom)"
        if result.tokens_per_s:
            line += f", ~{result.tokens_per_s:,.0f} tokens/s"
        console.print(line)
    else:
        console.print("[yellow]no single GPU in the table fits: shard the model (FSDP + QLoRA) or shorten --seq[/yellow]")
    if result.cost_usd is not None:
        console.print(
            f"run: {result.train_tokens:,} tokens ≈ {result.hours:.2f} h ≈ [bold]${result.cost_usd:,.2f}[/bold]"
            + (" (your price)" if gpu_hour_usd else " (typical on-demand price; --gpu-hour-usd to change)")
        )
    else:
        console.print("[dim]give --tokens or --steps for a time and cost estimate[/dim]")
    console.print("[dim]assumptions: " + "; ".join(result.assumptions) + "[/dim]")


def _within_budget(request, budget: float):
    """The request with the fewest checkpointed layers that fit ``budget``, said in one line."""
    from ragtune.errors import InvalidRequestError
    from trainer.plan import layers_to_checkpoint, plan

    if request.activation_offloading:
        raise InvalidRequestError("--memory-budget keeps activations on the GPU; drop --offload", param="offload")
    layers = layers_to_checkpoint(request, budget)
    if layers is None:
        raise InvalidRequestError(f"--memory-budget {budget:g}: even with every layer checkpointed the plan needs "
                                  f"{plan(request).total_gib:.2f} GiB", param="memory_budget")
    total = request.shape.num_layers
    err_console.print(f"memory budget {budget:g} GiB: checkpoint the first {layers} of {total} layers "
                      f"({total - layers} keep their activations and skip the recompute)")
    return request.model_copy(update={"checkpointed_layers": layers})


def register(app: typer.Typer) -> None:
    """Mount ``plan`` on the ragtune command."""
    app.command("plan")(plan)
