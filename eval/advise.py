"""``ragtune advise``: from a team's own examples (and documents) to a decision, unattended.

Steps, each printed as it starts:

1. validate the examples with the trainer's reader (line-numbered errors; nothing is written
   before the file is clean), and the schema and the documents folder when given;
2. split held-out test rows: a seeded hash of each input picks them (deterministic, the same file
   always gives the same split), exact duplicates are dropped, and a training row whose input
   is also a test input is removed from training (no leak);
3. infer the task when ``--task auto``: JSON outputs -> ``format`` (field F1, schema validity);
   documents -> ``facts`` (QA F1 against the answers); otherwise -> ``voice`` (style from a
   classifier fitted on the examples' own input/output pairs, content similarity); JSON outputs
   *and* documents -> both (the hybrid is expected to win);
4. write the suite: ``OUT/suite.yaml`` with the split files and documents beside it — an eval
   suite like the shipped ones, so ``ragtune eval --suite OUT/suite.yaml`` repeats the run and the
   YAML can be edited and extended;
5. run it: ingest, train the adapter (QLoRA on CUDA; on a CPU a bounded step budget), every
   applicable arm (the api arms when ``--api-config`` names an endpoint), and write
   ``OUT/report.html`` and ``OUT/results.json`` with the decision, intervals, cost and break-even.

An interrupted run resumes: the split and suite are rewritten identically, documents already in
the store are not embedded again, a trained adapter is reused from ``OUT/cache`` and an
interrupted training continues from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from ragtune.errors import ConfigError, InvalidRequestError
from ragtune.jsonformat import parse_strict

Task = Literal["auto", "format", "voice", "facts"]
MANIFEST = "advise.json"
CPU_MAX_STEPS = 30  # the CPU step budget when --max-steps is not given (about a minute for short rows)
RECIPES = Path(__file__).resolve().parents[1] / "trainer" / "recipes"
MIN_TEST_ROWS = 5


class AdviseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: Path
    docs: Path | None = None
    task: Task = "auto"
    schema_path: Path | None = None
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    max_steps: int | None = Field(default=None, ge=1, description="Optimizer steps (default: the recipe's epochs "
                                  f"on CUDA, {CPU_MAX_STEPS} on CPU).")
    limit: int | None = Field(default=None, ge=1, description="Held-out items asked (default: all).")
    api_config: Path | None = None
    prices: Path | None = None
    traffic: float = Field(default=100_000, gt=0)
    out: Path = Path("advise")
    progress: bool = True


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    input: str
    output: str
    line: int


# ---------------------------------------------------------------------------------------------
# Reading and splitting


def read_rows(path: Path) -> tuple[list[Row], str]:
    """The examples as (input, output) rows, validated by the trainer's reader; and the file's sha256."""
    from trainer.data import load_training_file

    data = load_training_file(path)
    rows = [Row(id=f"line-{ex.line}", input=_prompt_text(ex.prompt), output=ex.completion.strip(), line=ex.line)
            for ex in data.examples]
    return rows, data.sha256


def _prompt_text(prompt: str | list[dict[str, str]]) -> str:
    """A chat prompt as one user message: its system and user turns, in order (single-turn view)."""
    if isinstance(prompt, str):
        return prompt.strip()
    return "\n\n".join(m["content"].strip() for m in prompt if m["role"] in ("system", "user") and m["content"].strip())


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def split_rows(rows: list[Row], test_fraction: float) -> tuple[list[Row], list[Row], dict[str, int]]:
    """(train, test, counts): test = the rows whose input hash falls in the first ``test_fraction``."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for r in rows:
        pair = (_key(r.input), _key(r.output))
        if pair not in seen:
            seen.add(pair)
            unique.append(r)
    order = sorted(unique, key=lambda r: hashlib.sha256(_key(r.input).encode()).hexdigest())
    n_test = max(1, round(len(order) * test_fraction))
    test = sorted(order[:n_test], key=lambda r: r.line)
    test_inputs = {_key(r.input) for r in test}
    train = [r for r in unique if _key(r.input) not in test_inputs]
    counts = {"rows": len(rows), "duplicates": len(rows) - len(unique), "test": len(test), "train": len(train),
              "removed_as_test_inputs": len(unique) - len(test) - len(train)}
    if len(test) < MIN_TEST_ROWS or len(train) < 2:
        raise InvalidRequestError(
            f"{len(rows)} examples give {len(train)} to train on and {len(test)} held out; a decision needs at least "
            f"{MIN_TEST_ROWS} held out and 2 to train on (add examples or raise --test-fraction)", param="examples")
    return train, test, counts


