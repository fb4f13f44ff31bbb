"""Run suites through the arms and write ``reports/<run-id>/{report.html,results.json}``.

Every suite's adapters are found or trained first, before the generation engine starts (on a CPU
an idle engine beside the trainer slows it down). Then, per suite (the order matters for changing
facts): ingest the documents, upsert the update documents, then ask every arm. The adapters learn
from the suite's files, never from the store, so training first changes nothing they learn.
"""

from __future__ import annotations

import itertools
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eval import adapters as adapter_mod
from eval.api import API_ARMS, ApiConfig, load_api_config, run_api_arm
from eval.arms import ArmFailedError, ArmRun, plan_arm, run_arm
from eval.cost import (
    ArmCost,
    PriceTable,
    api_cost,
    cheapest_within,
    crossovers,
    load_prices,
    self_hosted_cost,
    training_usd,
)
from eval.ingest import ingest
from eval.results import (
    ArmResult,
    AsOfProbe,
    CostModel,
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
from eval.stats import PairedDiff, bootstrap_mean, latency_stats, paired_bootstrap
from eval.suites import ARMS, METRIC_KINDS, Suite, resolve_suites
from ragtune.errors import ConfigError
from ragtune.settings import Settings

EXPECTED_ARM = {"rag": "rag", "ft": "ft", "both": "hybrid"}
# What each arm brings: (retrieval, adapter). The rule names a mechanism, not an arm: "facts ->
# retrieval" holds when the winner retrieves, whether the base model or the reader adapter reads.
USES = {"base": (False, False), "rag": (True, False), "ft": (False, True), "hybrid": (True, True),
        "api": (False, False), "api-rag": (True, False)}
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
    gpu_hour_usd: float | None = Field(default=None, ge=0, description="$ per hour of the self-hosted serving "
                                       "machine, overriding the price table's.")
    prices: Path | None = Field(default=None, description="Price table (default: eval/prices.yaml).")
    api_config: Path | None = Field(default=None, description="The api arms' endpoint (eval/api.py); none: the "
                                    "api arms are 'not configured'.")
    traffic: float = Field(default=100_000, gt=0, description="Requests per month the cost pick is made at.")
    quality_margin: float = Field(default=0.02, ge=0, description="Largest shortfall on the primary metric from the "
                                  "best arm's mean that still counts as 'as good' for the cost pick.")
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


def _decide(suite: Suite, arms: list[ArmResult], scores: dict[str, list[float]],
            style: StyleInfo | None = None) -> tuple[Decision, list[PairedDiff]]:
    primary = suite.spec.metric.primary
    higher = METRIC_KINDS[suite.spec.metric.kind][primary]
    ran = [a for a in arms if a.status == "ok"]
    expected = EXPECTED_ARM[suite.spec.expect]
    rule = RULES[suite.spec.expect]
    comparisons = [
        paired_bootstrap(scores[a.arm], scores[b.arm], names=(a.arm, b.arm), metric=primary)
        for a, b in itertools.combinations(ran, 2)
    ]
    refusal = None
    if len(ran) < 2:
        refusal = "fewer than two arms ran; nothing to compare"
    elif style is not None and primary == "style" and style.heldout_accuracy < style.min_accuracy:
        refusal = (f"not decided: the style classifier tells this suite's two voices apart on only "
                   f"{style.heldout_accuracy:.0%} of held-out texts (chance 50%, needed {style.min_accuracy:.0%}), "
                   "so its style score cannot rank the arms. Give more or more distinct source/target pairs.")
    if refusal is not None:
        return Decision(primary_metric=primary, higher_is_better=higher, winner=ran[0].arm if len(ran) == 1 else None,
                        runner_up=None, margin=None, expected=expected,
                        expected_arms=[a for a in ARMS if carries(a, suite.spec.expect)],
                        mechanism=MECHANISM[suite.spec.expect], rule=rule, verdict="undecided",
                        summary=refusal), comparisons
    sign = 1 if higher else -1
    # Stable order (ARMS) breaks exact ties in favour of the simpler, cheaper arm.
    ranked = sorted(ran, key=lambda a: -sign * a.metrics[primary].mean)
    winner, runner = ranked[0], ranked[1]
    margin = paired_bootstrap(scores[winner.arm], scores[runner.arm], names=(winner.arm, runner.arm), metric=primary)
    better = "higher" if higher else "lower"
    summary = (f"{winner.arm} wins on {primary} ({winner.metrics[primary].mean:.3f}) over {runner.arm} "
               f"({runner.metrics[primary].mean:.3f}): difference {margin.diff:+.3f}, 95% CI "
               f"[{margin.low:+.3f}, {margin.high:+.3f}], p={margin.p_value:.3f} — "
               + ("significant." if margin.significant else "not significant at this sample size"
                  + _needed(margin) + "."))
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
                    + (", significant." if mechanism.significant else ", not significant" + _needed(mechanism) + "."))
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
    return Decision(primary_metric=primary, higher_is_better=higher, winner=winner.arm, runner_up=runner.arm,
                    margin=margin, expected=expected, expected_arms=[a for a in ARMS if carries(a, expect)],
                    mechanism=MECHANISM[expect], mechanism_margin=mechanism, rule=rule, verdict=verdict,
                    summary=summary, note=note), comparisons


