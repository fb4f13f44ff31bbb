"""Run suites through the four arms and write ``reports/<run-id>/{report.html,results.json}``.

Order inside a suite (it matters for changing facts): ingest the documents, get the adapter
(existing, cached or trained now), upsert the update documents, then ask every arm.
"""

from __future__ import annotations

import itertools
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eval import adapters as adapter_mod
from eval.arms import ArmFailedError, plan_arm, run_arm
from eval.ingest import ingest
from eval.results import (
    ArmResult,
    AsOfProbe,
    Decision,
    EvalResults,
    IngestInfo,
    ItemResult,
    RunInfo,
    StyleInfo,
    SuiteResult,
    validate_results,
)
from eval.scoring import score_outputs
from eval.stats import (
    DEFAULT_GPU_HOUR_USD,
    PairedDiff,
    bootstrap_mean,
    cost_per_1k_requests,
    latency_stats,
    paired_bootstrap,
)
from eval.suites import ARMS, METRIC_KINDS, Suite, resolve_suites
from ragtune.settings import Settings

EXPECTED_ARM = {"rag": "rag", "ft": "ft", "both": "hybrid"}
# What each arm brings: (retrieval, adapter). The rule names a mechanism, not an arm: "facts ->
# retrieval" holds when the winner retrieves, whether the base model or the reader adapter reads.
USES = {"base": (False, False), "rag": (True, False), "ft": (False, True), "hybrid": (True, True)}
MECHANISM = {"rag": "retrieval", "ft": "the adapter", "both": "retrieval and the adapter together"}


def carries(arm: str, expect: str) -> bool:
    """Whether ``arm`` uses the mechanism the rule names for ``expect``."""
    retrieval, adapter = USES[arm]
    return {"rag": retrieval, "ft": adapter, "both": retrieval and adapter}[expect]
# The seed's rule, in its own words, per expectation.
RULES = {
    "rag": "RAG for changing, cited or per-user knowledge: facts live in a store that is updated "
           "without retraining and cited per answer.",
    "ft": "Fine-tuning for format, voice, domain reasoning or tight latency: a behaviour is learned once "
          "into an adapter; retrieved text cannot teach it reliably.",
    "both": "Both when the task needs both: retrieval supplies the facts, the adapter supplies the format.",
}


class EvalConfig(BaseModel):
    """One eval run (the CLI flags map onto these fields)."""

    model_config = ConfigDict(extra="forbid")

    suites: list[str] = Field(default_factory=lambda: ["all"], description="Shipped suite names, paths, or 'all'.")
    limit: int | None = Field(default=None, ge=1, description="Items per suite (first N of its selection).")
    limits: dict[str, int] = Field(default_factory=dict, description="Per-suite item counts, overriding `limit`.")
    out: Path = Field(default=Path("reports"), description="Reports folder; the run writes OUT/<run-id>/.")
    run_id: str | None = Field(default=None, description="Folder name of the run (default: UTC timestamp).")
    gpu_hour_usd: float = Field(default=DEFAULT_GPU_HOUR_USD, ge=0, description="Price of an accelerator hour.")
    batch_size: int | None = Field(default=None, ge=1, le=256, description="Requests in flight at once, overriding "
                                   "the suites' batch_size (the engine batches them continuously).")
    adapters_dirs: list[Path] = Field(default_factory=list, description="Extra folders to look for adapters in.")
    cache_dir: Path | None = Field(default=None, description="Trained adapters and the style classifier "
                                   "(default: SETTINGS.cache_dir/eval).")
    examples_per_arm: int = Field(default=3, ge=0, le=20, description="Example outputs shown in the report.")
    progress: bool = True


def _new_run_id(out: Path) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for n in itertools.count():
        run_id = stamp if n == 0 else f"{stamp}-{n}"
        if not (out / run_id).exists():
            return run_id
    raise AssertionError("unreachable")


def _device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - torch always imports here
        pass
    return f"cpu ({platform.processor() or platform.machine()})"


