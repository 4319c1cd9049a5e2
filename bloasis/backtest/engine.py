"""A backtest of the pipeline's strategies: decide (`decisions`), execute (`simulate`), measure
(`metrics`), beside three benchmarks run through the same execution:

- "S&P 500 buy and hold": the index bought on the first execution session and held (the data's
  index is the price index: dividends are not in it, about 2% a year in this period);
- "universe equal weight": every symbol of the universe trading that day at 1/n, rebalanced on
  the same sessions with the same costs (no stops);
- "regime stock/cash": the index while the regime is bull, recovery or sideways, cash in bear
  and crisis, decided on the same sessions, same costs.

Survivorship: the embedded universe is 20 of today's large caps, chosen in 2022 with hindsight
(`UNIVERSE_NOTE`); every report carries that note.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd

from bloasis.backtest import metrics
from bloasis.backtest.decisions import (
    Targets,
    decide_block,
    decision_sessions,
    regimes_at,
)
from bloasis.backtest.simulate import Prices, SimResult, prices_of, simulate
from bloasis.backtest.types import BacktestInputError, BacktestSpec
from bloasis.marketdata.types import MarketData
from bloasis.regime.model import RegimeModel, classify_frame
from bloasis.regime.params import RegimeParams
from bloasis.regime.selection import SELECTION_END
from bloasis.strategy.types import PROFILES
from bloasis.strategy.users import validate_preferences

BENCHMARKS: Final = ("S&P 500 buy and hold", "universe equal weight", "regime stock/cash")
INVESTED_REGIMES: Final = frozenset({"bull", "recovery", "sideways"})
UNIVERSE_NOTE: Final = (
    "Survivorship bias: the embedded universe is 20 large US companies that exist today, "
    "picked in 2022 with hindsight; companies that failed or shrank are absent, so every "
    "figure over it (the strategies' and the equal-weight benchmark's) is flattered."
)
BLOCK: Final = 64  # decision sessions per unit of work (a Dask task)
WAVE: Final = 8  # blocks handed to the mapper at a time (progress is reported between waves)

# (label, sessions) -> None; label is "decide" or "simulate".
Progress = Callable[[str, int, int], None]
# Maps `decide_block` over blocks of sessions: sequential, threads, or a Dask client.
Mapper = Callable[[Callable[..., Targets], list[dict[str, Any]]], list[Targets]]


def sequential(fn: Callable[..., Targets], jobs: list[dict[str, Any]]) -> list[Targets]:
    return [fn(**job) for job in jobs]


def in_sample_end(model: RegimeModel) -> date | None:
    """The last day of the data any of the model's parameters were chosen on (None: none were
    chosen from data). regime-v2's thresholds were set looking at the whole embedded history;
    regime-v3's on 1990-2006 (`bloasis.regime.selection`). The strategies' own parameters
    (tilts, factor weights, profiles, levels) were set by hand, not fitted."""
    if isinstance(model.params, RegimeParams):
        return date(2022, 12, 31)
    return SELECTION_END


@dataclass
class BacktestResult:
    spec: BacktestSpec
    model_version: str
    dates: list[date]  # the sessions of the equity curves
    names: list[str]  # portfolios, then BENCHMARKS
    equity: np.ndarray  # T x N
    session_regimes: list[str]  # the regime in force at each session's close
    summary: dict[str, dict[str, Any]]  # name -> measures over the whole range
    per_regime: dict[str, dict[str, dict[str, Any]]]  # name -> regime -> measures
    per_year: dict[str, dict[str, dict[str, Any]]]  # name -> year -> measures
    samples: dict[str, dict[str, dict[str, Any]]]  # name -> in_sample/out_of_sample -> measures
    sample_split: date | None
    notes: list[str]
    execution: str  # where orders filled (open / close) and how levels were checked
    timings: dict[str, float] = field(default_factory=dict)
    targets: Targets | None = None  # the decisions (not stored: the curves and measures are)


def _restrict(md: MarketData, symbols: Sequence[str]) -> MarketData:
    if not symbols:
        return md
    known = set(md.symbols)
    unknown = sorted(set(symbols) - known)
    if unknown:
        raise BacktestInputError(
            "symbols", f"not in the data's universe: {', '.join(unknown[:10])}"
        )
    keep = [s for s in md.symbols if s in set(symbols)]
    return dataclasses.replace(
        md,
        closes=md.closes[keep],
        ohlcv={k: v[keep] for k, v in md.ohlcv.items()} if md.ohlcv else md.ohlcv,
        sectors=md.sectors[md.sectors.index.isin(keep)],
    )


def check_inputs(md: MarketData, spec: BacktestSpec) -> MarketData:
    """Validate `spec` against the data; the data restricted to the backtest's universe."""
    spec.check()
    if len(md.index) == 0 or not md.symbols:
        raise BacktestInputError("symbols", f"the universe is empty ({md.source})")
    first, last = md.first_date, md.last_date
    if spec.start < first or spec.start > last:
        raise BacktestInputError("start", f"{spec.start} is outside the data ({first}..{last})")
    if spec.end > last:
        raise BacktestInputError("end", f"{spec.end} is after the data's last session {last}")
    for p in spec.portfolios:
        if p.prefs is not None:
            problems = validate_preferences(p.prefs)
            if problems:
                raise BacktestInputError("users", f"{p.prefs.user_id}: " + "; ".join(problems))
    return _restrict(md, spec.symbols)


