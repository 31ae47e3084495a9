"""The backtest report as one self-contained HTML page (inline CSS and SVG, no scripts)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from streams.backtest.svg import PALETTE, Series, heatmap, line_chart

METRICS = (  # key, title, higher is better
    ("auc_roc", "AUC ROC", True),
    ("average_precision", "Average precision", True),
    ("card_precision_at_k", "Card precision@k", True),
    ("log_loss", "Log loss", False),
    ("brier", "Brier score", False),
)
CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;margin:24px;
max-width:1360px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}.sub{color:#555;margin:2px 0}
table{border-collapse:collapse;margin:6px 0}td,th{padding:4px 12px;border-bottom:1px solid #eee;
text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f6f6f6}
td.best{font-weight:700;background:#eef6ee}.grid{display:flex;flex-wrap:wrap;gap:12px}
svg{background:#fff;border:1px solid #eee}svg .title{font-size:13px;font-weight:600}
svg .tick{font-size:10.5px;fill:#444}svg .axis{font-size:11.5px;fill:#333}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
details{margin-top:10px}.note{color:#666;font-size:12.5px}
"""


def render(doc: dict[str, Any]) -> str:
    labels = [m["label"] for m in doc["models"]]
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    figures = doc["metrics"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Backtest {escape(doc['pipeline'])} {escape(doc['range']['from'])}</title>",
        f"<style>{CSS}</style></head><body>",
        _header(doc, colours),
        "<h2>Overall</h2>",
        _overall_table(figures, labels),
        "<div class='grid'>",
        _roc(figures, labels, colours),
        _pr(figures, labels, colours),
        "</div>",
        "<h2>Score distributions</h2><p class='note'>Share of each class per score bin "
        "(negatives grey, positives in the model's colour); log scale.</p>",
        "<div class='grid'>",
        *(_histogram(figures["models"][label], label, colours[label]) for label in labels),
        "</div>",
        "<h2>Metrics per day</h2>",
        "<div class='grid'>",
        *(_per_day(figures, labels, colours, key, title) for key, title, _ in METRICS[:4]),
        "</div>",
        "<h2>Feature drift per day</h2>",
        f"<p class='note'>Population stability index of each feature against the "
        f"{escape(doc['drift']['reference'])} (deciles, or categories, as bins). Above 0.1: "
        "a moderate shift; above 0.25: a large one.</p>",
        _drift(doc["drift"]),
        _per_day_table(figures, labels),
        "</body></html>",
    ]
    return "\n".join(parts)


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) and not v.is_integer() else f"{int(v):,}"


def _header(doc: dict[str, Any], colours: dict[str, str]) -> str:
    r, rows, timing = doc["range"], doc["rows"], doc["timing_s"]
    models = " ".join(
        f"<span class='swatch' style='background:{colours[m['label']]}'></span>"
        f"<b>{escape(m['name'])} {escape(m['label'])}</b> <span class='note'>sha256 "
        f"{escape(m['sha256'][:12])} · {escape(_estimator(m))}</span>&nbsp;&nbsp;"
        for m in doc["models"]
    )
    rate = timing.get("events_per_s", 0.0)
    return (
        f"<h1>Backtest · {escape(doc['pipeline'])} · {escape(r['from'][:10])} → "
        f"{escape(r['to'][:10])}</h1>"
        f"<p class='sub'>{models}</p>"
        f"<p class='sub'>{rows['events']:,} events in range, {rows['labelled']:,} labelled "
        f"({rows['positives']:,} positive, {rows['unlabelled']:,} unlabelled, "
        f"{rows['open_windows']:,} with a join window still open); "
        f"{rows['events_read_with_warm_up']:,} events read with the warm-up, "
        f"{rows['outcomes_read']:,} outcomes.</p>"
        f"<p class='sub note'>[{escape(r['from'])}, {escape(r['to'])}) · features recomputed "
        f"offline (spec {escape(doc['feature_spec_hash'][:12])}) · "
        f"{timing.get('total', 0.0):.1f} s, {rate:,.0f} events/s "
        f"({timing.get('events_per_cpu_s') or 0:,.0f} per CPU second)</p>"
    )


def _estimator(model: dict[str, Any]) -> str:
    est = model.get("estimator")
    if isinstance(est, dict):  # {"estimator": name, "params": …}
        est = est.get("estimator")
    return str(est or "")


def _overall_table(figures: dict[str, Any], labels: list[str]) -> str:
    k = figures["k"]
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    body = []
    for key, title, higher in METRICS:
        values = [figures["models"][label]["overall"][key] for label in labels]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        best = (max if higher else min)(finite) if len(finite) > 1 else None
        cells = "".join(
            f"<td class='best'>{_num(v)}</td>" if v == best else f"<td>{_num(v)}</td>"
            for v in values
        )
        name = title.replace("@k", f"@{k}")
        body.append(f"<tr><td>{name}</td>{cells}</tr>")
    first = figures["models"][labels[0]]["overall"] if labels else {}
    body.append(
        f"<tr><td>labelled rows / positives</td><td colspan='{len(labels)}'>"
        f"{_num(first.get('rows'))} / {_num(first.get('positives'))}</td></tr>"
    )
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(body)}</table>"