def _decide(suite: Suite, arms: list[ArmResult], scores: dict[str, list[float]]) -> tuple[Decision, list[PairedDiff]]:
    primary = suite.spec.metric.primary
    higher = METRIC_KINDS[suite.spec.metric.kind][primary]
    ran = [a for a in arms if a.status == "ok"]
    expected = EXPECTED_ARM[suite.spec.expect]
    rule = RULES[suite.spec.expect]
    comparisons = [
        paired_bootstrap(scores[a.arm], scores[b.arm], names=(a.arm, b.arm), metric=primary)
        for a, b in itertools.combinations(ran, 2)
    ]
    if len(ran) < 2:
        return Decision(primary_metric=primary, higher_is_better=higher, winner=ran[0].arm if ran else None,
                        runner_up=None, margin=None, expected=expected,
                        expected_arms=[a for a in ARMS if carries(a, suite.spec.expect)],
                        mechanism=MECHANISM[suite.spec.expect], rule=rule, verdict="undecided",
                        summary="fewer than two arms ran; nothing to compare"), comparisons
    sign = 1 if higher else -1
    # Stable order (ARMS) breaks exact ties in favour of the simpler, cheaper arm.
    ranked = sorted(ran, key=lambda a: -sign * a.metrics[primary].mean)
    winner, runner = ranked[0], ranked[1]
    margin = paired_bootstrap(scores[winner.arm], scores[runner.arm], names=(winner.arm, runner.arm), metric=primary)
    better = "higher" if higher else "lower"
    summary = (f"{winner.arm} wins on {primary} ({winner.metrics[primary].mean:.3f}) over {runner.arm} "
               f"({runner.metrics[primary].mean:.3f}): difference {margin.diff:+.3f}, 95% CI "
               f"[{margin.low:+.3f}, {margin.high:+.3f}], p={margin.p_value:.3f} — "
               + ("significant." if margin.significant else "not significant at this sample size."))
    note = ""
    expect = suite.spec.expect
    with_it = [a for a in ranked if carries(a.arm, expect)]
    without = [a for a in ranked if not carries(a.arm, expect)]
    mechanism = None
    if with_it and without:  # best arm with the rule's mechanism vs best arm without it
        mechanism = paired_bootstrap(scores[with_it[0].arm], scores[without[0].arm],
                                     names=(with_it[0].arm, without[0].arm), metric=primary)
        summary += (f" With {MECHANISM[expect]}: best {with_it[0].arm} ({with_it[0].metrics[primary].mean:.3f}); "
                    f"without: best {without[0].arm} ({without[0].metrics[primary].mean:.3f}); difference "
                    f"{mechanism.diff:+.3f}, 95% CI [{mechanism.low:+.3f}, {mechanism.high:+.3f}]"
                    + (", significant." if mechanism.significant else ", not significant."))
    if carries(winner.arm, expect):
        verdict = "agrees"
    elif not with_it:
        verdict = "undecided"
        note = f"No arm with {MECHANISM[expect]} ran for this suite."
    else:
        best = with_it[0]
        vs = paired_bootstrap(scores[winner.arm], scores[best.arm], names=(winner.arm, best.arm), metric=primary)
        verdict = "disagrees" if vs.significant else "tie"
        note = (f"The rule expects {MECHANISM[expect]} to win, but {winner.arm} scored {better} on {primary} "
                f"than the best arm with it, {best.arm} ({winner.metrics[primary].mean:.3f} vs "
                f"{best.metrics[primary].mean:.3f}; difference {vs.diff:+.3f}, 95% CI [{vs.low:+.3f}, {vs.high:+.3f}]). "
                + ("The data disagree with the expectation for this model and task."
                   if vs.significant else "The gap is within noise: the data neither confirm nor refute the rule."))
    if winner.cost_per_1k_usd is not None and runner.cost_per_1k_usd is not None:
        summary += (f" Serving cost per 1k requests: {winner.arm} ${winner.cost_per_1k_usd:.3f} vs "
                    f"{runner.arm} ${runner.cost_per_1k_usd:.3f}.")
    return Decision(primary_metric=primary, higher_is_better=higher, winner=winner.arm, runner_up=runner.arm,
                    margin=margin, expected=expected, expected_arms=[a for a in ARMS if carries(a, expect)],
                    mechanism=MECHANISM[expect], mechanism_margin=mechanism, rule=rule, verdict=verdict,
                    summary=summary, note=note), comparisons