def _index_prices(md: MarketData, cash_rate: np.ndarray) -> Prices:
    """The index as a one-symbol price table (the regime rule trades it)."""
    m = md.market
    close = m["index_close"].to_numpy(dtype=np.float64)[:, None]
    open_ = m["index_open"].to_numpy(dtype=np.float64)[:, None]
    high = m["index_high"].to_numpy(dtype=np.float64)[:, None]
    low = m["index_low"].to_numpy(dtype=np.float64)[:, None]
    has_range = bool(np.isfinite(high).any())
    return Prices(
        close,
        open_,
        np.where(np.isnan(high), close, high),
        np.where(np.isnan(low), close, low),
        np.ones_like(close),
        cash_rate,
        has_range,
    )


def _execution_note(sims: Sequence[SimResult], prices: Prices) -> str:
    opens = sum(s.fills_at_open for s in sims)
    closes = sum(s.fills_at_close for s in sims)
    where = (
        "at the next session's close (the data has no opens)"
        if opens == 0
        else f"at the next session's open ({opens} fills; {closes} at a close where no open)"
    )
    levels = (
        "stops and tiers checked against each bar's high and low"
        if prices.has_range
        else "stops and tiers checked against closes only (the data has no high/low)"
    )
    return f"orders filled {where}; {levels}"


