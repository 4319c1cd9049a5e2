"""A backtest's pictures and tables, from what is stored (so a found backtest renders the
same): equity curves against the benchmarks (log scale), drawdowns, and the index with the
regime in force shaded. PNG via matplotlib; one self-contained HTML page (images inlined)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Final

import numpy as np

REGIME_COLOURS: Final = {
    "crisis": "#d62728",
    "bear": "#ff7f0e",
    "sideways": "#bcbd22",
    "recovery": "#17becf",
    "bull": "#2ca02c",
}
INDEX_CURVE: Final = "S&P 500 buy and hold"
TABLE_MEASURES: Final = (
    ("total_return", "total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("volatility", "volatility", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "max drawdown", "pct"),
    ("calmar", "Calmar", "num"),
    ("win_rate", "win rate", "pct"),
    ("profit_factor", "profit factor", "num"),
    ("trades", "trades", "int"),
    ("avg_holding_sessions", "avg holding (sessions)", "num"),
    ("turnover", "turnover (a year)", "num"),
    ("exposure", "exposure", "pct"),
)


def regime_segments(dates: Sequence[date], labels: Sequence[str]) -> list[list[str]]:
    """Runs of one regime as [first, last, regime] (compact enough to store)."""
    out: list[list[str]] = []
    for d, lab in zip(dates, labels, strict=True):
        if out and out[-1][2] == lab:
            out[-1][1] = d.isoformat()
        else:
            out.append([d.isoformat(), d.isoformat(), lab])
    return [s for s in out if s[2]]


def fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    if kind == "int":
        return f"{int(value):,}"
    return f"{float(value):.2f}"


def markdown_table(summary: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> str:
    """Measures down, portfolios across; a measure nobody has (a sample's trade counts) is
    left out."""
    head = "| measure | " + " | ".join(names) + " |"
    rule = "|---|" + "---|" * len(names)
    rows = [
        f"| {label} | " + " | ".join(fmt(summary.get(n, {}).get(key), kind) for n in names) + " |"
        for key, label, kind in TABLE_MEASURES
        if any(summary.get(n, {}).get(key) is not None for n in names)
    ]
    return "\n".join([head, rule, *rows])


def sample_sections(
    report: Mapping[str, Any], names: Sequence[str]
) -> list[tuple[str, dict[str, Mapping[str, Any]]]]:
    """(title, portfolio -> measures) of the in- and out-of-sample periods. None when all of
    the range is in sample: the whole range's table says it all (and the notes why)."""
    samples = report.get("samples", {})
    split = {
        label: {n: r for n in names if (r := samples.get(n, {}).get(label))}
        for label in ("in_sample", "out_of_sample")
    }
    if not split["out_of_sample"]:
        return []
    out = []
    for label, rows in split.items():
        if rows:
            first = next(iter(rows.values()))
            out.append((f"{label.replace('_', ' ')}: {first['from']} to {first['to']}", rows))
    return out


def charts(
    dates: Sequence[date],
    curves: Mapping[str, Sequence[float]],
    segments: Sequence[Sequence[str]],
) -> dict[str, bytes]:
    """PNG bytes: `equity`, `drawdown`, `regimes`."""
    import matplotlib

    matplotlib.use("Agg")  # no display here or in a worker
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    x = np.array(dates, dtype="datetime64[D]")
    out: dict[str, bytes] = {}

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        return buf.getvalue()

    fig, ax = plt.subplots(figsize=(12, 5))
    for name, ys in curves.items():
        bench = name in ("S&P 500 buy and hold", "universe equal weight", "regime stock/cash")
        ax.plot(x, ys, label=name, linewidth=0.9, linestyle="--" if bench else "-")
    ax.set_yscale("log")
    ax.set_title("Equity (log scale), strategies against the benchmarks")
    ax.legend(fontsize=8, loc="upper left")
    ax.xaxis.set_major_locator(mdates.AutoDateLocator())
    out["equity"] = png(fig)

    fig, ax = plt.subplots(figsize=(12, 4))
    for name, ys in curves.items():
        e = np.asarray(ys, dtype=np.float64)
        ax.plot(x, 100 * (e / np.maximum.accumulate(e) - 1.0), label=name, linewidth=0.8)
    ax.set_title("Drawdown from the running peak (%)")
    ax.legend(fontsize=8, loc="lower left")
    out["drawdown"] = png(fig)

    fig, ax = plt.subplots(figsize=(12, 4))
    index = curves.get(INDEX_CURVE)
    if index is not None:
        ax.plot(x, index, color="black", linewidth=0.8)
        ax.set_yscale("log")
    seen: set[str] = set()
    for first, last, reg in segments:
        label = reg if reg not in seen else None
        seen.add(reg)
        ax.axvspan(
            np.datetime64(first), np.datetime64(last) + np.timedelta64(1, "D"),  # type: ignore[arg-type]
            color=REGIME_COLOURS.get(reg, "#999999"), alpha=0.25, linewidth=0, label=label,
        )  # fmt: skip
    ax.set_title("The index (buy and hold, log scale), shaded by the regime in force")
    ax.legend(fontsize=8, loc="upper left", ncols=5)
    out["regimes"] = png(fig)
    return out


def _table_html(rows: Mapping[str, Mapping[str, Any]], names: Sequence[str], title: str) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{label}</td>"
        + "".join(f"<td>{fmt(rows.get(n, {}).get(key), kind)}</td>" for n in names)
        + "</tr>"
        for key, label, kind in TABLE_MEASURES
        if any(key in rows.get(n, {}) for n in names)
    )
    return f"<h3>{html.escape(title)}</h3><table><tr><th></th>{head}</tr>{body}</table>"


def html_page(
    title: str,
    summary: Mapping[str, Mapping[str, Any]],
    report: Mapping[str, Any],
    images: Mapping[str, bytes],
) -> str:
    names = list(report.get("names") or summary)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(str(report.get('execution', '')))}</p>",
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.get("notes", [])) + "</ul>",
        _table_html(summary, names, "Whole range"),
    ]
    for title_s, rows in sample_sections(report, names):
        parts.append(_table_html(rows, names, title_s.capitalize()))
    for key, cap in (("equity", "Equity"), ("drawdown", "Drawdowns"), ("regimes", "Regimes")):
        if key in images:
            data = base64.b64encode(images[key]).decode()
            parts.append(f'<h3>{cap}</h3><img alt="{cap}" src="data:image/png;base64,{data}">')
    regimes = report.get("per_regime", {})
    for reg in sorted({r for n in names for r in regimes.get(n, {})}):
        rows = {n: regimes.get(n, {}).get(reg, {}) for n in names}
        parts.append(_table_html(rows, names, f"Held under {reg}"))
    years = report.get("per_year", {})
    year_keys = sorted({y for n in names for y in years.get(n, {})})
    if year_keys:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = "".join(
            f"<tr><td>{y}</td>"
            + "".join(
                f"<td>{fmt(years.get(n, {}).get(y, {}).get('total_return'), 'pct')}</td>"
                for n in names
            )
            + "</tr>"
            for y in year_keys
        )
        parts.append(f"<h3>Return by year</h3><table><tr><th></th>{head}</tr>{body}</table>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