def run_suite(suite: Suite, router, store, settings: Settings, config: EvalConfig, cache_dir: Path,
              style, progress: Progress | None, console: Console) -> SuiteResult:
    started = time.perf_counter()
    spec = suite.spec
    items = suite.items(config.limits.get(suite.name, config.limit))
    if not items:
        raise ValueError(f"suite {suite.name!r} selected no items")
    batch = config.batch_size or spec.batch_size

    ingest_info = None
    if spec.retrieval is not None:
        docs, chunks, secs = ingest(store, suite, items, spec.retrieval.documents)
        ingest_info = IngestInfo(collection=spec.collection, documents=docs, chunks=chunks, seconds=secs)

    arm_adapters: dict[str, adapter_mod.ResolvedAdapter | None] = {}
    resolved: dict[int, adapter_mod.ResolvedAdapter | None] = {}  # by spec: ft and hybrid often share one
    for arm in ("ft", "hybrid"):
        arm_spec = spec.arm_adapter(arm)
        if id(arm_spec) not in resolved:
            resolved[id(arm_spec)] = adapter_mod.resolve(suite, arm_spec, settings, cache_dir, config.adapters_dirs,
                                                         progress=config.progress, console=console)
        arm_adapters[arm] = resolved[id(arm_spec)]
    distinct = list({a.name: a for a in arm_adapters.values() if a is not None}.values())
    training = [t for t in map(adapter_mod.training_cost, distinct) if t is not None]

    if spec.retrieval is not None and spec.retrieval.update is not None:
        docs, chunks, secs = ingest(store, suite, items, spec.retrieval.update)
        ingest_info.updated_documents = docs
        ingest_info.seconds += secs

    arm_results: list[ArmResult] = []
    scores: dict[str, list[float]] = {}
    primary = spec.metric.primary
    with adapter_mod.loaded(router.backend, distinct):
        for arm in ARMS:
            ok, reason = spec.arm_applicable(arm)
            if not ok:
                arm_results.append(ArmResult(arm=arm, status="not_applicable", reason=reason))
                continue
            own = arm_adapters.get(arm)
            plan = plan_arm(arm, own.name if own else None)
            task = progress.add_task(f"{suite.name} · {arm}", total=len(items)) if progress else None
            try:
                run = run_arm(router, suite, items, plan, concurrency=batch,
                              on_item=(lambda n, t=task: progress.advance(t, n)) if progress else None)
            except ArmFailedError as exc:
                arm_results.append(ArmResult(arm=arm, status="failed", adapter=plan.adapter,
                                             retrieval=plan.retrieval, reason=exc.message))
                continue
            outputs = [a.text for a in run.answers]
            empty = sum(not o.strip() for o in outputs)
            item_scores = score_outputs(suite, items, outputs, style)
            names = list(item_scores[0])
            metrics = {m: bootstrap_mean([s[m] for s in item_scores]) for m in names}
            scores[arm] = [s[primary] for s in item_scores]
            per_request = run.total_s / len(items)
            arm_results.append(ArmResult(
                arm=arm, status="ok", adapter=plan.adapter, retrieval=plan.retrieval, metrics=metrics,
                latency=latency_stats(run.latency_ms, run.total_s), concurrency=run.concurrency,
                empty_answers=empty, empty_rate=empty / len(items),
                prompt_tokens_mean=sum(a.prompt_tokens for a in run.answers) / len(items),
                completion_tokens_mean=sum(a.completion_tokens for a in run.answers) / len(items),
                seconds_per_request=per_request,
                cost_per_1k_usd=cost_per_1k_requests(per_request, config.gpu_hour_usd),
                items=[
                    ItemResult(id=it.id, prompt=it.user, output=a.text, scores=s, latency_ms=lat,
                               prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens,
                               finish_reason=a.finish_reason, route=a.route.name,
                               citations=[c.id for c in a.citations])
                    for it, a, s, lat in zip(items, run.answers, item_scores, run.latency_ms)
                ],
            ))
            if progress is not None:
                progress.update(task, description=f"{suite.name} · {arm} · {primary} "
                                f"{metrics[primary].mean:.3f}")
        as_of = _as_of_probe(router, suite, items, arm_results, batch, style)
    decision, comparisons = _decide(suite, arm_results, scores)
    return SuiteResult(
        name=suite.name, description=spec.description, source=str(suite.source), expect=spec.expect,
        metric_kind=spec.metric.kind, primary_metric=primary, n_items=len(items),
        adapter=arm_adapters["ft"].name if arm_adapters["ft"] else None,
        hybrid_adapter=arm_adapters["hybrid"].name if arm_adapters["hybrid"] else None,
        ingest=ingest_info, training=training, arms=arm_results,
        comparisons=comparisons, decision=decision, as_of=as_of, seconds=time.perf_counter() - started,
    )