def _roc(figures: dict[str, Any], labels: list[str], colours: dict[str, str]) -> str:
    series = [
        Series(
            f"{label} AUC {_num(figures['models'][label]['overall']['auc_roc'], 3)}",
            [tuple(p) for p in figures["models"][label]["roc"]],
            colours[label],
        )
        for label in labels
    ]
    return line_chart(
        series, title="ROC curve", x_label="false positive rate", y_label="true positive rate",
        x_domain=(0, 1), y_domain=(0, 1), diagonal=True, width=460, height=360,
    )  # fmt: skip


def _pr(figures: dict[str, Any], labels: list[str], colours: dict[str, str]) -> str:
    series = [
        Series(
            f"{label} AP {_num(figures['models'][label]['overall']['average_precision'], 3)}",
            [tuple(p) for p in figures["models"][label]["precision_recall"]],
            colours[label],
        )
        for label in labels
    ]
    return line_chart(
        series, title="Precision-recall curve", x_label="recall", y_label="precision",
        x_domain=(0, 1), y_domain=(0, 1), width=460, height=360,
    )  # fmt: skip


def _histogram(model: dict[str, Any], label: str, colour: str) -> str:
    h = model["histogram"]
    edges = h["edges"]
    series = []
    for name, c in (("negatives", "#888888"), ("positives", colour)):
        counts = h[name]
        total = sum(counts) or 1.0
        points: list[tuple[float, float]] = []
        for i, n in enumerate(counts):
            share = math.log10(max(n / total, 1e-5))
            points += [(edges[i], share), (edges[i + 1], share)]
        series.append(Series(f"{name} ({int(sum(counts)):,})", points, c, fill=True))
    ticks = [(-4.0, "0.01%"), (-3.0, "0.1%"), (-2.0, "1%"), (-1.0, "10%"), (0.0, "100%")]
    return line_chart(
        series, title=f"Scores of {label}", x_label="score", y_label="share of class (log)",
        x_domain=(0, 1), y_domain=(-5, 0), y_ticks=ticks, width=430, height=260,
    )  # fmt: skip


def _per_day(
    figures: dict[str, Any], labels: list[str], colours: dict[str, str], key: str, title: str
) -> str:
    days = figures["days"]
    every = max(1, math.ceil(len(days) / 7))
    ticks = [(float(i), d[5:]) for i, d in enumerate(days) if i % every == 0]
    series = []
    values: list[float] = []
    for label in labels:
        ys = [_finite(day[key]) for day in figures["models"][label]["per_day"]]
        values += [y for y in ys if math.isfinite(y)]
        series.append(Series(label, [(float(i), y) for i, y in enumerate(ys)], colours[label]))
    lo = 0.0 if key != "auc_roc" else min([0.5, *values])
    hi = max([1e-9, *values]) * 1.05 if key in ("brier", "log_loss") else 1.0
    name = title.replace("@k", f"@{figures['k']}")
    return line_chart(
        series, title=f"{name} per day", x_label="day (UTC)", y_label=name,
        x_domain=(0, max(len(days) - 1, 1)), y_domain=(lo, hi), x_ticks=ticks,
        width=315, height=250, markers=True,
    )  # fmt: skip


def _finite(v: Any) -> float:
    return float(v) if v is not None and math.isfinite(v) else math.nan


def _drift(drift: dict[str, Any]) -> str:
    names = list(drift["psi"])
    days = drift["days"]
    values = [[_finite(v) for v in drift["psi"][n]] for n in names]
    return heatmap(
        names, [d[5:] for d in days], values, title="PSI per feature and day", vmax=0.25,
        label_every=max(1, math.ceil(len(days) / 40)),
        cell=(max(8, min(26, 900 // max(len(days), 1))), 17),
    )  # fmt: skip


def _per_day_table(figures: dict[str, Any], labels: list[str]) -> str:
    head = "".join(
        f"<th>{escape(label)} {t}</th>" for label in labels for t in ("AUC", "AP", "CP@k", "Brier")
    )
    rows = []
    for i, day in enumerate(figures["days"]):
        first = figures["models"][labels[0]]["per_day"][i]
        cells = "".join(
            f"<td>{_num(figures['models'][label]['per_day'][i][key], 3)}</td>"
            for label in labels
            for key in ("auc_roc", "average_precision", "card_precision_at_k", "brier")
        )
        rows.append(
            f"<tr><td>{day}</td><td>{_num(first['rows'])}</td><td>{_num(first['positives'])}"
            f"</td>{cells}</tr>"
        )
    return (
        "<details><summary>Per-day figures</summary><table><tr><th>day</th><th>rows</th>"
        f"<th>positives</th>{head}</tr>{''.join(rows)}</table></details>"
    )
