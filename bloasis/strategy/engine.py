"""Per-profile strategy (Tier 3): everything shared by a profile's users, computed once.

`build_profile_book` scores the sector analysis's candidates (factors x profile weights x regime
multipliers), ranks all of them (the pool: up to `per_sector` x 7 symbols, well beyond the top N,
so a user who excludes sectors can be backfilled), and precomputes per pool symbol what any
strategy needs: volatility, indicators, action, Decimal order levels, the optimiser's proposal
and the pairs above the correlation limit. `book.strategy` is the profile's own strategy: the
derivation of `bloasis.strategy.users` with no preferences and the profile's cap, so a user with
neutral preferences gets exactly the profile's weights.

Price inputs: factors, indicators and returns use adjusted closes; with OHLCV, high and low are
adjusted by the day's adjusted/raw close ratio. The entry is the raw close of the as-of session
(the tradeable price) and ATR is converted to its units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from bloasis.marketdata.types import MarketData
from bloasis.regime.types import RegimeResult
from bloasis.strategy.factors import FACTOR_HISTORY, compute_factors
from bloasis.strategy.indicators import HISTORY, INDICATOR_NAMES, compute_indicators
from bloasis.strategy.optimiser import RETURNS_WINDOW, Proposal, pool_proposal
from bloasis.strategy.profiles import PROFILE_PARAMS, ProfileParams, combine, factor_weights
from bloasis.strategy.signals import CORRELATION_LIMIT, Levels, decide_action, price_levels
from bloasis.strategy.types import PROFILES, Pick, SectorAnalysis, Signal, Strategy

CORRELATION_WINDOW = 60
CORRELATION_MIN_OBS = 20
WINDOW = max(HISTORY, FACTOR_HISTORY, RETURNS_WINDOW + 1)


@dataclass(frozen=True, eq=False)
class ProfileBook:
    """A profile's ranked candidate pool and what user derivations need. Pool order: best
    final score first (ties by symbol); tuples are indexed by pool position."""

    profile: str
    as_of: date
    regime: str
    risk_level: str
    model_version: str
    top_n: int
    params: ProfileParams
    factor_weights: dict[str, float]  # effective, over the factors present, sum 1
    symbols: tuple[str, ...]
    sectors: tuple[str, ...]
    scores: tuple[float, ...]  # final score 0-100
    factor_scores: tuple[dict[str, float], ...]  # available factors only
    vols: tuple[float, ...]  # annualised 60-day realised volatility
    actions: tuple[str, ...]
    action_notes: tuple[str, ...]
    levels: tuple[Levels, ...]
    proposal: tuple[float, ...] | None  # optimiser weights (NaN: not covered); None: failed
    optimiser_note: str
    correlated: tuple[frozenset[int], ...]  # pool positions with correlation > limit
    corr: np.ndarray = field(repr=False)  # pool x pool 60-day return correlation (NaN: unknown)
    indicators: pd.DataFrame = field(repr=False)  # index: pool symbols
    optimiser_fallback: str = ""  # `Proposal.fallback`: why weights are volatility-targeted only

    @property
    def strategy_id(self) -> str:
        return f"{self.profile}:{self.as_of.isoformat()}:{self.model_version}"

    def entries(self) -> list[tuple[Pick, Signal]]:
        """Every pool candidate in pool order as (pick, weight-0 signal): the ranked book with
        its levels, which is what stores keep (weights belong to each strategy)."""
        from bloasis.strategy.users import pool_entries

        return pool_entries(self)

    @cached_property
    def strategy(self) -> Strategy:
        """The profile's strategy: top N picks and their signals."""
        from bloasis.strategy.users import profile_strategy

        return profile_strategy(self)


@dataclass(frozen=True, eq=False)
class PriceInputs:
    """The last `WINDOW` sessions of `symbols` (those trading on the last session), as the
    factors and indicators take them: adjusted closes, high and low adjusted by the day's
    adjusted/raw close ratio (closes-only data: high = low = close), the raw close and the
    dollar volume (None without volume)."""

    symbols: list[str]
    closes: np.ndarray
    high: np.ndarray
    low: np.ndarray
    raw_close: np.ndarray
    dollar_volume: np.ndarray | None


def price_inputs(view: MarketData, symbols: list[str]) -> PriceInputs:
    """`PriceInputs` of `symbols` at the last row of `view` (cut it at the as-of first)."""
    cands = list(symbols)
    closes = view.closes[cands].iloc[-WINDOW:].to_numpy(dtype=np.float64)
    if len(closes) and np.isnan(closes[-1]).any():  # only symbols trading on the as-of session
        keep = np.flatnonzero(~np.isnan(closes[-1]))
        cands, closes = [cands[j] for j in keep], closes[:, keep]
    high = low = raw_close = closes
    dollar_volume = None
    if view.ohlcv is not None and cands:
        raw = {k: view.ohlcv[k][cands].iloc[-WINDOW:].to_numpy(np.float64) for k in view.ohlcv}
        raw_close = (
            np.where(np.isnan(raw["close"]), closes, raw["close"]) if "close" in raw else closes
        )
        adj = closes / raw_close  # the day's adjustment factor

        def adjusted(name: str) -> np.ndarray:
            a = raw.get(name)
            return closes if a is None else np.where(np.isnan(a), closes, a * adj)

        high, low = adjusted("high"), adjusted("low")
        if "volume" in raw:
            dollar_volume = raw_close * raw["volume"]
    return PriceInputs(cands, closes, high, low, raw_close, dollar_volume)


