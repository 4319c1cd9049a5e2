"""Issue 13's comparison as a bench entry: regime-v3 against regime-v2, the statistical jump
model and the filtered HMM on the embedded S&P 500 closes, scored against the ex-post bull/bear
dating; the targets judged out of sample (2007-2022) with their `met` flags.

    python -m bench.regime_vs_peers [--size tiny|quick|full]

`full` also draws the chart (`bench/results/regime-comparison.png`) and scores the walk-forward
re-selection of regime-v3's thresholds; `quick` and `tiny` skip both, `tiny` the block bootstrap
as well.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

from bench.common import entry, say, size_main
from bloasis.app.regime_compare import MODELS, CompareRequest, run_comparison
from bloasis.marketdata import EmbeddedSource

SIZES: Final = ("tiny", "quick", "full")
CHART: Final = Path(__file__).parent / "results" / "regime-comparison.png"
KEYS: Final = (
    "balanced_accuracy",
    "bull_recall",
    "bear_recall",
    "median_onset_lag_from_peak",
    "median_onset_lag_from_minus10",
    "median_exit_lag_after_trough",
    "sharpe",
    "sharpe_diff_90ci",
    "cagr",
    "max_drawdown",
    "switches_per_year",
)


def run(size: str = "full") -> list[dict[str, Any]]:
    md = EmbeddedSource().load()
    req = CompareRequest(
        bootstrap=size != "tiny",
        chart=CHART if size == "full" else None,
        walk_forward=size == "full",
    )
    t = time.perf_counter()
    doc = run_comparison(md, req, progress=say).document
    seconds = time.perf_counter() - t
    targets = doc["targets"]
    met = sum(t["met"] for t in targets)

    def table(span: str) -> dict[str, dict[str, Any]]:
        s = doc["scores"][span]
        names = [*MODELS, "regime-v3-walk-forward", "buy-and-hold"]
        return {m: {k: s[m].get(k) for k in KEYS} for m in names if m in s}

    return [
        entry(
            "regime_vs_peers",
            met,
            "targets met",
            compared_to="jump model (jumpmodels, lambda 50, yearly point-in-time refits), "
            "filtered HMM, regime-v2, buy and hold; ex-post >=20% bear-market dating",
            target=f"all {len(targets)} (out of sample, 2007-2022)",
            met=met == len(targets),
            higher_is_better=True,
            seconds=round(seconds, 2),
            targets=targets,
            out_of_sample=table("out_of_sample"),
            full_span_in_sample_for_v2=table("full"),
            spans=doc["spans"],
            v3_selection=doc["models"]["regime-v3"]["selection"],
            walk_forward=doc["walk_forward"],
            recovery_meaning=doc["scores"]["full"]["regime-v3"].get("recovery"),
            label_distribution=doc["scores"]["full"]["regime-v3"].get("label_distribution"),
            timings_seconds=doc["timings_seconds"],
            chart=doc.get("chart"),
        )
    ]


if __name__ == "__main__":
    size_main(__doc__, SIZES, run)