def infer_task(rows: list[Row], has_docs: bool) -> tuple[str, str]:
    """(task, why) from the examples: JSON outputs -> format; documents -> facts; else voice."""
    json_outputs = sum(isinstance(parse_strict(r.output), dict) for r in rows)
    if json_outputs == len(rows):
        return "format", f"every output is a JSON object ({len(rows)} of {len(rows)})"
    if has_docs:
        words = statistics.median(len(r.output.split()) for r in rows)
        return "facts", f"documents were given and outputs are answers (median {words:g} words)"
    return "voice", (f"outputs are free text ({len(rows) - json_outputs} of {len(rows)} not JSON) and no documents: "
                     "a rewrite into a voice")


def common_affixes(texts: list[str]) -> tuple[str, str]:
    """The prefix and suffix every input shares (the instruction around the text), at word bounds."""
    if len(texts) < 2:
        return "", ""
    prefix = os.path.commonprefix(texts)
    suffix = os.path.commonprefix([t[::-1] for t in texts])[::-1]
    prefix = prefix[: prefix.rfind("\n") + 1] if "\n" in prefix else prefix[: prefix.rfind(" ") + 1]
    suffix = suffix[suffix.find("\n"):] if "\n" in suffix else suffix[suffix.find(" ") + 1:] if " " in suffix else ""
    return prefix, suffix


def _source_text(text: str, prefix: str, suffix: str) -> str:
    """The text to rewrite, without the instruction every input repeats (the classifier must see voices)."""
    body = text[len(prefix):] if prefix and text.startswith(prefix) else text
    body = body[: len(body) - len(suffix)] if suffix and body.endswith(suffix) else body
    return body.strip() or text


# ---------------------------------------------------------------------------------------------
# Writing the suite


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def _max_tokens(rows: list[Row]) -> int:
    # ~4 characters per token, with room: a cap that never cuts a typical answer short
    longest = max(len(r.output) for r in rows)
    return max(16, min(1024, int(longest / 3) + 16))


def _recipe(task: str) -> dict[str, Any]:
    from trainer.config import read_recipe

    return read_recipe(RECIPES / ("voice.yaml" if task == "voice" else "format.yaml"))


