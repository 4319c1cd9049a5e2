"""How well a labelled history matches market history (SPEC §2 "Validation").

Scores: for each known S&P 500 bear market, the share of sessions labelled bear or crisis from
the day the index first closes 10% below the peak to the trough; the same pooled over all
windows; the share of bull sessions in calm years; regime changes per year; label distribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd

BEAR_MARKETS: Final[tuple[tuple[date, date], ...]] = (
    (date(1990, 7, 16), date(1990, 10, 11)),
    (date(1998, 7, 17), date(1998, 8, 31)),
    (date(2000, 3, 24), date(2002, 10, 9)),
    (date(2007, 10, 9), date(2009, 3, 9)),
    (date(2010, 4, 23), date(2010, 7, 2)),
    (date(2011, 4, 29), date(2011, 10, 3)),
    (date(2015, 5, 21), date(2016, 2, 11)),
    (date(2018, 9, 20), date(2018, 12, 24)),
    (date(2020, 2, 19), date(2020, 3, 23)),
    (date(2022, 1, 3), date(2022, 10, 12)),
)
CALM_YEARS: Final[tuple[int, ...]] = (1995, 2005, 2006, 2017)
# The windows whose scores the regime issue holds to a per-window target.
KEY_WINDOWS: Final[tuple[str, ...]] = ("2000-03-24", "2007-10-09", "2020-02-19", "2022-01-03")
STRESS = ("bear", "crisis")


@dataclass(frozen=True)
class WindowScore:
    peak: str
    trough: str
    scored_from: str | None  # first close 10% below the peak; None if it never got there
    days: int
    stress_share: float | None


@dataclass(frozen=True)
class ValidationReport:
    start: str
    end: str
    sessions: int
    windows: list[WindowScore]
    pooled_stress_share: float | None
    calm_bull_share: float | None
    calm_years: dict[str, float]
    changes_per_year: dict[str, int]
    median_changes_per_year: float
    label_distribution: dict[str, float]
    key_windows_min: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_labels(labels: pd.Series, close: pd.Series) -> ValidationReport:
    """Score a label per session (`labels`, indexed by session) against the index closes."""
    labels = labels.sort_index()
    close = close.reindex(labels.index.union(close.index)).sort_index()
    windows: list[WindowScore] = []
    pooled_hits = pooled_days = 0
    for peak, trough in BEAR_MARKETS:
        seg = close.loc[pd.Timestamp(peak) : pd.Timestamp(trough)]
        lab = labels.loc[pd.Timestamp(peak) : pd.Timestamp(trough)]
        if seg.empty or lab.empty or seg.index[0].date() != peak:
            windows.append(WindowScore(peak.isoformat(), trough.isoformat(), None, 0, None))
            continue
        below = seg <= seg.iloc[0] * 0.9
        if not below.any():
            windows.append(WindowScore(peak.isoformat(), trough.isoformat(), None, 0, None))
            continue
        first = below.idxmax()
        if lab.index[0] > first:  # the labels start inside the scored span: not comparable
            windows.append(WindowScore(peak.isoformat(), trough.isoformat(), None, 0, None))
            continue
        scored = lab.loc[first:]
        hits = int(scored.isin(STRESS).sum())
        pooled_hits += hits
        pooled_days += len(scored)
        windows.append(
            WindowScore(
                peak.isoformat(),
                trough.isoformat(),
                first.date().isoformat(),
                len(scored),
                round(hits / len(scored), 4) if len(scored) else None,
            )
        )
    years = pd.DatetimeIndex(labels.index).year
    calm: dict[str, float] = {}
    calm_hits = calm_days = 0
    for y in CALM_YEARS:
        sel = labels[years == y]
        if len(sel):
            calm[str(y)] = round(float((sel == "bull").mean()), 4)
            calm_hits += int((sel == "bull").sum())
            calm_days += len(sel)
    changed = labels.ne(labels.shift()).to_numpy().copy()
    changed[0] = False
    per_year = pd.Series(changed, index=labels.index).groupby(years).sum()
    # A partial first or last year would understate the rate: count full years only.
    full = [y for y in per_year.index if (years == y).sum() >= 240]
    changes = {str(y): int(per_year[y]) for y in full}
    key = [w.stress_share for w in windows if w.peak in KEY_WINDOWS and w.stress_share is not None]
    return ValidationReport(
        start=labels.index[0].date().isoformat(),
        end=labels.index[-1].date().isoformat(),
        sessions=len(labels),
        windows=windows,
        pooled_stress_share=round(pooled_hits / pooled_days, 4) if pooled_days else None,
        calm_bull_share=round(calm_hits / calm_days, 4) if calm_days else None,
        calm_years=calm,
        changes_per_year=changes,
        median_changes_per_year=float(np.median(list(changes.values()))) if changes else 0.0,
        label_distribution={
            str(k): round(float(v), 4)
            for k, v in labels.value_counts(normalize=True).sort_index().items()
        },
        key_windows_min=min(key) if key else None,
    )


def format_report(r: ValidationReport) -> str:
    lines = [f"Validation {r.start}..{r.end} ({r.sessions} sessions)", ""]
    lines.append("Bear market (peak -> trough)    scored from   days  bear/crisis share")
    for w in r.windows:
        share = "n/a" if w.stress_share is None else f"{w.stress_share:.2f}"
        lines.append(f"  {w.peak} -> {w.trough}   {w.scored_from or '-':<12}  {w.days:>4}  {share}")
    pooled = "n/a" if r.pooled_stress_share is None else f"{r.pooled_stress_share:.2f}"
    lines.append(f"Pooled bear/crisis share: {pooled}")
    calm = ", ".join(f"{y} {v:.2f}" for y, v in r.calm_years.items())
    calm_all = "n/a" if r.calm_bull_share is None else f"{r.calm_bull_share:.2f}"
    lines.append(f"Calm years bull share: {calm_all} ({calm})")
    lines.append(f"Regime changes per full year: median {r.median_changes_per_year:g}")
    lines.append("  " + ", ".join(f"{y}:{n}" for y, n in r.changes_per_year.items()))
    dist = ", ".join(f"{k} {v:.1%}" for k, v in r.label_distribution.items())
    lines.append(f"Label distribution: {dist}")
    return "\n".join(lines)