def _needed(diff: PairedDiff) -> str:
    """' (a difference this size would need ~N items)' when the sample size is the reason."""
    if diff.n_needed is None:
        return ""
    return f" (a difference of this size would need ~{diff.n_needed:,} items to show; this run had {diff.n})"


@dataclass(frozen=True)
class RunContext:
    """What every suite of a run shares: prices, the api endpoint, and where it is measured."""

    prices: PriceTable
    api: ApiConfig | None
    device: str


def resolve_adapters(suite: Suite, settings: Settings, config: EvalConfig, cache_dir: Path,
                     console: Console) -> dict[str, adapter_mod.ResolvedAdapter | None]:
    """The ft and hybrid arms' adapters, trained now if need be (before the engine starts: on a
    CPU an idle engine beside the trainer still slows it down)."""
    arm_adapters: dict[str, adapter_mod.ResolvedAdapter | None] = {}
    resolved: dict[int, adapter_mod.ResolvedAdapter | None] = {}  # by spec: ft and hybrid often share one
    for arm in ("ft", "hybrid"):
        arm_spec = suite.spec.arm_adapter(arm)
        if id(arm_spec) not in resolved:
            resolved[id(arm_spec)] = adapter_mod.resolve(suite, arm_spec, settings, cache_dir, config.adapters_dirs,
                                                         progress=config.progress, console=console)
        arm_adapters[arm] = resolved[id(arm_spec)]
    return arm_adapters


def run_suite(suite: Suite, router, store, settings: Settings, config: EvalConfig, cache_dir: Path,
              ctx: RunContext, progress: Progress | None, console: Console,
              arm_adapters: dict[str, adapter_mod.ResolvedAdapter | None]) -> SuiteResult:
    started = time.perf_counter()
    spec = suite.spec
    style = None
    if spec.metric.kind == "style":
        from eval.style import StyleClassifier

        console.print(f"[dim]{suite.name}: fitting or loading its style classifier…[/dim]")
        style = StyleClassifier.load_or_fit(cache_dir, spec.metric.style)
    items = suite.items(config.limits.get(suite.name, config.limit))
    if not items:
        raise ValueError(f"suite {suite.name!r} selected no items")
    batch = config.batch_size or spec.batch_size

    ingest_info = None
    if spec.retrieval is not None:
        docs, chunks, secs = ingest(store, suite, items, spec.retrieval.documents)
        ingest_info = IngestInfo(collection=spec.collection, documents=docs, chunks=chunks, seconds=secs)

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
            if arm in API_ARMS and ctx.api is None:
                arm_results.append(ArmResult(arm=arm, status="not_configured", reason="no hosted API configured "
                                             "(--api-config FILE names an OpenAI-compatible endpoint)"))
                continue
            own = arm_adapters.get(arm)
            plan = plan_arm(arm, own.name if own else None)
            task = progress.add_task(f"{suite.name} · {arm}", total=len(items)) if progress else None
            advance = (lambda n, t=task: progress.advance(t, n)) if progress else None
            retried = None
            try:
                if arm in API_ARMS:
                    run, retried = run_api_arm(ctx.api, arm, router, suite, items, on_item=advance)
                else:
                    run = run_arm(router, suite, items, plan, concurrency=batch, on_item=advance)
            except (ArmFailedError, ConfigError) as exc:
                arm_results.append(ArmResult(arm=arm, status="failed", adapter=plan.adapter, retrieval=plan.retrieval,
                                             endpoint=_endpoint(ctx.api) if arm in API_ARMS else None,
                                             reason=exc.message))
                continue
            result, item_scores = _arm_result(suite, items, arm, plan, run, style)
            result.endpoint = _endpoint(ctx.api) if arm in API_ARMS else None
            result.retried = retried
            scores[arm] = [s[primary] for s in item_scores]
            arm_results.append(result)
            if progress is not None:
                progress.update(task, description=f"{suite.name} · {arm} · {primary} "
                                f"{result.metrics[primary].mean:.3f}")
        as_of = _as_of_probe(router, suite, items, arm_results, batch, style)
    style_info = StyleInfo(**style.info.model_dump()) if style is not None else None
    decision, comparisons = _decide(suite, arm_results, scores, style_info)
    cost = _cost_model(suite, arm_results, arm_adapters, training, decision, ctx, config)
    return SuiteResult(
        name=suite.name, description=spec.description, source=str(suite.source), expect=spec.expect,
        metric_kind=spec.metric.kind, primary_metric=primary, n_items=len(items),
        adapter=arm_adapters["ft"].name if arm_adapters["ft"] else None,
        hybrid_adapter=arm_adapters["hybrid"].name if arm_adapters["hybrid"] else None,
        ingest=ingest_info, training=training, arms=arm_results, comparisons=comparisons, decision=decision,
        as_of=as_of, style_classifier=style_info, cost=cost, seconds=time.perf_counter() - started,
    )


def _endpoint(api: ApiConfig | None) -> str | None:
    return f"{api.model} at {api.base_url}" if api is not None else None