def build_suite(cfg: AdviseConfig, task: str, train: list[Row], test: list[Row], docs: int, cuda: bool,
                name: str) -> dict[str, Any]:
    """The suite YAML (as a dict) over the files written into ``cfg.out``; paths are absolute."""
    out = cfg.out.resolve()
    single_line = all("\n" not in r.output for r in train + test)
    metric: dict[str, Any]
    if task == "format":
        metric = {"kind": "json", "primary": "field_f1"}
        if cfg.schema_path:
            metric["schema"] = str(cfg.schema_path.resolve())
    elif task == "facts":
        metric = {"kind": "qa", "primary": "f1"}
    else:
        metric = {"kind": "style", "primary": "style",
                  "style": {"path": str(out / "train.jsonl"), "source_field": "source", "target_field": "output",
                            "heldout_path": str(out / "test.jsonl")}}
    expect = "both" if task == "format" and docs else ("rag" if task == "facts" else "ft")
    steps = cfg.max_steps or (None if cuda else CPU_MAX_STEPS)
    config = {**_recipe(task), "task_eval_limit": 0}  # the eval scores the held-out rows itself
    if steps is not None:
        config["max_steps"] = steps
    if cfg.schema_path and task == "format":
        config["json_schema"] = str(cfg.schema_path.resolve())
    budget = (f"a budget of {steps} optimizer steps (--max-steps)" if steps else "the recipe's epochs")
    retrieval: dict[str, Any] = {"top_k": 3, "query": "{input}"}
    if docs:
        retrieval["documents"] = {"path": str(out / "documents.jsonl"), "text": "{text}", "source": "{source}"}
    else:  # no documents: retrieve similar solved examples (dynamic few-shot), never the test rows
        retrieval["documents"] = {"path": str(out / "train.jsonl"), "kind": "example",
                                  "text": "Input: {input}\nOutput: {output}"}
    return {
        "name": name,
        "description": (f"Generated by ragtune advise from {cfg.examples} ({len(train)} training rows, {len(test)} "
                        f"held out). Task: {task}. The adapter trains with the {('voice' if task == 'voice' else 'format')}"
                        f" recipe on {'CUDA (QLoRA)' if cuda else 'CPU (bf16 LoRA)'} for {budget}."),
        "expect": expect,
        "data": {"path": str(out / "test.jsonl"), "input_field": "input", "reference_field": "reference",
                 "select": {"strategy": "head"}},
        "prompt": {"user": "{input}", "max_tokens": _max_tokens(train + test),
                   "stop": ["\n"] if single_line else [],
                   "few_shot": {"path": str(out / "train.jsonl"), "count": min(3, len(train)),
                                "select": {"strategy": "seeded", "seed": 7}, "assistant": "{output}"}},
        "metric": metric,
        "adapter": {"train": {"name": f"{name}-adapter", "rows": {"path": str(out / "train.jsonl"),
                                                                 "prompts": ["{input}"], "completion": "{output}"},
                              "config": config}},
        "retrieval": retrieval,
        "batch_size": 8,
    }


def _reference(task: str, row: Row) -> Any:
    if task == "format":
        return parse_strict(row.output)
    if task == "facts":
        return [row.output]
    return row.output


def write_inputs(cfg: AdviseConfig, task: str, train: list[Row], test: list[Row], documents: list) -> None:
    prefix, suffix = common_affixes([r.input for r in train + test])
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        _jsonl(cfg.out / name, [{"id": r.id, "input": r.input, "output": r.output,
                                 "source": _source_text(r.input, prefix, suffix),
                                 "reference": _reference(task, r)} for r in rows])
    if documents:
        _jsonl(cfg.out / "documents.jsonl", [{"id": d.id, "text": d.text, "source": d.source or d.id}
                                             for d in documents])


def _check_out(out: Path, digest: str) -> None:
    """An existing OUT must hold this examples file's run (which then resumes), not another one."""
    manifest = out / MANIFEST
    if manifest.is_file():
        earlier = json.loads(manifest.read_text())
        if earlier.get("inputs_sha256") != digest:
            raise InvalidRequestError(f"{out} holds an advise run for other inputs ({earlier.get('examples')}); "
                                      "choose another --out or remove it", param="out")
    elif out.exists() and any(out.iterdir()):
        raise InvalidRequestError(f"{out} exists and is not an advise run folder; choose another --out", param="out")


# ---------------------------------------------------------------------------------------------
# The whole flow