def _sector_of(md: MarketData, symbols: list[str]) -> list[str]:
    return [str(s) for s in md.sectors.reindex(symbols).to_numpy()]


def build_profile_book(
    md: MarketData,
    as_of: date,
    regime: RegimeResult,
    analysis: SectorAnalysis,
    profile: str,
    *,
    top_n: int = 15,
    model_version: str,
    fundamentals: pd.DataFrame | None = None,
    optimiser: Callable[[np.ndarray, list[str]], Proposal] | None = None,
) -> ProfileBook:
    """Score, rank and prepare `analysis.candidates` for `profile` as of `as_of` (data after it
    is never read). `fundamentals`: optional per-symbol `value`/`quality` columns.
    `optimiser(closes, symbols)`: the pool's proposal (default: `pool_proposal`; a backtest
    memoises it, one solve per session for the profiles whose pools hold the same symbols)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown risk profile {profile!r} (expected one of {PROFILES})")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    if analysis.as_of != as_of or regime.as_of != as_of:
        raise ValueError(
            f"as-of mismatch: book {as_of}, sector analysis {analysis.as_of}, regime {regime.as_of}"
        )
    if analysis.regime != regime.regime:
        raise ValueError(
            f"sector analysis is for regime {analysis.regime!r}, the regime is {regime.regime!r}"
        )
    view = md.as_of(as_of)
    listed = set(view.symbols)
    px = price_inputs(view, [s for s in analysis.candidates if s in listed])
    cands, closes, high, low, raw_close = px.symbols, px.closes, px.high, px.low, px.raw_close
    dollar_volume = px.dollar_volume
    entry = raw_close[-1]

    table = compute_factors(
        closes, tuple(cands), dollar_volume=dollar_volume, fundamentals=fundamentals
    )
    weights = factor_weights(profile, regime.regime, table.scores) if table.scores else {}
    final = combine(table.scores, weights) if weights else np.full(len(cands), np.nan)
    pool = sorted(np.flatnonzero(~np.isnan(final)).tolist(), key=lambda j: (-final[j], cands[j]))
    symbols = [cands[j] for j in pool]

    ind = compute_indicators(high[:, pool], low[:, pool], closes[:, pool])
    last_close = closes[-1, pool]
    atr_entry = ind.atr * entry[pool] / last_close
    actions: list[str] = []
    notes: list[str] = []
    levels: list[Levels] = []
    for k, j in enumerate(pool):
        action, note = decide_action(
            gap50=float(table.gap50[j]),
            gap200=float(table.gap200[j]),
            rsi=float(ind.rsi[k]),
            macd_hist=float(ind.macd_hist[k]),
            adx=float(ind.adx[k]),
            overextended=bool(last_close[k] > ind.bb_upper[k]),
        )
        actions.append(action)
        notes.append(note)
        atr, vol = float(atr_entry[k]), float(table.vol[j])
        levels.append(price_levels(float(entry[j]), atr, vol, regime.risk_level))

    returns = pd.DataFrame(closes[-(CORRELATION_WINDOW + 1) :, pool]).pct_change(fill_method=None)
    corr = returns.iloc[1:].corr(min_periods=CORRELATION_MIN_OBS).to_numpy(dtype=np.float64)
    high_corr = np.nan_to_num(corr, nan=0.0) > CORRELATION_LIMIT
    np.fill_diagonal(high_corr, False)
    proposal = (optimiser or pool_proposal)(closes[:, pool], symbols)

    def scores_of(j: int) -> dict[str, float]:
        return {f: round(float(s[j]), 2) for f, s in table.scores.items() if not math.isnan(s[j])}

    indicator_cols: dict[str, Any] = dict(ind.as_dict())
    indicator_cols.update(
        close=last_close,
        entry=entry[pool],
        atr_entry=atr_entry,
        gap50=table.gap50[pool],
        gap200=table.gap200[pool],
    )
    return ProfileBook(
        profile=profile,
        as_of=as_of,
        regime=regime.regime,
        risk_level=regime.risk_level,
        model_version=model_version,
        top_n=top_n,
        params=PROFILE_PARAMS[profile],
        factor_weights=weights,
        symbols=tuple(symbols),
        sectors=tuple(_sector_of(view, symbols)),
        scores=tuple(float(final[j]) for j in pool),
        factor_scores=tuple(scores_of(j) for j in pool),
        vols=tuple(float(table.vol[j]) for j in pool),
        actions=tuple(actions),
        action_notes=tuple(notes),
        levels=tuple(levels),
        proposal=None if proposal.weights is None else tuple(proposal.weights.tolist()),
        optimiser_note=proposal.note,
        optimiser_fallback=proposal.fallback,
        correlated=tuple(frozenset(np.flatnonzero(row).tolist()) for row in high_corr),
        corr=corr,
        indicators=pd.DataFrame(indicator_cols, index=pd.Index(symbols, name="symbol", dtype=str))[
            [*INDICATOR_NAMES, "close", "entry", "atr_entry", "gap50", "gap200"]
        ],
    )
