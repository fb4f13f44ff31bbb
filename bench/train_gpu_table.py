"""Issue 14's acceptance, read off ``bench/train_gpu.py`` results: ragtune vs Unsloth vs the HF baseline.

    python bench/train_gpu_table.py --calls 16 17 18 19 [--results bench/results/train_gpu.json] [--budget 15]

``--calls`` picks entries of the results file's ``calls`` list (0-based, as written). Pick calls
of one machine: tokens/s differ by up to ~20% between machines of the same kind, so ratios only
hold within one. Where a (recipe, data) pair ran more than once, the last run counts.

Prints a Markdown table per data cell (data × rows per pass): every recipe's tokens/s and peak
memory, and for ragtune's recipes the ratio to Unsloth's and to the HF baseline's tokens/s. Then
one verdict line per acceptance point:

* one row per pass: ragtune's default recipe peaks at or below Unsloth's reserved memory;
* speed at an equal memory budget (``--budget``, GiB of peak reserved memory): ragtune's default
  recipe, and separately the fastest ragtune recipe within the budget (named: it is a config
  option, not the default), against the fastest Unsloth recipe within the budget (≥ 1.1×) and
  the HF baseline (≥ 2.0×).

Runs without a GPU: it only reads the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEED_VS_UNSLOTH = 1.1
SPEED_VS_HF = 2.0


def runs_of(results: dict, calls: list[int]) -> dict[tuple[str, int], dict[str, dict]]:
    """{(data, batch): {recipe: run}} over the chosen calls; failed runs are left out."""
    cells: dict[tuple[str, int], dict[str, dict]] = {}
    available = results["calls"]
    for index in calls:
        if not 0 <= index < len(available):
            raise SystemExit(f"train_gpu_table: no call {index} (the file has {len(available)}: 0-{len(available) - 1})")
        for run in available[index]["runs"]:
            if "tokens_per_s" in run:
                cells.setdefault((run["data"], run["batch"]), {})[run["recipe"]] = run
    return cells


def family(recipe: str) -> str:
    return "unsloth" if recipe.startswith("unsloth") else "hf" if recipe == "hf" else "ragtune"


def fastest(runs: dict[str, dict], kind: str, budget: float) -> tuple[str, dict] | None:
    """The fastest run of one family whose peak reserved memory is within the budget."""
    within = [(r, run) for r, run in runs.items()
              if family(r) == kind and run["train_peak_reserved_gib"] <= budget]
    return max(within, key=lambda item: item[1]["tokens_per_s"], default=None)


def table(cell: tuple[str, int], runs: dict[str, dict], budget: float) -> list[str]:
    unsloth, hf = fastest(runs, "unsloth", budget), runs.get("hf")
    lines = [f"#### {cell[0]} × {cell[1]}", "",
             "| recipe | tokens/s | peak reserved GiB | peak allocated GiB | vs Unsloth | vs HF |",
             "|---|---:|---:|---:|---:|---:|"]
    order = sorted(runs, key=lambda r: ({"ragtune": 0, "unsloth": 1, "hf": 2}[family(r)], r != "ragtune", r))
    for recipe in order:
        run = runs[recipe]
        ratios = ["", ""]
        if family(recipe) == "ragtune":
            ratios = [f"{run['tokens_per_s'] / ref['tokens_per_s']:.2f}×" if ref else "–"
                      for ref in (unsloth[1] if unsloth else None, hf)]
        lines.append(f"| {recipe} | {run['tokens_per_s']:,.0f} | {run['train_peak_reserved_gib']:.2f} | "
                     f"{run['train_peak_allocated_gib']:.2f} | {ratios[0]} | {ratios[1]} |")
    return [*lines, ""]


def verdicts(cell: tuple[str, int], runs: dict[str, dict], budget: float) -> list[str]:
    name = f"{cell[0]} × {cell[1]}"
    out = []
    default, unsloth_default = runs.get("ragtune"), runs.get("unsloth")
    if cell[1] == 1 and default and unsloth_default:
        mine, theirs = default["train_peak_reserved_gib"], unsloth_default["train_peak_reserved_gib"]
        out.append(f"- {name}, memory: ragtune {mine:.2f} vs Unsloth {theirs:.2f} GiB reserved: "
                   + ("**met**" if mine <= theirs else "not met"))
    unsloth, hf = fastest(runs, "unsloth", budget), runs.get("hf")
    if unsloth is None or hf is None:
        missing = " and ".join(x for x, ok in (("Unsloth within the budget", unsloth), ("HF", hf)) if not ok)
        return [*out, f"- {name}, speed: no {missing} run in these calls: not judged"]
    best = fastest(runs, "ragtune", budget)
    for label, pick in (("default", ("ragtune", default) if default else None), ("best option", best)):
        if pick is None or (label == "best option" and pick[0] == "ragtune"):
            continue
        recipe, run = pick
        vs_unsloth = run["tokens_per_s"] / unsloth[1]["tokens_per_s"]
        vs_hf = run["tokens_per_s"] / hf["tokens_per_s"]
        over = run["train_peak_reserved_gib"] > budget
        met = vs_unsloth >= SPEED_VS_UNSLOTH and vs_hf >= SPEED_VS_HF and not over
        out.append(f"- {name}, speed ({label}: {recipe}{', above the budget' if over else ''}): "
                   f"{vs_unsloth:.2f}× Unsloth ({unsloth[0]}), {vs_hf:.2f}× HF: "
                   + ("**met**" if met else "not met"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "bench/results/train_gpu.json")
    ap.add_argument("--calls", type=int, nargs="+", required=True, help="indices into the file's calls (0-based)")
    ap.add_argument("--budget", type=float, default=15.0, help="GiB of peak reserved memory (default 15)")
    args = ap.parse_args(argv)
    cells = runs_of(json.loads(args.results.read_text()), args.calls)
    if not cells:
        print("train_gpu_table: no successful runs in these calls", file=sys.stderr)
        return 1
    lines: list[str] = []
    for cell in sorted(cells):
        lines += table(cell, cells[cell], args.budget)
    lines += [f"Acceptance (issue 14; budget {args.budget:g} GiB peak reserved; "
              f"≥ {SPEED_VS_UNSLOTH}× Unsloth and ≥ {SPEED_VS_HF}× HF):"]
    for cell in sorted(cells):
        lines += verdicts(cell, cells[cell], args.budget)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
