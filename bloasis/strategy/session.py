"""One session's tier 2 and tier 3 decisions, as the daily run and the backtests both take
them: screen the universe, score the sectors under the session's regime, build the three profile
books. Pure: no store, no clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from bloasis.marketdata import DataIssue, DataValidationError, MarketData
from bloasis.regime.types import RegimeResult
from bloasis.strategy.engine import ProfileBook, build_profile_book
from bloasis.strategy.optimiser import Proposal
from bloasis.strategy.sectors import analyze_sectors
from bloasis.strategy.types import PROFILES, SectorAnalysis


@dataclass(frozen=True)
class SessionDecision:
    analysis: SectorAnalysis
    books: dict[str, ProfileBook]
    quarantined: list[DataIssue]


def decide_session(
    md: MarketData,
    regime: RegimeResult,
    *,
    top_n: int,
    min_history: int = 21,
    quarantine: bool = False,
    optimiser: Callable[[np.ndarray, list[str]], Proposal] | None = None,
) -> SessionDecision:
    """Sector analysis and the three profile books for the regime's as-of session (data after
    it is never read). `optimiser`: the proposal for a pool (default: risk parity on it)."""
    as_of, mv = regime.as_of, regime.model_version
    view, quarantined = screen_universe(
        md.as_of(as_of), as_of, min_history=min_history, quarantine=quarantine
    )
    analysis = analyze_sectors(view, as_of, regime.regime)
    books = {
        p: build_profile_book(
            view, as_of, regime, analysis, p, top_n=top_n, model_version=mv, optimiser=optimiser
        )
        for p in PROFILES
    }
    return SessionDecision(analysis, books, quarantined)


def screen_universe(
    md: MarketData, as_of: date, *, min_history: int, quarantine: bool
) -> tuple[MarketData, list[DataIssue]]:
    """Symbols that can be scored on `as_of`. No symbol with a close that day is an error
    (rule `empty_universe`); a symbol with fewer than `min_history` closes is an error naming
    it (rule `too_little_history`), or is left out and reported when `quarantine` is on."""
    closes = md.closes.loc[: pd.Timestamp(as_of)]
    if closes.empty or not closes.iloc[-1].notna().any():
        issue = DataIssue("*", as_of, "empty_universe", "no symbol has a close on this date")
        raise DataValidationError(f"{as_of}: empty universe: {issue.detail}", [issue])
    counts = closes.notna().sum()
    short = counts[(counts < min_history) & closes.iloc[-1].notna()]
    listed = closes[short.index].apply(lambda col: col.first_valid_index())
    issues = [
        DataIssue(
            str(sym),
            pd.Timestamp(str(listed[sym])).date(),
            "too_little_history",
            f"{int(n)} closes up to {as_of}, {min_history} needed to score it",
        )
        for sym, n in short.items()
    ]
    if not issues:
        return md, []
    if not quarantine:
        shown = "; ".join(str(i) for i in issues[:10])
        more = f" and {len(issues) - 10} more" if len(issues) > 10 else ""
        raise DataValidationError(
            f"{len(issues)} symbols with too little history (set BLOASIS_QUARANTINE=true to "
            f"leave them out): {shown}{more}",
            issues,
        )
    keep = [c for c in md.closes.columns if c not in set(short.index)]
    return (
        dataclasses.replace(
            md,
            closes=md.closes[keep],
            ohlcv={k: v[keep] for k, v in md.ohlcv.items()} if md.ohlcv else md.ohlcv,
            sectors=md.sectors[md.sectors.index.isin(keep)],
        ),
        issues,
    )