def _as_of_probe(router, suite: Suite, items, arms: list[ArmResult], batch: int, style) -> AsOfProbe | None:
    """The rag arm asked again as of a day before the facts changed: a store with history answers
    with the value valid then; the ft arm (asked today) shows what the adapter is stuck at."""
    day = suite.spec.retrieval.as_of_probe if suite.spec.retrieval else None
    rag = next((a for a in arms if a.arm == "rag" and a.status == "ok"), None)
    if day is None or rag is None:
        return None
    plan = plan_arm("rag", None).model_copy(update={"as_of": day})
    run = run_arm(router, suite, items, plan, concurrency=batch)
    scores = score_outputs(suite, items, [a.text for a in run.answers], style)
    past = {m: bootstrap_mean([s[m] for s in scores]) for m in scores[0]}
    ft = next((a for a in arms if a.arm == "ft" and a.status == "ok"), None)
    return AsOfProbe(as_of=day, rag_as_of=past, rag_today=rag.metrics, ft_today=ft.metrics if ft else None)


def run_eval(config: EvalConfig, settings: Settings | None = None, backend=None,
             console: Console | None = None) -> tuple[EvalResults, Path]:
    """Run the configured suites and write the report; returns the results and the run folder.

    ``backend``: an existing generation engine to reuse (tests pass the session's); without one,
    the engine is started from settings (with every installed adapter) and closed at the end.
    Either way retrieval uses a fresh Chroma store inside the run folder, so runs are reproducible.
    """
    from eval.report import write_report
    from retriever.store import FactStore

    started = time.perf_counter()
    settings = settings or Settings()
    console = console or Console(stderr=True, quiet=not config.progress)
    suites = resolve_suites(config.suites)
    out = Path(config.out)
    run_id = config.run_id or _new_run_id(out)
    run_dir = out / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = config.cache_dir or settings.cache_dir / "eval"
    # A private store per run: documents of an earlier run (or of production) never leak in.
    store_settings = Settings(**{**settings.model_dump(), "chroma_path": run_dir / "chroma", "chroma_url": None})
    store = FactStore(store_settings)

    from router.factory import build_router

    own_engine = backend is None
    if own_engine:
        console.print("[dim]starting the generation engine…[/dim]")
    router = build_router(settings, backend=backend, store=store)

    style = None
    if any(s.spec.metric.kind == "style" for s in suites):
        from eval.style import StyleClassifier

        console.print("[dim]loading the style classifier…[/dim]")
        style = StyleClassifier.load_or_fit(cache_dir)

    results: list[SuiteResult] = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not config.progress) as progress:
            for suite in suites:
                results.append(run_suite(suite, router, store, settings, config, cache_dir, style,
                                         progress if config.progress else None, console))
    finally:
        if own_engine:
            router.backend.close()

    eval_results = EvalResults(
        run=RunInfo(
            run_id=run_id, created_at=datetime.now(timezone.utc), ragtune_version=_version(),
            base_model=settings.base_model, backend=settings.backend, device=_device_name(), limit=config.limit, limits=config.limits,
            batch_size=config.batch_size or 0, gpu_hour_usd=config.gpu_hour_usd,
            seconds=time.perf_counter() - started,
            settings={"max_model_len": settings.max_model_len, "dtype": settings.dtype,
                      "chunk_words": settings.chunk_words, "max_loras": settings.max_loras},
        ),
        style_classifier=StyleInfo(**style.info.model_dump()) if style else None,
        suites=results,
    )
    results_path = run_dir / "results.json"
    results_path.write_text(eval_results.model_dump_json(indent=2), encoding="utf-8")
    validate_results(results_path)
    write_report(eval_results, run_dir / "report.html", examples=config.examples_per_arm)
    return eval_results, run_dir


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ragtune")
    except Exception:  # pragma: no cover
        return "unknown"
