"""``report.html``: one self-contained page per adapter, built from its card.

Loss curves (train + eval) as an inline matplotlib PNG, the warnings, the metrics, the cost and
the full config. Built only from :class:`ragtune.card.AdapterCard`, so a report can be
regenerated from any adapter folder (``write_report(AdapterCard.read(folder), folder / ...)``).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from ragtune.card import AdapterCard

REPORT_FILE = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;vertical-align:top;font-size:.92rem}
th{background:#f5f5f5} .warn{background:#fff4e0;border-left:4px solid #e69500;padding:.5rem .8rem;margin:.4rem 0}
.ok{color:#2a7d2a} code,pre{font-family:ui-monospace,monospace;font-size:.85rem} pre{white-space:pre-wrap;margin:0}
"""


def loss_chart_png(card: AdapterCard) -> bytes | None:
    """PNG of training and eval loss by step; None when nothing was logged."""
    train = [(p.step, p.train_loss) for p in card.history if p.train_loss is not None]
    evals = [(p.step, p.eval_loss) for p in card.history if p.eval_loss is not None]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#1f77b4", marker="." if len(train) < 40 else None)
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval loss", color="#d62728", marker="o")
    if card.metrics.best_step is not None:
        ax.axvline(card.metrics.best_step, color="#999", linestyle=":", label=f"best (step {card.metrics.best_step})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def render_report(card: AdapterCard) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Adapter {esc(card.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Adapter <code>{esc(card.name)}</code></h1>",
        f"<p class='sub'>{esc(card.method)} on {esc(card.base_model)} · trained {card.created_at:%Y-%m-%d %H:%M} UTC "
        f"on {esc(card.compute.gpu_name or card.compute.device)}</p>",
    ]
    png = loss_chart_png(card)
    parts.append("<h2>Loss</h2>")
    if png:
        parts.append(f"<img alt='loss curves' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    else:
        parts.append("<p>No losses were logged (too few steps for logging_steps).</p>")

    parts.append("<h2>Warnings</h2>")
    if card.warnings:
        for w in card.warnings:
            step = f" (step {w.step})" if w.step is not None else ""
            parts.append(f"<div class='warn'><b>{esc(w.code)}</b>{step}: {esc(w.message)}</div>")
    else:
        parts.append("<p class='ok'>None.</p>")

    parts.append("<h2>Metrics</h2>" + _table(_metric_rows(card)))
    if card.metrics.task and card.metrics.task.samples:
        rows = [(esc(s["expected"]), esc(s["generated"])) for s in card.metrics.task.samples]
        parts.append("<h3>Held-out samples</h3><table><tr><th>expected</th><th>generated</th></tr>"
                     + "".join(f"<tr><td><pre>{e}</pre></td><td><pre>{g}</pre></td></tr>" for e, g in rows)
                     + "</table>")
    parts.append("<h2>Data</h2>" + _table([
        ("file", card.data.path), ("sha256", card.data.sha256), ("format", card.data.format),
        ("rows (total / train / held out / rejected)",
         f"{card.data.rows_total} / {card.data.rows_train} / {card.data.rows_eval} / {card.data.rows_rejected}"),
    ]))
    c = card.compute
    rate_kind = "GPU hour" if c.device == "cuda" else "machine hour (CPU)"
    parts.append("<h2>Cost</h2>" + _table([
        ("device", f"{c.device}" + (f" · {c.gpu_count} × {c.gpu_name}" if c.gpu_name else "")),
        ("wall time", f"{c.wall_seconds:.1f} s"),
        ("GPU-hours", f"{c.gpu_hours:.4f}"), ("CPU machine-hours", f"{c.cpu_hours:.4f}"),
        ("price", f"${c.hour_usd:.2f} per {rate_kind}"), ("cost", f"${c.cost_usd:.4f}"),
    ]))
    parts.append("<h2>Base model</h2>" + _table([
        ("base model", card.base_model), ("path", card.base_model_path), ("weights hash", card.base_model_hash),
    ]))
    parts.append("<h2>Config</h2>" + _table([(k, json.dumps(v, default=str)) for k, v in card.config.items()]))
    parts.append("<h2>Run-time choices</h2>" + _table([(k, json.dumps(v, default=str))
                                                        for k, v in card.effective.items()]))
    parts.append("<h2>Libraries</h2>" + _table(sorted(card.libraries.items())))
    parts.append("</body></html>")
    return "\n".join(parts)


def _metric_rows(card: AdapterCard) -> list[tuple[str, str]]:
    m = card.metrics

    def fmt(v, spec=".4f"):
        return "—" if v is None else format(v, spec)

    rows = [
        ("steps / epochs", f"{m.steps} / {m.epochs:.2f}"),
        ("train loss (final / best)", f"{fmt(m.final_train_loss)} / {fmt(m.best_train_loss)}"),
        ("eval loss (final / best)", f"{fmt(m.final_eval_loss)} / {fmt(m.best_eval_loss)}"),
        ("best step (kept)", "—" if m.best_step is None else str(m.best_step)),
        ("LoRA grad norm, first step", fmt(m.lora_grad_norm_first_step, ".3g")),
        ("supervised token share", fmt(m.supervised_token_fraction, ".1%")),
        ("training loop time", "—" if m.train_seconds is None else f"{m.train_seconds:.1f} s"),
    ]
    if m.task:
        rows += [
            (f"JSON valid ({m.task.rows} held-out rows)", f"{m.task.json_valid_rate:.1%}"),
            ("JSON schema-valid", fmt(m.task.schema_valid_rate, ".1%")),
            ("JSON exact match", f"{m.task.exact_match_rate:.1%}"),
            ("JSON field F1", fmt(m.task.field_f1, ".3f")),
        ]
    return rows


def _table(rows) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def write_report(card: AdapterCard, path: Path) -> Path:
    path.write_text(render_report(card), encoding="utf-8")
    return path
