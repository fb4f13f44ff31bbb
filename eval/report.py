"""The human-readable report: one self-contained HTML file (charts inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from eval.results import ArmResult, EvalResults, SuiteResult
from eval.suites import METRIC_KINDS

ARM_LABEL = {"base": "base", "rag": "rag-only", "ft": "ft-only", "hybrid": "hybrid", "api": "api",
             "api-rag": "api-rag"}
ARM_COLOR = {"base": "#9e9e9e", "rag": "#1f77b4", "ft": "#ff7f0e", "hybrid": "#2ca02c", "api": "#9467bd",
             "api-rag": "#8c564b"}
STATUS_LABEL = {"failed": "failed", "not_applicable": "not applicable", "not_configured": "not configured"}
SHORT_MECHANISM = {"rag": "retrieval", "ft": "adapter", "both": "both"}
EMPTY_WARN = 0.05  # more empty answers than this flags the arm in the report
VERDICT_COLOR = {"agrees": "#2e7d32", "tie": "#f9a825", "disagrees": "#c62828", "undecided": "#757575"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.92em}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}.na{color:#999}
.decision{border-left:5px solid #888;padding:0.5em 1em;background:#fafafa;margin:1em 0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:0.85em}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font-size:0.85em}.muted{color:#666;font-size:0.9em}
img{max-width:100%}h2{border-bottom:2px solid #eee;padding-bottom:0.2em;margin-top:2em}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _metric_chart(suite: SuiteResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [a for a in suite.arms if a.status == "ok"]
    if not ran:
        return ""
    metrics = list(ran[0].metrics)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(metrics) + 2), 3.2))
    width = 0.8 / len(ran)
    for j, arm in enumerate(ran):
        xs = [i + (j - (len(ran) - 1) / 2) * width for i in range(len(metrics))]
        means = [arm.metrics[m].mean for m in metrics]
        err = [[arm.metrics[m].mean - arm.metrics[m].low for m in metrics],
               [arm.metrics[m].high - arm.metrics[m].mean for m in metrics]]
        ax.bar(xs, means, width, yerr=err, capsize=3, label=ARM_LABEL[arm.arm], color=ARM_COLOR[arm.arm])
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([m + ("" if METRIC_KINDS[suite.metric_kind].get(m, True) else " (lower=better)")
                        + (" ★" if m == suite.primary_metric else "") for m in metrics])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean (95% CI)")
    ax.set_title(f"{suite.name}: metrics by arm (★ = primary)")
    ax.legend(fontsize=8, ncol=len(ran))
    return _png(fig)


def _cost_chart(suite: SuiteResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [a for a in suite.arms if a.status == "ok" and a.latency is not None]
    if not ran:
        return ""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.8))
    labels = [ARM_LABEL[a.arm] for a in ran]
    colors = [ARM_COLOR[a.arm] for a in ran]
    p50 = [a.latency.p50_ms for a in ran]
    p95 = [a.latency.p95_ms for a in ran]
    ax1.bar(labels, p50, color=colors, label="p50")
    ax1.scatter(labels, p95, color="k", marker="_", s=200, label="p95", zorder=3)
    ax1.set_ylabel("ms per request (under the eval's concurrency)")
    ax1.set_title("latency")
    ax1.legend(fontsize=8)
    ax2.bar(labels, [a.cost_per_1k_usd or 0 for a in ran], color=colors)
    ax2.set_ylabel("$ per 1k requests")
    ax2.set_title("serving cost")
    return _png(fig)


def _fmt_interval(arm: ArmResult, metric: str) -> str:
    return _fmt_iv(arm.metrics.get(metric))


def _arm_table(suite: SuiteResult) -> str:
    ran = [a for a in suite.arms if a.status == "ok"]
    metrics = list(ran[0].metrics) if ran else []
    head = "".join(f"<th>{html.escape(m)}{' ★' if m == suite.primary_metric else ''}</th>" for m in metrics)
    rows = []
    for arm in suite.arms:
        label = ARM_LABEL[arm.arm]
        if arm.status != "ok":
            status = STATUS_LABEL[arm.status]
            rows.append(f'<tr><td>{label}</td><td class="na" colspan="{len(metrics) + 5}">{status}: '
                        f"{html.escape(arm.reason)}</td></tr>")
            continue
        cells = "".join(_fmt_interval(arm, m) for m in metrics)
        lat = arm.latency
        what = arm.endpoint or arm.adapter or "no adapter"
        retried = f", {arm.retried} retried" if arm.retried else ""
        rows.append(
            f"<tr><td>{label}<br><span class='muted'>{html.escape(what)}"
            f"{' + retrieval' if arm.retrieval else ''}{retried}</span></td>{cells}"
            f'<td class="num">{lat.p50_ms:.0f} / {lat.p95_ms:.0f}'
            f'<br><span class="muted">{arm.concurrency or 1} in flight</span></td>'
            f'<td class="num">{arm.prompt_tokens_mean:.0f} / {arm.completion_tokens_mean:.1f}</td>'
            f'<td class="num">{arm.seconds_per_request:.3f}</td><td class="num">${arm.cost_per_1k_usd:.4f}</td>'
            f'<td class="num">{lat.total_s:.1f}</td>{_empty_cell(arm)}</tr>'
        )
    return (f"<table><tr><th>arm</th>{head}<th>latency p50 / p95 ms (per request)</th><th>tokens prompt / answer</th>"
            f"<th>s / request (throughput)</th><th>$ / 1k req</th><th>total s</th><th>empty answers</th></tr>"
            f"{''.join(rows)}</table>")


def _empty_cell(arm: ArmResult) -> str:
    if arm.empty_rate is None:
        return '<td class="na">–</td>'
    warn = " style='color:#c62828;font-weight:bold'" if arm.empty_rate > EMPTY_WARN else ""
    return f'<td class="num"{warn}>{arm.empty_rate:.0%} ({arm.empty_answers})</td>'


def empty_warning(suite: SuiteResult) -> str | None:
    """A sentence naming the arms whose empty-answer rate says the prompt, not the model, is measured."""
    bad = [f"{ARM_LABEL[a.arm]} {a.empty_rate:.0%}" for a in suite.arms
           if a.status == "ok" and a.empty_rate is not None and a.empty_rate > EMPTY_WARN]
    if not bad:
        return None
    return (f"Empty answers above {EMPTY_WARN:.0%}: {', '.join(bad)}. An empty answer usually means a prompt or "
            "stop-string problem, so these arms' scores understate the model.")


def _comparisons(suite: SuiteResult) -> str:
    if not suite.comparisons:
        return ""
    rows = "".join(
        f"<tr><td>{ARM_LABEL[c.a]} − {ARM_LABEL[c.b]}</td><td class='num'>{c.diff:+.3f}</td>"
        f"<td class='num'>[{c.low:+.3f}, {c.high:+.3f}]</td><td class='num'>{c.p_value:.3f}</td>"
        f"<td>{'yes' if c.significant else 'no'}</td>"
        f"<td class='num'>{f'~{c.n_needed:,}' if c.n_needed else '–'}</td></tr>"
        for c in suite.comparisons
    )
    return (f"<details><summary>All paired comparisons on {html.escape(suite.primary_metric)}</summary><table>"
            "<tr><th>pair</th><th>mean diff</th><th>95% CI</th><th>p</th><th>significant</th>"
            "<th>items a difference this size needs</th></tr>"
            f"{rows}</table></details>")


def _examples(suite: SuiteResult, n: int) -> str:
    ran = [a for a in suite.arms if a.status == "ok"]
    if not ran or n == 0:
        return ""
    blocks = []
    for i in range(min(n, len(ran[0].items))):
        first = ran[0].items[i]
        cells = "".join(
            f"<tr><td>{ARM_LABEL[a.arm]}</td><td><pre>{html.escape(a.items[i].output) or '<em>(empty)</em>'}</pre></td>"
            f"<td class='num'>{a.items[i].scores.get(suite.primary_metric, 0):.2f}</td>"
            f"<td class='muted'>{html.escape(', '.join(a.items[i].citations))}</td></tr>"
            for a in ran
        )
        blocks.append(f"<h4>{html.escape(first.id)}</h4><pre class='muted'>{html.escape(first.prompt)}</pre>"
                      f"<table><tr><th>arm</th><th>output</th><th>{html.escape(suite.primary_metric)}</th>"
                      f"<th>retrieved</th></tr>{cells}</table>")
    return "<h3>Example outputs</h3>" + "".join(blocks)


def _decision(suite: SuiteResult) -> str:
    d = suite.decision
    color = VERDICT_COLOR[d.verdict]
    return (
        f"<div class='decision' style='border-color:{color}'><h3>Decision</h3>"
        f"<p><b>Winner on {html.escape(d.primary_metric)}:</b> {ARM_LABEL.get(d.winner or '', '–')}"
        f" &nbsp; <span class='badge' style='background:{color}'>{d.verdict}</span></p>"
        f"<p>{html.escape(d.summary)}</p>"
        f"<p><b>Rule:</b> {html.escape(d.rule)} The rule predicts that <b>{html.escape(d.mechanism)}</b> wins "
        f"({', '.join(ARM_LABEL[a] for a in d.expected_arms)}).</p>"
        + (f"<p><b>Note:</b> {html.escape(d.note)}</p>" if d.note else "")
        + "</div>"
    )


def _suite_section(suite: SuiteResult, examples: int) -> str:
    facts = [f"{suite.n_items} items", f"metric: {suite.metric_kind} (primary {suite.primary_metric})",
             f"suite file: {html.escape(suite.source)}", f"{suite.seconds:.0f} s"]
    if suite.ingest:
        i = suite.ingest
        facts.append(f"store: {i.documents} documents / {i.chunks} chunks in {i.collection} ({i.seconds:.1f} s)"
                     + (f", then {i.updated_documents} updated" if i.updated_documents else ""))
    training = "".join(
        f"<p class='muted'>Adapter <b>{html.escape(t.adapter)}</b> ({t.origin}): one-off training "
        f"{t.wall_seconds:.0f} s on {html.escape(t.device)}, ${t.cost_usd:.3f} at ${t.hour_usd}/h as "
        f"its card records, {t.rows_train} training rows.</p>"
        for t in suite.training
    )
    warning = empty_warning(suite)
    if warning:
        training += f"<p style='color:#c62828'>{html.escape(warning)}</p>"
    if suite.style_classifier:
        c = suite.style_classifier
        flag = (" style='color:#c62828'" if c.heldout_accuracy < c.min_accuracy else " class='muted'")
        training += (f"<p{flag}>Style classifier of this suite: held-out accuracy <b>{c.heldout_accuracy:.3f}</b> on "
                     f"{2 * c.test_pairs} texts (chance 0.5; decided only at ≥ {c.min_accuracy:.2f}); fit on "
                     f"{c.train_pairs} source/target pairs of {html.escape(c.pairs_path)} in {c.fit_seconds:.0f} s"
                     f"{' (cached)' if c.cached else ''}.</p>")
    return (
        f"<h2 id='{suite.name}'>{html.escape(suite.name)}</h2><p>{html.escape(suite.description)}</p>"
        f"<p class='muted'>{' · '.join(facts)}</p>{training}"
        f"{_decision(suite)}{_arm_table(suite)}{_as_of_table(suite)}{_comparisons(suite)}{_metric_chart(suite)}"
        f"{_cost_chart(suite)}{_cost_section(suite)}{_examples(suite, examples)}"
    )


def _cost_section(suite: SuiteResult) -> str:
    """The break-even chart, each arm's cost terms, the crossovers and the cheapest arm as good as the best."""
    cost = suite.cost
    if cost is None:
        return ""
    p = cost.prices
    rows = "".join(
        f"<tr><td>{ARM_LABEL[c.arm]}</td><td>{c.kind}</td><td class='num'>${c.per_1k_usd:.4f}</td>"
        f"<td class='num'>${c.one_off_usd:.3f}</td><td class='num'>{c.retrains_per_month:g}</td>"
        f"<td class='num'>${c.monthly_usd(cost.traffic):,.2f}</td><td class='muted'>{html.escape(c.basis)}</td></tr>"
        for c in cost.arms
    )
    cross = "".join(
        f"<li>{ARM_LABEL[x.a]} and {ARM_LABEL[x.b]} cost the same at <b>{x.requests_per_month:,.0f}</b> requests/month "
        f"(${x.monthly_usd:,.2f}/month); {ARM_LABEL[x.cheaper_below]} is cheaper below it.</li>"
        for x in cost.crossovers
    ) or "<li>No two arms' costs cross between 1 and 10<sup>10</sup> requests/month.</li>"
    pick = (f"<p><b>Cost pick:</b> {html.escape(cost.pick.summary)} Eligible (cheapest first): "
            f"{', '.join(ARM_LABEL[a] for a in cost.pick.eligible)}.</p>") if cost.pick else (
            "<p><b>Cost pick:</b> none — the suite is not decided on quality.</p>")
    prices = (f"Prices from {html.escape(p.source)}: self-hosted {html.escape(p.self_hosted.device)} at "
              f"${p.self_hosted.hour_usd:g}/h ({p.self_hosted.utilization:.0%} utilised, at least "
              f"{p.self_hosted.min_instances:g} always on, {p.self_hosted.hours_per_month:g} h/month); training "
              f"${p.training.gpu_hour_usd:g}/GPU-h, ${p.training.cpu_hour_usd:g}/CPU-h, amortised over "
              f"{p.training.amortize_months:g} months. Throughput measured on {html.escape(cost.measured_on)}.")
    return (f"<h3>Cost and break-even</h3>{pick}{_break_even_chart(suite)}"
            "<table><tr><th>arm</th><th>kind</th><th>$ / 1k requests</th><th>one-off training</th>"
            f"<th>retrains / month</th><th>$ / month at {cost.traffic:,.0f} requests</th><th>basis</th></tr>{rows}"
            f"</table><ul>{cross}</ul><p class='muted'>{prices}</p>")


