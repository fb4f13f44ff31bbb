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
        limit: Annotated[int | None, typer.Option(min=1, help="Items per suite (first N of its selection).")] = None,
        out: Annotated[Path, typer.Option(help="Reports folder; the run writes OUT/<run-id>/.")] = Path("reports"),
        gpu_hour_usd: Annotated[float, typer.Option(
            min=0, help="$ per accelerator hour for the cost per 1k requests (CPU time is priced the same).")]
        = DEFAULT_GPU_HOUR_USD,
        batch_size: Annotated[int | None, typer.Option(min=1, help="Requests per engine batch.")] = None,
        run_id: Annotated[str | None, typer.Option(help="Name of the run folder (default: UTC timestamp).")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    ) -> None:
        """Base vs rag-only vs ft-only vs hybrid on held-out suites; writes report.html and results.json."""
        from eval.report import print_summary
        from eval.run import EvalConfig, run_eval
        from ragtune.logs import engine_logs_to
        from ragtune.settings import Settings

        settings = Settings()
        console = Console()
        log = engine_logs_to(settings, "eval-engine")
        console.print(f"[dim]engine log: {log}[/dim]")
        config = EvalConfig(suites=suite or ["all"], limit=limit, out=out, gpu_hour_usd=gpu_hour_usd,
                            batch_size=batch_size, run_id=run_id, progress=progress)
        results, run_dir = run_eval(config, settings)
        print_summary(results, console)
        console.print(f"report: {run_dir / 'report.html'}")
        console.print(f"results: {run_dir / 'results.json'}")
