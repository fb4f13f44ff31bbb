"""``ragtune eval``: run suites through the four arms and write the comparison report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eval.stats import DEFAULT_GPU_HOUR_USD


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
        gpu_hour_usd: Annotated[float, typer.Option(
            min=0, help="$ per accelerator hour for the cost per 1k requests (CPU time is priced the same).")]
        = DEFAULT_GPU_HOUR_USD,
        batch_size: Annotated[int | None, typer.Option(min=1, help="Requests in flight at once (default: each suite's batch_size).")] = None,
        run_id: Annotated[str | None, typer.Option(help="Name of the run folder (default: UTC timestamp).")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    ) -> None:
        """Base vs rag-only vs ft-only vs hybrid on held-out suites; writes report.html and results.json."""
        from eval.report import print_summary
        from eval.run import EvalConfig, run_eval
        from ragtune.logs import with_engine_log
        from ragtune.settings import Settings

        settings = with_engine_log(Settings(), "eval-engine")
        console = Console()
        console.print(f"[dim]engine log: {settings.engine_log}[/dim]")
        default, per_suite = parse_limits(limit or [])
        config = EvalConfig(suites=suite or ["all"], limit=default, limits=per_suite, out=out,
                            gpu_hour_usd=gpu_hour_usd, batch_size=batch_size, run_id=run_id, progress=progress)
        results, run_dir = run_eval(config, settings)
        print_summary(results, console)
        console.print(f"report: {run_dir / 'report.html'}")
        console.print(f"results: {run_dir / 'results.json'}")


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