def advise(cfg: AdviseConfig, settings=None, backend=None, console: Console | None = None):
    """Run the flow (module docstring); returns (EvalResults, out folder)."""
    import torch

    from eval.run import EvalConfig, run_eval
    from ragtune.settings import Settings

    console = console or Console(stderr=True, quiet=not cfg.progress)
    settings = settings or Settings()
    step = _Steps(console)

    step("validating the examples")
    rows, sha = read_rows(cfg.examples)
    if cfg.schema_path is not None:
        from ragtune.jsonformat import load_schema
        from trainer.data import check_completions_schema, load_training_file

        check_completions_schema(load_training_file(cfg.examples), load_schema(cfg.schema_path), cfg.schema_path)
    documents = _load_docs(cfg.docs) if cfg.docs is not None else []
    train, test, counts = split_rows(rows, cfg.test_fraction)
    task, why = (cfg.task, "given with --task") if cfg.task != "auto" else infer_task(rows, bool(documents))
    if task == "facts" and not documents:
        raise InvalidRequestError("--task facts needs --docs (the documents the answers come from)", param="docs")
    console.print(f"  {counts['rows']} examples: {counts['train']} to train, {counts['test']} held out, "
                  f"{counts['duplicates']} duplicates dropped, {counts['removed_as_test_inputs']} training rows "
                  f"removed (their input is a test input); {len(documents)} documents")
    console.print(f"  task: [bold]{task}[/bold] ({why})")

    digest = hashlib.sha256(json.dumps([sha, [(d.id, d.text) for d in documents], task, cfg.test_fraction,
                                        cfg.max_steps, str(cfg.schema_path)]).encode()).hexdigest()
    _check_out(cfg.out, digest)

    step(f"writing the suite to {cfg.out / 'suite.yaml'}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    name = "advise-" + _slug(cfg.examples.stem)
    write_inputs(cfg, task, train, test, documents)
    suite = build_suite(cfg, task, train, test, len(documents), cuda, name)
    (cfg.out / "suite.yaml").write_text("# ragtune advise wrote this suite; `ragtune eval --suite` it to repeat the "
                                        "run.\n" + yaml.safe_dump(suite, sort_keys=False, allow_unicode=True),
                                        encoding="utf-8")
    (cfg.out / MANIFEST).write_text(json.dumps({"examples": str(cfg.examples), "inputs_sha256": digest,
                                                "task": task, "why": why, "split": counts}, indent=2))

    step("ingesting, training the adapter and asking every arm (this is the long part)")
    config = EvalConfig(suites=[str(cfg.out / "suite.yaml")], limit=cfg.limit, out=cfg.out.parent,
                        run_id=cfg.out.name, cache_dir=cfg.out / "cache", api_config=cfg.api_config,
                        prices=cfg.prices, traffic=cfg.traffic, progress=cfg.progress)
    results, run_dir = run_eval(config, settings, backend=backend, console=console)
    return results, run_dir


def _load_docs(folder: Path) -> list:
    from retriever.loaders import load_report

    report = load_report(folder)
    if report.failures:
        listed = "; ".join(f"{f}: {why}" for f, why in report.failures[:5])
        raise InvalidRequestError(f"{folder}: {len(report.failures)} file(s) could not be read ({listed})",
                                  param="docs")
    if not report.documents:
        raise InvalidRequestError(f"{folder}: no documents found", param="docs")
    return report.documents


def _slug(text: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return ("-".join(p for p in slug.split("-") if p) or "examples")[:24]


class _Steps:
    def __init__(self, console: Console):
        self.console, self.n = console, 0

    def __call__(self, what: str) -> None:
        self.n += 1
        self.console.print(f"[bold cyan]advise {self.n}/4[/bold cyan] {what}…")


def ensure_clean(cfg: AdviseConfig) -> None:
    """Checks that need no model: the paths given exist (so a typo fails before anything starts)."""
    for flag, path in (("--examples", cfg.examples), ("--schema", cfg.schema_path), ("--api-config", cfg.api_config),
                       ("--prices", cfg.prices)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag} {path} does not exist", param=flag.lstrip("-"))
    if cfg.docs is not None and not cfg.docs.is_dir():
        raise ConfigError(f"--docs {cfg.docs} is not a folder", param="docs")
