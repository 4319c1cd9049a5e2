"""The pipeline's own decisions replayed as of each rebalance session.

At each decision session D: the regime for D (the model's vectorised frame: row D equals the
daily run's `compute_regime(md, D)`, every indicator being causal), then
`bloasis.strategy.session.decide_session` — the function the daily run calls — on the data cut
at D, then each portfolio's strategy: a profile's own (`book.strategy`) or a user's
(`derive_many`, as the daily run derives users). What is kept of a strategy is what an executor
receives: each symbol's weight and its order levels (stop, profit tiers, trailing stop).

Blocks of sessions are independent, so a caller may decide them on several workers
(`decide_block` is pure and its inputs and outputs pickle).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from bloasis.backtest.types import FREQUENCIES, BacktestInputError, Portfolio
from bloasis.marketdata.types import MarketData
from bloasis.regime.model import RegimeModel, classify_frame, results_from_frame
from bloasis.regime.types import RegimeResult
from bloasis.strategy.engine import WINDOW
from bloasis.strategy.optimiser import Proposal, pool_proposal
from bloasis.strategy.sectors import SectorParams
from bloasis.strategy.session import decide_session
from bloasis.strategy.types import PROFILES, Strategy
from bloasis.strategy.users import derive_many

# Level columns of `Targets.levels` (raw price units, as the strategy publishes them; sizes are
# fractions of the position at entry, trail a fraction of the highest price since entry).
STOP, TIER1, TIER2, TIER1_SIZE, TIER2_SIZE, TRAIL = range(6)
N_LEVELS = 6
_RUN = uuid.UUID(int=0)  # decisions do not depend on the run's id or clock
_AT = datetime(2000, 1, 1, tzinfo=UTC)


def decision_sessions(index: pd.DatetimeIndex, start: date, end: date, freq: str) -> np.ndarray:
    """Positions in `index` of the decision sessions in [start, end): the first session, then
    the last session of each week / month (every session for daily). The last session of the
    range decides nothing: its orders would execute after `end`."""
    if freq not in FREQUENCIES:
        raise BacktestInputError("rebalance", f"{freq!r} (expected one of {FREQUENCIES})")
    lo = int(index.searchsorted(pd.Timestamp(start), "left"))
    hi = int(index.searchsorted(pd.Timestamp(end), "right"))
    days = index[lo:hi]
    if len(days) < 2:
        raise BacktestInputError("end", f"fewer than 2 sessions in [{start}, {end}]")
    if freq == "daily":
        chosen = np.arange(len(days) - 1)
    else:
        iso = days.isocalendar()
        period = (
            iso["year"].to_numpy() * 100 + iso["week"].to_numpy()
            if freq == "weekly"
            else days.year.to_numpy() * 100 + days.month.to_numpy()
        )
        last = np.flatnonzero(np.r_[period[1:] != period[:-1], True])
        chosen = np.unique(np.r_[0, last[last < len(days) - 1]])
    return (lo + chosen).astype(np.int64)


def regimes_at(
    md: MarketData, model: RegimeModel, idx: np.ndarray, frame: pd.DataFrame | None = None
) -> list[RegimeResult]:
    """The regime of each decision session, from one vectorised pass (see the module doc);
    `frame`: `classify_frame` of `md.market` when the caller has it already."""
    if frame is None:
        frame = classify_frame(md.market.iloc[: int(idx.max()) + 1], model.params)
    wanted = md.index[idx]
    missing = [d for d in wanted if d not in frame.index]
    if missing:
        first = frame.index[0].date() if len(frame) else None
        raise BacktestInputError(
            "start",
            f"{missing[0].date()} has no regime: the model needs "
            f"{model.params.sma_min_periods} sessions of index history first "
            f"(the first session with one is {first})",
        )
    return results_from_frame(
        frame.loc[wanted], trigger="backfill", run_id=_RUN, model_version=model.version,
        computed_at=_AT,
    )  # fmt: skip


class SharedProposals:
    """`pool_proposal` memoised for one session: one solve per set of symbols."""

    def __init__(self) -> None:
        self._memo: dict[frozenset[str], tuple[Proposal, dict[str, float]]] = {}
        self.solves = 0

    def __call__(self, closes: np.ndarray, symbols: list[str]) -> Proposal:
        key = frozenset(symbols)
        got = self._memo.get(key)
        if got is None:
            p = pool_proposal(closes, symbols)
            self.solves += 1
            by = {} if p.weights is None else dict(zip(symbols, p.weights.tolist(), strict=True))
            got = self._memo[key] = (p, by)
        p, by = got
        if p.weights is None:
            return p
        return Proposal(np.array([by[s] for s in symbols], dtype=np.float64), p.note, p.fallback)


@dataclass(frozen=True)
class Targets:
    """Per decision session k, portfolio p and symbol s: the strategy's weight; per session,
    profile g and symbol: its levels (users share their profile's book, hence its levels)."""

    idx: np.ndarray  # K positions in the data's index
    regimes: list[str]  # K
    weights: np.ndarray  # K x P x S, float32, 0 where not held
    levels: np.ndarray  # K x 3 x S x N_LEVELS, NaN where the symbol is not in the pool
    notes: list[str]  # what an operator should know (optimiser fallbacks, quarantined symbols)
    solves: int = 0

    @staticmethod
    def concat(parts: Sequence[Targets]) -> Targets:
        return Targets(
            np.concatenate([t.idx for t in parts]),
            [r for t in parts for r in t.regimes],
            np.concatenate([t.weights for t in parts]),
            np.concatenate([t.levels for t in parts]),
            [n for t in parts for n in t.notes],
            sum(t.solves for t in parts),
        )


def lookback() -> int:
    """Sessions of history a decision reads: cutting the data to this many before D changes
    nothing (every consumer reads at most its last WINDOW rows)."""
    return max(WINDOW, SectorParams().long_window + 1) + 1


def _row(s: Strategy, col: dict[str, int], n: int) -> np.ndarray:
    w = np.zeros(n, dtype=np.float32)
    for g in s.signals:
        w[col[g.symbol]] = float(g.weight)
    return w


def decide_block(
    md: MarketData,
    regimes: Sequence[RegimeResult],
    idx: np.ndarray,
    portfolios: Sequence[Portfolio],
    *,
    top_n: int,
    min_history: int,
    progress: Callable[[int], None] | None = None,
) -> Targets:
    """The decisions of the sessions `idx` (positions in `md.index`, with their `regimes`)."""
    symbols = md.symbols
    col = {s: j for j, s in enumerate(symbols)}
    n_s, n_p, n_k = len(symbols), len(portfolios), len(idx)
    weights = np.zeros((n_k, n_p, n_s), dtype=np.float32)
    levels = np.full((n_k, len(PROFILES), n_s, N_LEVELS), np.nan)
    users = [(i, p.prefs) for i, p in enumerate(portfolios) if p.prefs is not None]
    own = [(i, p.profile) for i, p in enumerate(portfolios) if p.prefs is None]
    notes: list[str] = []
    solves = 0
    back = lookback()
    for k, (i, regime) in enumerate(zip(idx.tolist(), regimes, strict=True)):
        view = md.between(md.index[max(0, i + 1 - back)], md.index[i])
        shared = SharedProposals()
        decided = decide_session(
            view, regime, top_n=top_n, min_history=min_history, quarantine=True,
            optimiser=shared,
        )  # fmt: skip
        solves += shared.solves
        if decided.quarantined:
            left = ", ".join(q.symbol for q in decided.quarantined)
            notes.append(f"{regime.as_of}: too little history, left out {left}")
        for g, profile in enumerate(PROFILES):
            book = decided.books[profile]
            if book.proposal is None:
                notes.append(f"{regime.as_of} {profile}: {book.optimiser_note}")
            for sym, lv in zip(book.symbols, book.levels, strict=True):
                tiers = lv.tiers
                levels[k, g, col[sym]] = (
                    float(lv.stop),
                    float(tiers[0].level) if tiers else np.nan,
                    float(tiers[1].level) if len(tiers) > 1 else np.nan,
                    float(tiers[0].size_pct) if tiers else 0.0,
                    float(tiers[1].size_pct) if len(tiers) > 1 else 0.0,
                    float(lv.trailing_stop_pct),
                )
        for p_i, profile in own:
            weights[k, p_i] = _row(decided.books[profile].strategy, col, n_s)
        if users:
            derived = derive_many(
                decided.books, [u for _, u in users], model_version=regime.model_version
            )
            rows: dict[int, np.ndarray] = {}  # users with the same derivation share signals
            for (p_i, _), s in zip(users, derived, strict=True):
                row = rows.get(id(s.signals))
                if row is None:
                    row = rows[id(s.signals)] = _row(s, col, n_s)
                weights[k, p_i] = row
        if progress is not None:
            progress(1)
    return Targets(idx, [r.regime for r in regimes], weights, levels, notes, solves)