def run(
    md: MarketData,
    spec: BacktestSpec,
    model: RegimeModel,
    *,
    mapper: Mapper = sequential,
    progress: Progress | None = None,
) -> BacktestResult:
    """The backtest of `spec` on `md` under the regime `model` (see the module doc)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = check_inputs(md, spec).as_of(spec.end)
    idx = decision_sessions(data.index, spec.start, spec.end, spec.rebalance)
    # One pass gives the decisions' regimes and every session's label (the HMM's is not cheap).
    frame = classify_frame(data.market, model.params)
    regimes = regimes_at(data, model, idx, frame)
    timings["regime_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    jobs = [
        {
            "md": data.between(None, data.index[int(idx[j : j + BLOCK].max())]),
            "regimes": regimes[j : j + BLOCK],
            "idx": idx[j : j + BLOCK],
            "portfolios": spec.portfolios,
            "top_n": spec.top_n,
            "min_history": spec.min_history,
        }
        for j in range(0, len(idx), BLOCK)
    ]
    parts: list[Targets] = []
    for w in range(0, len(jobs), WAVE):  # in waves, to report progress between them
        if progress is not None:
            progress("decide", sum(len(t.idx) for t in parts), len(idx))
        parts += mapper(decide_block, jobs[w : w + WAVE])
    targets = Targets.concat(parts)
    if progress is not None:
        progress("decide", len(idx), len(idx))
    timings["decide_s"] = time.perf_counter() - t

    t = time.perf_counter()
    start_row, end_row = int(idx[0]), len(data.index) - 1
    prices = prices_of(data)
    cash = float(spec.initial_cash)
    group = np.array([PROFILES.index(p.profile) for p in spec.portfolios])
    kw: dict[str, Any] = {
        "start": start_row, "end": end_row, "costs": spec.costs, "initial_cash": cash
    }  # fmt: skip
    strat = simulate(prices, targets.idx, targets.weights, targets.levels, group, **kw)
    # Benchmarks through the same execution.
    trading = np.isfinite(prices.close[targets.idx])
    ew = (trading / np.maximum(trading.sum(axis=1, keepdims=True), 1))[:, None, :]
    equal = simulate(prices, targets.idx, ew.astype(np.float32), None, np.zeros(1, int), **kw)
    ix = _index_prices(data, prices.cash_rate)
    invested = np.array([r in INVESTED_REGIMES for r in targets.regimes], dtype=np.float32)
    rule = simulate(ix, targets.idx, invested[:, None, None], None, np.zeros(1, int), **kw)
    index_close = pd.Series(ix.close[:, 0]).ffill().to_numpy()
    buy_hold = cash * index_close[start_row : end_row + 1] / index_close[start_row]
    timings["simulate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    names = [p.name for p in spec.portfolios] + list(BENCHMARKS)
    equity = np.column_stack([strat.equity, buy_hold, equal.equity, rule.equity])
    dates = [d.date() for d in data.index[start_row : end_row + 1]]
    labels = frame["regime"].reindex(data.index[start_row : end_row + 1]).fillna("").tolist()
    rf = prices.cash_rate[start_row + 1 : end_row + 1]
    rets = metrics.returns_of(equity)
    whole = metrics.return_measures(rets, rf)
    trade_cols = _trade_measures(
        [(strat, len(spec.portfolios)), (None, 1), (equal, 1), (rule, 1)], equity
    )
    exposure = np.column_stack(
        [strat.exposure, (buy_hold > 0)[:, None].astype(float), equal.exposure, rule.exposure]
    )
    summary = {
        n: metrics.column(whole, j)
        | trade_cols[j]
        | {"exposure": float(exposure[:, j].mean()), "sessions": len(dates)}
        for j, n in enumerate(names)
    }
    # A session's return is labelled with the regime in force at the previous close (what a
    # holder knew while holding).
    per_regime = _by_group(rets, rf, np.array(labels[:-1]), names)
    per_year = _by_group(rets, rf, np.array([str(d.year) for d in dates[1:]]), names)
    split = in_sample_end(model)
    samples: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
    ends = np.array(dates[1:])
    for label, mask in (
        ("in_sample", ends <= split if split else np.ones(len(ends), bool)),
        ("out_of_sample", ends > split if split else np.zeros(len(ends), bool)),
    ):
        if mask.any():
            m = metrics.return_measures(rets[mask], rf[mask])
            for j, n in enumerate(names):
                samples[n][label] = metrics.column(m, j) | {
                    "from": str(ends[mask][0]),
                    "to": str(ends[mask][-1]),
                }
    timings["measure_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    notes = [UNIVERSE_NOTE, *_sample_notes(model, split), *sorted(set(targets.notes))[:50]]
    covered = int(np.count_nonzero(prices.cash_rate[start_row : end_row + 1]))
    if covered < len(dates):
        notes.append(
            f"cash earned the 2-year Treasury yield on the {covered} of {len(dates)} sessions "
            "where the data has it, 0 elsewhere"
        )
    return BacktestResult(
        spec=spec,
        model_version=model.version,
        dates=dates,
        names=names,
        equity=equity,
        session_regimes=labels,
        summary=summary,
        per_regime=per_regime,
        per_year=per_year,
        samples=samples,
        sample_split=split,
        notes=notes,
        execution=_execution_note([strat, equal], prices),
        timings=timings | {"optimiser_solves": float(targets.solves)},
        targets=targets,
    )


def _by_group(
    rets: np.ndarray, rf: np.ndarray, groups: np.ndarray, names: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """name -> group -> the measures of the sessions in that group ('' is no group)."""
    out: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
    for g in sorted(set(groups.tolist()) - {""}):
        mask = groups == g
        m = metrics.return_measures(rets[mask], rf[mask])
        for j, n in enumerate(names):
            out[n][g] = metrics.column(m, j) | {"sessions": int(mask.sum())}
    return out


def _sample_notes(model: RegimeModel, split: date | None) -> list[str]:
    if split is None:
        return []
    if isinstance(model.params, RegimeParams):
        return [
            f"In sample: {model.algorithm}'s thresholds were chosen looking at the whole embedded "
            "history (1990-2022), so every figure here is in sample; regime-v3 "
            f"(BLOASIS_REGIME_MODEL=regime-v3) was chosen on 1990-{SELECTION_END.year} only."
        ]
    return [
        f"In sample through {split} ({model.algorithm}'s thresholds were chosen on it), out of "
        "sample after; the embedded VIX proxy was fitted on 2014-2018."
    ]


def _trade_measures(
    sims: Sequence[tuple[SimResult | None, int]], equity: np.ndarray
) -> list[dict[str, Any]]:
    """Per column of `equity` (each simulation's `width` columns in turn; None: buy and hold):
    trades, win rate, profit factor, holding, turnover."""
    years = max((equity.shape[0] - 1) / metrics.ANNUAL, 1e-9)
    out: list[dict[str, Any]] = []
    col = 0
    for s, width in sims:
        for j in range(width):
            if s is None:  # buy and hold: one purchase, never sold
                out.append({"trades": 1, "win_rate": None, "profit_factor": None,
                            "avg_holding_sessions": float(equity.shape[0] - 1),
                            "turnover": 0.0, "stops": 0, "tiers": 0})  # fmt: skip
            else:
                trades = int(s.trades[j])
                mean_eq = float(equity[:, col + j].mean())
                out.append(
                    {
                        "trades": trades,
                        "win_rate": float(s.wins[j] / trades) if trades else None,
                        "profit_factor": (
                            float(s.gross_profit[j] / s.gross_loss[j]) if s.gross_loss[j] else None
                        ),
                        "avg_holding_sessions": (
                            float(s.holding_sessions[j] / trades) if trades else None
                        ),
                        # One-way, a year: half the value traded over the mean equity.
                        "turnover": float(s.traded[:, j].sum() / 2 / mean_eq / years),
                        "stops": int(s.stops[j]),
                        "tiers": int(s.tiers[j]),
                        "costs": float(s.costs[j]),
                    }
                )
        col += width
    return out
