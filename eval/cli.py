"""``ragtune eval``: run suites through the four arms and write the comparison report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        suite: Annotated[list[str] | None, typer.Option(
            "--suite", "-s", help="Suite to run (repeatable): facts, changing, format, voice, hybrid, 'all', "
            "or a path to a suite .yaml file.")] = None,
        limit: Annotated[list[str] | None, typer.Option(
            help="Items per suite (first N of its selection): N for every suite, or SUITE=N for one "
            "(repeatable, e.g. --limit 20 --limit facts=80).")] = None,
        out: Annotated[Path, typer.Option(help="Reports folder; the run writes OUT/<run-id>/.")] = Path("reports"),
        gpu_hour_usd: Annotated[float | None, typer.Option(
            min=0, help="$ per hour of the self-hosted serving machine (overrides the price table's).")] = None,
        prices: Annotated[Path | None, typer.Option(help="Price table YAML (default: eval/prices.yaml).")] = None,
        api_config: Annotated[Path | None, typer.Option(
            help="YAML naming an OpenAI-compatible endpoint for the api / api-rag arms (eval/api.py).")] = None,
        traffic: Annotated[float, typer.Option(min=1, help="Your requests per month: the cost pick is made "
                                               "there and marked on the break-even chart.")] = 100_000,
        quality_margin: Annotated[float, typer.Option(min=0, help="Shortfall from the best arm's primary metric "
                                                      "that still counts as as good, for the cost pick.")] = 0.02,
        batch_size: Annotated[int | None, typer.Option(min=1, help="Requests in flight at once (default: each suite's batch_size).")] = None,
        run_id: Annotated[str | None, typer.Option(help="Name of the run folder (default: UTC timestamp).")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    ) -> None:
        """Base vs rag-only vs ft-only vs hybrid (and a hosted API) on held-out suites, with cost and break-even;
        writes report.html and results.json."""
        from eval.report import print_summary
        from eval.run import EvalConfig, run_eval
        from ragtune.logs import with_engine_log
        from ragtune.settings import Settings

        settings = with_engine_log(Settings(), "eval-engine")
        console = Console()
        console.print(f"[dim]engine log: {settings.engine_log}[/dim]")
        default, per_suite = parse_limits(limit or [])
        config = EvalConfig(suites=suite or ["all"], limit=default, limits=per_suite, out=out,
                            gpu_hour_usd=gpu_hour_usd, prices=prices, api_config=api_config, traffic=traffic,
                            quality_margin=quality_margin, batch_size=batch_size, run_id=run_id, progress=progress)
        results, run_dir = run_eval(config, settings)
        print_summary(results, console)
        console.print(f"report: {run_dir / 'report.html'}")
        console.print(f"results: {run_dir / 'results.json'}")


    @app.command("advise")
    def advise_command(
        examples: Annotated[Path, typer.Option(help="Your examples: chat, prompt/completion or Alpaca JSONL "
                                               "(the trainer's formats).")],
        docs: Annotated[Path | None, typer.Option(help="A folder of documents the answers come from "
                                                  "(.md, .txt, .html, .pdf, .jsonl).")] = None,
        task: Annotated[str, typer.Option(help="auto (inferred from the examples), format, voice or facts.")] = "auto",
        schema: Annotated[Path | None, typer.Option(help="JSON Schema the outputs follow (format tasks).")] = None,
        test_fraction: Annotated[float, typer.Option(min=0.01, max=0.9, help="Share of examples held out.")] = 0.2,
        max_steps: Annotated[int | None, typer.Option(min=1, help="Training steps (default: the recipe's epochs "
                                                      "on a GPU, 30 on CPU).")] = None,
        limit: Annotated[int | None, typer.Option(min=1, help="Held-out items asked per arm (default: all).")] = None,
        api_config: Annotated[Path | None, typer.Option(help="A hosted OpenAI-compatible model to compare with "
                                                        "(eval/api.py).")] = None,
        prices: Annotated[Path | None, typer.Option(help="Price table YAML (default: eval/prices.yaml).")] = None,
        traffic: Annotated[float, typer.Option(min=1, help="Your requests per month.")] = 100_000,
        out: Annotated[Path, typer.Option(help="Folder for the suite, report and results (resumes if rerun).")]
        = Path("advise"),
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    ) -> None:
        """From your examples (and documents) to a decision: split, train, compare every arm, report cost."""
        from eval.advise import AdviseConfig, advise, ensure_clean
        from eval.report import print_summary
        from ragtune.logs import with_engine_log
        from ragtune.settings import Settings

        if task not in ("auto", "format", "voice", "facts"):
            raise typer.BadParameter(f"{task!r}: use auto, format, voice or facts", param_hint="--task")
        cfg = AdviseConfig(examples=examples, docs=docs, task=task, schema_path=schema, test_fraction=test_fraction,
                           max_steps=max_steps, limit=limit, api_config=api_config, prices=prices, traffic=traffic,
                           out=out, progress=progress)
        ensure_clean(cfg)
        settings = with_engine_log(Settings(), "advise-engine")
        console = Console()
        console.print(f"[dim]engine log: {settings.engine_log}[/dim]")
        results, run_dir = advise(cfg, settings, console=console)
        print_summary(results, console)
        console.print(f"report: {run_dir / 'report.html'}")
        console.print(f"results: {run_dir / 'results.json'}")
        console.print(f"suite (repeat with `ragtune eval --suite`): {run_dir / 'suite.yaml'}")


def parse_limits(values: list[str]) -> tuple[int | None, dict[str, int]]:
    """``["20", "facts=80"]`` -> (20, {"facts": 80}); a bad value is a BadParameter naming it."""
    default, per_suite = None, {}
    for value in values:
        name, _, count = value.rpartition("=")
        if not count.isdigit() or int(count) < 1 or (name == "" and "=" in value):
            raise typer.BadParameter(f"{value!r}: give N or SUITE=N with N >= 1", param_hint="--limit")
        if name:
            per_suite[name] = int(count)
        else:
            default = int(count)
    return default, per_suite
