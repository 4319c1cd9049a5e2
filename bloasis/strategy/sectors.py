"""Sector analysis (Tier 2): score the 11 GICS sectors, select 3-7, list candidate symbols.

score = tilt_weight x tilt + (1 - tilt_weight) x strength, both 0-100:
- tilt: how the regime favours the sector (`TILTS`): defensive sectors (Consumer Staples, Health
  Care, Utilities; Real Estate and Communication Services moderately) lead in crisis/bear,
  cyclicals (Information Technology, Consumer Discretionary, Financials, Industrials, Materials,
  Energy) in bull/recovery, sideways is nearly neutral with a slight defensive lean;
- strength: relative momentum. Each listed symbol gets the mean of its cross-sectional
  percentiles (vs the whole universe) of its 3- and 6-month returns; a sector's relative
  momentum is its members' mean, and sectors are ranked on it to 0-100 (best 100). A sector
  without members (or whose members are all too new to measure) gets 50.

Members are the symbols with a known sector and a close on the as-of session.

Selection: sectors are ranked by score (ties in GICS order). Among sectors that have members,
those scoring at least `select_score` are selected, but never fewer than `min_selected` nor more
than `max_selected` (best first). Only when fewer than `min_selected` sectors have members is the
selection padded with the best memberless sectors (they contribute no candidates).

Candidates: in each selected sector, the `per_sector` members with the best momentum percentile
(at least a 3-month return needed); all of them ordered by that percentile, best first (ties by
symbol). Each symbol has one sector, so there are no duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np

from bloasis.marketdata.types import MarketData
from bloasis.regime.types import REGIMES
from bloasis.strategy.factors import percentile_scores
from bloasis.strategy.types import GICS_SECTORS, SectorAnalysis, SectorScore

_TILT_COLUMNS: Final = ("crisis", "bear", "sideways", "bull", "recovery")
_TILT_ROWS: Final[dict[str, tuple[float, float, float, float, float]]] = {
    # sector: (crisis, bear, sideways, bull, recovery)
    "Communication Services": (60, 55, 50, 60, 55),
    "Consumer Discretionary": (20, 30, 45, 80, 85),
    "Consumer Staples": (90, 80, 55, 35, 35),
    "Energy": (35, 40, 45, 55, 60),
    "Financials": (20, 30, 50, 70, 80),
    "Health Care": (85, 75, 55, 45, 45),
    "Industrials": (30, 35, 50, 70, 75),
    "Information Technology": (25, 35, 50, 85, 80),
    "Materials": (30, 35, 45, 60, 70),
    "Real Estate": (60, 55, 50, 50, 55),
    "Utilities": (90, 80, 55, 30, 30),
}
TILTS: Final[dict[str, dict[str, float]]] = {
    regime: {s: float(_TILT_ROWS[s][i]) for s in GICS_SECTORS}
    for i, regime in enumerate(_TILT_COLUMNS)
}
assert set(TILTS) == set(REGIMES) and set(_TILT_ROWS) == set(GICS_SECTORS)


@dataclass(frozen=True)
class SectorParams:
    tilt_weight: float = 0.5
    short_window: int = 63  # ~3 months of sessions
    long_window: int = 126  # ~6 months
    select_score: float = 55.0
    min_selected: int = 3
    max_selected: int = 7
    per_sector: int = 10  # candidates per selected sector

    def __post_init__(self) -> None:
        if not 0.0 <= self.tilt_weight <= 1.0:
            raise ValueError(f"tilt_weight must be in [0, 1], got {self.tilt_weight}")
        if not 0 < self.short_window <= self.long_window:
            raise ValueError("windows must satisfy 0 < short_window <= long_window")
        if not 1 <= self.min_selected <= self.max_selected <= len(GICS_SECTORS):
            raise ValueError("need 1 <= min_selected <= max_selected <= 11")
        if self.per_sector < 1:
            raise ValueError(f"per_sector must be >= 1, got {self.per_sector}")


def _trailing_return(closes: np.ndarray, window: int) -> np.ndarray:
    if closes.shape[0] <= window:
        return np.full(closes.shape[1], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(closes[-1] / closes[-1 - window] - 1.0)


def analyze_sectors(
    md: MarketData, as_of: date, regime: str, *, params: SectorParams | None = None
) -> SectorAnalysis:
    """Score all 11 sectors as of `as_of` (data after it is never read) under `regime`."""
    p = params or SectorParams()
    if regime not in TILTS:
        raise ValueError(f"unknown regime {regime!r} (expected one of {REGIMES})")
    view = md.as_of(as_of)
    if len(view.index) == 0:
        raise ValueError(f"no market data on or before {as_of}")
    symbols = view.symbols
    closes = view.closes.iloc[-(p.long_window + 1) :].to_numpy(dtype=np.float64)
    sector_index = {s: i for i, s in enumerate(GICS_SECTORS)}
    sector_names = view.sectors.reindex(symbols)
    code = np.array([sector_index.get(str(s), -1) for s in sector_names], dtype=np.int64)
    member = (code >= 0) & ~np.isnan(closes[-1])

    # Symbol momentum percentile vs the universe (the members), from the 3- and 6-month
    # returns; NaN when neither can be measured.
    ranks = []
    for window in (p.short_window, p.long_window):
        r = np.where(member, _trailing_return(closes, window), np.nan)
        ranks.append(percentile_scores(r))
    stacked = np.vstack(ranks)
    known = (~np.isnan(stacked)).sum(axis=0)
    momentum = np.where(known > 0, np.nansum(stacked, axis=0) / np.maximum(known, 1), np.nan)

    n_sectors = len(GICS_SECTORS)
    members = np.bincount(code[member], minlength=n_sectors)
    measured = member & ~np.isnan(momentum)
    m_count = np.bincount(code[measured], minlength=n_sectors)
    m_sum = np.bincount(code[measured], weights=momentum[measured], minlength=n_sectors)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(m_count > 0, m_sum / np.maximum(m_count, 1), np.nan)
    strength = np.where(m_count > 0, percentile_scores(relative), 50.0)

    tilt = np.array([TILTS[regime][s] for s in GICS_SECTORS])
    score = p.tilt_weight * tilt + (1.0 - p.tilt_weight) * strength
    order = sorted(range(n_sectors), key=lambda k: (-score[k], k))

    with_members = [k for k in order if members[k] > 0]
    above = sum(1 for k in with_members if score[k] >= p.select_score)
    chosen = with_members[: min(max(above, p.min_selected), p.max_selected)]
    if len(chosen) < p.min_selected:
        chosen += [k for k in order if members[k] == 0][: p.min_selected - len(chosen)]
    selected = set(chosen)

    candidates: list[int] = []
    for k in chosen:
        idx = np.flatnonzero(measured & (code == k))
        best = sorted(idx.tolist(), key=lambda j: (-momentum[j], symbols[j]))
        candidates += best[: p.per_sector]
    candidates.sort(key=lambda j: (-momentum[j], symbols[j]))

    scores = tuple(
        SectorScore(
            sector=GICS_SECTORS[k],
            score=float(score[k]),
            tilt=float(tilt[k]),
            strength=float(strength[k]),
            members=int(members[k]),
            rank=rank,
            selected=k in selected,
        )
        for rank, k in enumerate(order, start=1)
    )
    return SectorAnalysis(
        as_of=as_of,
        regime=regime,
        scores=scores,
        candidates=tuple(symbols[j] for j in candidates),
    )
