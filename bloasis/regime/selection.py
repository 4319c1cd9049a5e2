"""How regime-v3's cycle thresholds were chosen: a fixed grid scored on 1990-2006 only.

The rule (issue 13's out-of-sample discipline: "fixed before 2007 and judged on 2007-2022"):
every grid point is scored against the ex-post bull/bear dating on the sessions up to
`SELECTION_END`; points that break the issue's a-priori constraints there (more than 2.5
bull/bear switches a year, a median exit lag after the trough above 40 sessions) are dropped
(the 2% floor per label is not applied here: with one bear market in the span, the share of
recovery says little); the remaining point with the best *neighbourhood* score wins — the
mean of balanced accuracy + stock/cash Sharpe over the point and its grid neighbours — so a
lone lucky point between poor ones is not picked (1990-2006 holds a single bear market, and
single points over-fit it). Nothing after `SELECTION_END` is read: the frame is cut first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd

from bloasis.regime.evaluation import date_bear_markets, score
from bloasis.regime.params import RegimeV3Params
from bloasis.regime.v3 import labels_only, v3_inputs

SELECTION_START: Final = date(1990, 6, 1)
SELECTION_END: Final = date(2006, 12, 31)
GRID: Final[dict[str, tuple[float, ...]]] = {
    "bear_drawdown": (-0.08, -0.10, -0.12),
    "deep_bear_drawdown": (-0.15, -0.20, -0.25),
    "rebound": (0.10, 0.15, 0.20),
    "credit_narrowing": (0.0, 0.05, 0.10, 0.15, 0.20),
    "crisis_vol": (30.0, 35.0, 40.0),
}
MAX_SWITCHES: Final = 2.5
MAX_EXIT_LAG: Final = 40.0


@dataclass(frozen=True)
class Selection:
    chosen: dict[str, float]
    chosen_scores: dict[str, Any]
    candidates: int
    admissible: int
    top: list[dict[str, Any]]

    def params(self, base: RegimeV3Params | None = None) -> RegimeV3Params:
        return (base or RegimeV3Params()).model_copy(update=self.chosen)


def select_v3(
    market: pd.DataFrame,
    base: RegimeV3Params | None = None,
    top_n: int = 10,
    end: date = SELECTION_END,
) -> Selection:
    """Run the grid on `market` cut at `end` (about 3 s for 405 points on 1990-2006)."""
    base = base or RegimeV3Params()
    cut = market.loc[: pd.Timestamp(end)]
    close = cut["index_close"]
    markets = date_bear_markets(close)
    names = list(GRID)
    # The grid moves cycle thresholds only, never a window: the inputs are computed once.
    inputs = v3_inputs(cut, base)
    rows: dict[tuple[int, ...], dict[str, Any]] = {}
    for pos in itertools.product(*(range(len(GRID[n])) for n in names)):
        values = {n: GRID[n][i] for n, i in zip(names, pos, strict=True)}
        labels = labels_only(cut, base.model_copy(update=values), inputs)
        labels = labels.loc[pd.Timestamp(SELECTION_START) :]
        r = score(labels, close, markets, bootstrap=False)
        shares = r["label_distribution"]
        ok = (
            r["switches_per_year"] <= MAX_SWITCHES
            and (r["median_exit_lag_after_trough"] or 0.0) <= MAX_EXIT_LAG
        )
        rows[pos] = {
            **values,
            "balanced_accuracy": r["balanced_accuracy"],
            "sharpe": r["sharpe"],
            "max_drawdown": r["max_drawdown"],
            "switches_per_year": r["switches_per_year"],
            "median_exit_lag_after_trough": r["median_exit_lag_after_trough"],
            "min_label_share": min(shares.values()) if len(shares) == 5 else 0.0,
            "admissible": ok,
            "own": r["balanced_accuracy"] + r["sharpe"],
        }
    for pos, row in rows.items():
        near = [row["own"]]
        for k in range(len(pos)):
            for step in (-1, 1):
                other = (*pos[:k], pos[k] + step, *pos[k + 1 :])
                if other in rows:
                    near.append(rows[other]["own"])
        row["neighbourhood"] = round(float(np.mean(near)), 4)
    admissible = [r for r in rows.values() if r["admissible"]]
    if not admissible:
        raise ValueError(f"no grid point meets the selection constraints up to {end}")
    # Ties (flat regions) go to the earlier grid point: the order of GRID is the tie-break.
    best = max(admissible, key=lambda r: r["neighbourhood"])
    top = sorted(admissible, key=lambda r: -r["neighbourhood"])[:top_n]
    return Selection(
        chosen={n: best[n] for n in names},
        chosen_scores={k: v for k, v in best.items() if k not in names},
        candidates=len(rows),
        admissible=len(admissible),
        top=top,
    )


@dataclass(frozen=True)
class WalkForward:
    labels: pd.Series  # each year labelled with the thresholds selected on the years before it
    chosen: dict[int, dict[str, float]]


def walk_forward_v3(
    market: pd.DataFrame,
    first_year: int,
    base: RegimeV3Params | None = None,
    progress: Callable[[str], None] | None = None,
) -> WalkForward:
    """The selection re-run every January on all data before it (expanding), its choice
    labelling that year only: the other out-of-sample protocol ("fitted on data up to year Y,
    applied to Y+1"). About 3-6 s a year."""
    base = base or RegimeV3Params()
    last_year = pd.Timestamp(market.index[-1]).year
    parts: list[pd.Series] = []
    chosen: dict[int, dict[str, float]] = {}
    for year in range(first_year, last_year + 1):
        if progress is not None:
            progress(f"walk-forward selection for {year}")
        sel = select_v3(market, base, top_n=0, end=date(year - 1, 12, 31))
        chosen[year] = sel.chosen
        labels = labels_only(market.loc[: pd.Timestamp(date(year, 12, 31))], sel.params(base))
        parts.append(labels.loc[str(year)])
    return WalkForward(pd.concat(parts), chosen)