def _break_even_chart(suite: SuiteResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cost = suite.cost
    lo, hi = 1e2, 1e9
    marks = [x.requests_per_month for x in cost.crossovers] + [cost.traffic]
    lo, hi = min([lo, *marks]) / 3, max([hi, *marks]) * 3
    grid = np.geomspace(lo, hi, 300)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for c in cost.arms:
        ax.plot(grid, np.maximum(c.monthly_usd(grid), 1e-3), label=ARM_LABEL[c.arm], color=ARM_COLOR[c.arm], lw=2)
    for x in cost.crossovers:
        ax.plot([x.requests_per_month], [max(x.monthly_usd, 1e-3)], "ko", ms=5, zorder=4)
        ax.annotate(f"{x.requests_per_month:,.0f}", (x.requests_per_month, max(x.monthly_usd, 1e-3)),
                    textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.axvline(cost.traffic, color="k", ls="--", lw=1)
    ax.text(cost.traffic, ax.get_ylim()[1], f" your traffic\n {cost.traffic:,.0f}/month", va="top", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("requests per month")
    ax.set_ylabel("$ per month")
    ax.set_title(f"{suite.name}: monthly cost by arm (● = crossover)")
    ax.legend(fontsize=8)
    return _png(fig)


def _as_of_table(suite: SuiteResult) -> str:
    """Changing facts: rag as of a day before the change, rag today, and the adapter today."""
    probe = suite.as_of
    if probe is None:
        return ""
    rows = [(f"rag, as of {probe.as_of.isoformat()}", probe.rag_as_of), ("rag, today", probe.rag_today)]
    if probe.ft_today is not None:
        rows.append(("ft, today (adapter trained on the old facts)", probe.ft_today))
    metrics = list(probe.rag_today)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = "".join(
        f"<tr><td>{label}</td>{''.join(_fmt_iv(scores.get(m)) for m in metrics)}</tr>" for label, scores in rows)
    return (f"<h3>As of a past date</h3><p class='muted'>The store keeps every version with its validity "
            f"window: asked as of {probe.as_of.isoformat()}, before the facts changed, rag should state the old "
            f"value (<i>stale</i> here is the right answer); today the new one (<i>current</i>). The adapter "
            f"learned the old facts and states them whatever the date.</p>"
            f"<table><tr><th>ask</th>{head}</tr>{body}</table>")


def _fmt_iv(iv) -> str:
    if iv is None:
        return '<td class="na">–</td>'
    return f'<td class="num">{iv.mean:.3f}<br><span class="muted">[{iv.low:.3f}, {iv.high:.3f}]</span></td>'


def render_html(results: EvalResults, examples: int = 3) -> str:
    run = results.run
    overview = "".join(
        f"<tr><td><a href='#{s.name}'>{s.name}</a></td><td>{ARM_LABEL.get(s.decision.winner or '', '–')}</td>"
        f"<td>{html.escape(s.decision.mechanism)}</td><td><span class='badge' style='background:"
        f"{VERDICT_COLOR[s.decision.verdict]}'>{s.decision.verdict}</span></td>"
        f"<td class='num'>{(s.decision.margin.diff if s.decision.margin else float('nan')):+.3f}</td>"
        f"<td>{'yes' if s.decision.margin and s.decision.margin.significant else 'no'}</td>"
        f"<td>{_pick_cell(s)}</td></tr>"
        for s in results.suites
    )
    style = ""
    cpu_note = ("" if not run.device.startswith("cpu") else
                f"<p class='muted'>Latency and throughput were measured on {html.escape(run.device)}; the cost model "
                "bills that throughput at the self-hosted price of its price table, so self-hosted costs describe "
                "this machine's speed at that machine's price. Run the eval where you would serve for your own "
                "bill.</p>")
    body = "".join(_suite_section(s, examples) for s in results.suites)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ragtune eval "
        f"{html.escape(run.run_id)}</title><style>{CSS}</style></head><body>"
        f"<h1>ragtune eval — RAG or fine-tune?</h1><p class='muted'>run {html.escape(run.run_id)} · "
        f"{run.created_at:%Y-%m-%d %H:%M} UTC · base model {html.escape(run.base_model)} · backend "
        f"{html.escape(run.backend)} · {html.escape(run.device)} · limit {run.limit or 'none'} · "
        f"{run.seconds:.0f} s · greedy decoding</p>{cpu_note}{style}"
        "<p>Arms: <b>base</b> (few-shot prompt when the suite has one), <b>rag-only</b> (base + retrieved "
        "passages as numbered citations), <b>ft-only</b> (the suite's LoRA adapter, its training prompt), "
        "<b>hybrid</b> (adapter + passages), <b>api</b> / <b>api-rag</b> (a hosted model with the few-shot prompt, "
        f"without / with the passages: {html.escape(run.api or 'not configured')}). Means carry bootstrap 95% "
        "intervals; differences are paired over the same items.</p>"
        "<table><tr><th>suite</th><th>winner</th><th>rule predicts</th><th>verdict</th><th>margin vs runner-up"
        f"</th><th>significant</th><th>cheapest as good (at your traffic)</th></tr>{overview}</table>{body}</body></html>"
    )


def _pick_cell(suite: SuiteResult) -> str:
    pick = suite.cost.pick if suite.cost else None
    if pick is None or pick.arm is None:
        return "–"
    return f"{ARM_LABEL[pick.arm]} (${pick.monthly_usd:,.2f}/month)"


def write_report(results: EvalResults, path: Path, examples: int = 3) -> Path:
    path.write_text(render_html(results, examples), encoding="utf-8")
    return path


def print_summary(results: EvalResults, console) -> None:
    """The comparison on a terminal: per suite the arms' primary-metric means with 95% intervals and
    empty-answer rates, then the decision, its margin and the rule it is checked against."""
    from rich import box
    from rich.table import Table

    arms = [a for a in ARM_LABEL if any(x.arm == a and x.status == "ok" for s in results.suites for x in s.arms)]
    arms = arms or ["base"]
    table = Table(title="Which arm wins? Primary metric: mean, 95% CI, ∅ empty answers", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("suite")
    for arm in arms:
        table.add_column(arm, justify="right")
    table.add_column("winner")
    table.add_column("verdict\nrule")
    for suite in results.suites:
        by_arm = {a.arm: a for a in suite.arms}
        cells = []
        for arm in arms:
            a = by_arm.get(arm)
            if a is None or a.status != "ok":
                cells.append("[dim]n/a[/dim]")
                continue
            iv = a.metrics[suite.primary_metric]
            empty = f"\n∅ {a.empty_rate:.0%}" if a.empty_rate else ""
            cells.append(f"{iv.mean:.3f}\n{iv.low:.2f}–{iv.high:.2f}{empty}")
        d = suite.decision
        color = {"agrees": "green", "tie": "yellow", "disagrees": "red"}.get(d.verdict, "dim")
        table.add_row(f"{suite.name}\n[dim]{suite.primary_metric}\nn={suite.n_items}[/dim]", *cells,
                      d.winner or "-", f"[{color}]{d.verdict}[/{color}]\n{SHORT_MECHANISM[suite.expect]}")
    console.print(table)
    for suite in results.suites:
        d = suite.decision
        console.print(f"[bold]{suite.name}[/bold]: {d.summary}")
        if d.note:
            console.print(f"  {d.note}")
        if suite.cost is not None and suite.cost.pick is not None:
            console.print(f"  [bold]cost:[/bold] {suite.cost.pick.summary}")
        console.print(f"  [dim]rule: {d.rule}[/dim]")
        warning = empty_warning(suite)
        if warning:
            console.print(f"  [red]{warning}[/red]")