def _arm_result(suite: Suite, items, arm: str, plan, run: ArmRun, style) -> tuple[ArmResult, list[dict[str, float]]]:
    """Score one arm's answers; cost is filled in by the suite's cost model."""
    outputs = [a.text for a in run.answers]
    empty = sum(not o.strip() for o in outputs)
    item_scores = score_outputs(suite, items, outputs, style)
    metrics = {m: bootstrap_mean([s[m] for s in item_scores]) for m in item_scores[0]}
    n = len(items)
    result = ArmResult(
        arm=arm, status="ok", adapter=plan.adapter, retrieval=plan.retrieval, metrics=metrics,
        latency=latency_stats(run.latency_ms, run.total_s), concurrency=run.concurrency,
        empty_answers=empty, empty_rate=empty / n,
        prompt_tokens_mean=sum(a.prompt_tokens for a in run.answers) / n,
        completion_tokens_mean=sum(a.completion_tokens for a in run.answers) / n,
        seconds_per_request=run.total_s / n,
        items=[
            ItemResult(id=it.id, prompt=it.user, output=a.text, scores=s, latency_ms=lat,
                       prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens,
                       finish_reason=a.finish_reason, route=a.route.name, citations=[c.id for c in a.citations])
            for it, a, s, lat in zip(items, run.answers, item_scores, run.latency_ms)
        ],
    )
    return result, item_scores


def _cost_model(suite: Suite, arms: list[ArmResult], arm_adapters, training, decision: Decision,
                ctx: RunContext, config: EvalConfig) -> CostModel | None:
    """Price every arm that ran, find the crossovers, and pick the cheapest arm as good as the best."""
    costs: list[ArmCost] = []
    by_adapter = {t.adapter: t for t in training}
    for a in arms:
        if a.status != "ok":
            continue
        if a.arm in API_ARMS:
            cost = api_cost(a.arm, a.prompt_tokens_mean, a.completion_tokens_mean,
                            ctx.prices.token_price(ctx.api.price_key), ctx.api.price_key)
        else:
            own = arm_adapters.get(a.arm)
            t = by_adapter.get(own.name) if own is not None else None
            one_off = training_usd(t.gpu_hours, t.cpu_hours, ctx.prices) if t is not None else 0.0
            retrains = suite.spec.facts_change_per_month if own is not None else 0.0
            cost = self_hosted_cost(a.arm, a.seconds_per_request, ctx.prices, measured_on=ctx.device,
                                    one_off_usd=one_off, retrains_per_month=retrains)
        a.cost_per_1k_usd = cost.per_1k_usd
        costs.append(cost)
    if not costs:
        return None
    quality = {a.arm: a.metrics[decision.primary_metric].mean for a in arms if a.status == "ok"}
    pick = None
    if decision.winner is not None:  # a suite that is not decided on quality is not decided on cost either
        pick = cheapest_within(costs, quality, higher_is_better=decision.higher_is_better,
                               margin=config.quality_margin, traffic=config.traffic, metric=decision.primary_metric)
    return CostModel(prices=ctx.prices, measured_on=ctx.device, traffic=config.traffic, arms=costs,
                     crossovers=crossovers(costs), pick=pick)


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
    # Prices and the endpoint are checked before any engine starts: a typo fails in a second.
    prices = load_prices(config.prices, hour_usd=config.gpu_hour_usd)
    api = load_api_config(config.api_config) if config.api_config else None
    if api is not None:
        prices.token_price(api.price_key)
    ctx = RunContext(prices=prices, api=api, device=_device_name())
    out = Path(config.out)
    run_id = config.run_id or _new_run_id(out)
    run_dir = out / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = config.cache_dir or settings.cache_dir / "eval"
    # A private store per run: documents of an earlier run (or of production) never leak in.
    store_settings = Settings(**{**settings.model_dump(), "chroma_path": run_dir / "chroma", "chroma_url": None})
    store = FactStore(store_settings)

    from router.factory import build_router

    adapters = {s.name: resolve_adapters(s, settings, config, cache_dir, console) for s in suites}
    own_engine = backend is None
    if own_engine:
        console.print("[dim]starting the generation engine…[/dim]")
    router = build_router(settings, backend=backend, store=store)

    results: list[SuiteResult] = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not config.progress) as progress:
            for suite in suites:
                results.append(run_suite(suite, router, store, settings, config, cache_dir, ctx,
                                         progress if config.progress else None, console, adapters[suite.name]))
    finally:
        if own_engine:
            router.backend.close()

    eval_results = EvalResults(
        run=RunInfo(
            run_id=run_id, created_at=datetime.now(timezone.utc), ragtune_version=_version(),
            base_model=settings.base_model, backend=settings.backend, device=ctx.device, limit=config.limit,
            limits=config.limits, batch_size=config.batch_size or 0, prices=prices.source, api=_endpoint(api),
            seconds=time.perf_counter() - started,
            settings={"max_model_len": settings.max_model_len, "dtype": settings.dtype,
                      "chunk_words": settings.chunk_words, "max_loras": settings.max_loras},
        ),
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
