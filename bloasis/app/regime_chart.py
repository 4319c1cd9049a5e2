"""The comparison's picture: the index (log scale) with each model's bear periods shaded under
the ex-post dating, and the stock/cash equity curves against buy and hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bloasis.regime import evaluation as ev

_COLOURS = {
    "ex-post dating": "#444444",
    "regime-v2": "#1f77b4",
    "regime-v3": "#d62728",
    "jump-model": "#2ca02c",
    "hmm-filtered": "#9467bd",
    "buy-and-hold": "#7f7f7f",
}


def _spans(flags: pd.Series) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Contiguous True runs as (first, last) sessions."""
    f = flags.to_numpy(dtype=bool)
    if not f.size:
        return []
    edges = np.flatnonzero(np.diff(np.r_[0, f.astype(np.int8), 0]))
    idx = flags.index
    return [(idx[a], idx[b - 1]) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def draw(
    path: Path,
    close: pd.Series,
    labels: dict[str, pd.Series],
    markets: list[ev.BearMarket],
) -> Path:
    """Write a PNG (or an SVG/PDF, by the suffix) to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # no display here or in a worker
    import matplotlib.pyplot as plt

    rows = {"ex-post dating": ev.expost_bear(pd.DatetimeIndex(close.index), markets)}
    rows.update({k: ev.as_bear(v).astype(bool) for k, v in labels.items()})
    n = len(rows)
    fig, axes = plt.subplots(
        n + 1,
        1,
        figsize=(14, 2.0 * n + 4.5),
        sharex=True,
        gridspec_kw={"height_ratios": [1.6] * n + [3.0]},
    )
    for ax, (name, flags) in zip(axes[:-1], rows.items(), strict=True):
        ax.plot(close.index, close.to_numpy(), color="black", linewidth=0.7)
        ax.set_yscale("log")
        for a, b in _spans(flags.reindex(close.index, fill_value=False)):
            ax.axvspan(a, b, color=_COLOURS.get(name, "#999999"), alpha=0.3, linewidth=0)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0].set_title("S&P 500 (log scale) with bear/crisis periods shaded", fontsize=11)
    eq_ax = axes[-1]
    hold = close.pct_change().fillna(0.0)
    eq_ax.plot(
        close.index, (1 + hold).cumprod(), label="buy-and-hold", color=_COLOURS["buy-and-hold"]
    )
    for name, lab in labels.items():
        r = ev.stock_cash_returns(close, ~ev.as_bear(lab).reindex(close.index, fill_value=False))
        eq_ax.plot(
            close.index, (1 + r).cumprod(), label=name, color=_COLOURS.get(name), linewidth=1
        )
    eq_ax.set_yscale("log")
    eq_ax.set_title(
        "Stock/cash equity (decide at the close, trade at the next, 10 bp a switch)", fontsize=10
    )
    eq_ax.legend(loc="upper left", fontsize=8)
    eq_ax.tick_params(labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
