"""Executing decided targets day by day, for many portfolios at once (arrays P x S).

Rules (the README's "Backtests" repeats them):
- A decision taken on session D executes on the next session: at its open where the data has
  one, else at its close (the result says which, per symbol-day count). Each portfolio is
  brought to its target weights of its equity valued at that price; buys fill `slippage` above
  it, sells below, and `commission` is paid on the traded value.
- Between rebalances each position honours its strategy's levels (published in raw prices;
  converted with that day's adjustment factor): the stop trails the highest price since entry
  by `trailing_stop_pct` and never sits below the initial stop (the two start equal: the trail
  distance is the initial stop's); profit tier j sells its share of the position held at entry
  when the price reaches its level. With high and low, a level is hit inside the bar (a gap
  through it fills at the open); a bar that reaches both the stop and a tier is taken as the
  stop first (the worse order, since the path inside a bar is unknown). Close-only data: levels
  are checked against the close and fill at it.
- A position stopped out stays in cash until the next rebalance. Cash (negative only by costs)
  earns the session's short rate where the data has one.
- Trades are counted per round trip (a symbol's position from 0 back to 0), with its P&L net of
  costs; positions open at the end are closed at the last close for the count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bloasis.backtest.decisions import STOP, TIER1, TIER1_SIZE, TIER2, TIER2_SIZE, TRAIL
from bloasis.backtest.types import Costs
from bloasis.marketdata.types import MarketData

# The shortest rate the data holds (percent a year): the 2-year Treasury yield. Sessions
# without it earn 0.
CASH_RATE_COLUMN = "ust2y"
SESSIONS_A_YEAR = 252


@dataclass(frozen=True)
class Prices:
    """T x S in adjusted units (returns include dividends where the closes are adjusted)."""

    close: np.ndarray
    open: np.ndarray  # NaN where the data has no open
    high: np.ndarray  # = close where unknown
    low: np.ndarray
    to_adjusted: np.ndarray  # adjusted / raw close: converts published (raw) levels
    cash_rate: np.ndarray  # T: the simple return of cash over each session
    has_range: bool  # high/low known somewhere (else every check is close-only)


def _ffill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaN down the rows (a suspended symbol keeps its last price)."""
    mask = np.isnan(a)
    if not mask.any():
        return a
    idx = np.where(~mask, np.arange(a.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return a[idx, np.arange(a.shape[1])[None, :]]


def prices_of(md: MarketData, *, cash: bool = True) -> Prices:
    close = md.closes.to_numpy(dtype=np.float64)
    t, s = close.shape
    nan = np.full((t, s), np.nan)
    open_, high, low, factor = nan, close, close, np.ones((t, s))
    has_range = False
    if md.ohlcv:
        raw = {k: v.to_numpy(dtype=np.float64) for k, v in md.ohlcv.items()}
        if "close" in raw:
            with np.errstate(invalid="ignore", divide="ignore"):
                f = close / raw["close"]
            factor = np.where(np.isfinite(f), f, 1.0)
        if "open" in raw:
            open_ = raw["open"] * factor
        if "high" in raw and "low" in raw:
            high = np.where(np.isnan(raw["high"]), close, raw["high"] * factor)
            low = np.where(np.isnan(raw["low"]), close, raw["low"] * factor)
            has_range = bool(np.isfinite(raw["high"]).any())
    rate = np.zeros(t)
    if cash and CASH_RATE_COLUMN in md.market:
        y = md.market[CASH_RATE_COLUMN].to_numpy(dtype=np.float64)
        rate = np.where(np.isfinite(y), y / 100.0 / SESSIONS_A_YEAR, 0.0)
    return Prices(close, open_, high, low, factor, rate, has_range)


@dataclass(frozen=True)
class SimResult:
    equity: np.ndarray  # T' x P, from the first execution session's eve to the end
    exposure: np.ndarray  # T' x P: invested / equity at the close
    traded: np.ndarray  # T' x P: value traded that session (both sides)
    costs: np.ndarray  # P: commission + slippage paid
    trades: np.ndarray  # P: round trips
    wins: np.ndarray  # P: round trips with a positive P&L
    gross_profit: np.ndarray  # P
    gross_loss: np.ndarray  # P (positive)
    holding_sessions: np.ndarray  # P: sessions held, summed over round trips
    stops: np.ndarray  # P: exits by the (trailing) stop
    tiers: np.ndarray  # P: profit tiers taken
    fills_at_open: int  # rebalance fills at an open
    fills_at_close: int  # ... at a close (no open in the data)


def simulate(
    prices: Prices,
    decision_idx: np.ndarray,
    weights: np.ndarray,
    levels: np.ndarray | None,
    group: np.ndarray,
    *,
    start: int,
    end: int,
    costs: Costs,
    initial_cash: float,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """Run sessions [start, end] (positions in the price rows). `decision_idx[k]` decides
    `weights[k]` (K x P x S) executed at `decision_idx[k] + 1`; `levels[k, group[p]]` are the
    levels of portfolio p's positions (None: no levels, rebalancing only)."""
    n_p, n_s = weights.shape[1], weights.shape[2]
    cash = np.full(n_p, float(initial_cash))
    units = np.zeros((n_p, n_s))
    entry_units = np.zeros((n_p, n_s))  # position at entry (tier sizes are shares of it)
    stop = np.full((n_p, n_s), np.nan)
    trail = np.zeros((n_p, n_s))
    tier_lv = np.full((n_p, n_s, 2), np.nan)
    tier_sz = np.zeros((n_p, n_s, 2))
    peak = np.zeros((n_p, n_s))
    # Round trips: cash flow so far and the session each opened.
    flow = np.zeros((n_p, n_s))
    opened = np.full((n_p, n_s), -1)
    trades = np.zeros(n_p, dtype=np.int64)
    wins = np.zeros(n_p, dtype=np.int64)
    gross_p, gross_l, held = np.zeros(n_p), np.zeros(n_p), np.zeros(n_p)
    n_stops, n_tiers = np.zeros(n_p, dtype=np.int64), np.zeros(n_p, dtype=np.int64)
    paid = np.zeros(n_p)
    comm, slip = costs.commission, costs.slippage
    execute = {int(i) + 1: k for k, i in enumerate(decision_idx)}
    # Valuation prices: the last known close (0 before a symbol's first, where none is held).
    close_ff = np.nan_to_num(_ffill(prices.close), nan=0.0)
    n_t = end - start + 1
    equity = np.empty((n_t, n_p))
    exposure = np.empty((n_t, n_p))
    traded = np.zeros((n_t, n_p))
    at_open = at_close = 0

    def sell(mask: np.ndarray, qty: np.ndarray, px: np.ndarray, row: int) -> None:
        """Sell `qty` units where `mask` at `px` (P x S), with costs; closes round trips."""
        nonlocal cash
        q = np.where(mask, qty, 0.0)
        value = q * px * (1.0 - slip)
        fee = value * comm
        cash = cash + value.sum(axis=1) - fee.sum(axis=1)
        paid[:] += fee.sum(axis=1) + (q * px * slip).sum(axis=1)
        traded[row] += (q * px).sum(axis=1)
        flow[:] += value - fee
        units[:] -= q
        _close_trips(row)

    def _close_trips(row: int) -> None:
        done = (units <= 1e-12) & (opened >= 0)
        if not done.any():
            return
        units[done] = 0.0
        pnl = np.where(done, flow, 0.0)
        trades[:] += done.sum(axis=1)
        wins[:] += (done & (flow > 0)).sum(axis=1)
        gross_p[:] += np.where(pnl > 0, pnl, 0.0).sum(axis=1)
        gross_l[:] -= np.where(pnl < 0, pnl, 0.0).sum(axis=1)
        held[:] += np.where(done, start + row - opened, 0).sum(axis=1)
        flow[done] = 0.0
        opened[done] = -1

    for row, t in enumerate(range(start, end + 1)):
        if row:
            cash = cash * (1.0 + prices.cash_rate[t])  # over the session, from the last close
        close = close_ff[t]
        k = execute.get(t)
        if k is not None:
            o = prices.open[t]
            has_open = np.isfinite(o)
            px = np.where(has_open, o, close)
            at_open += int(has_open.sum())
            at_close += int((~has_open & np.isfinite(prices.close[t])).sum())
            tradable = np.isfinite(px) & np.isfinite(prices.close[t])
            pxs = np.where(tradable, px, 0.0)
            value = cash + (units * np.where(tradable, px, close)).sum(axis=1)
            target = weights[k].astype(np.float64) * value[:, None]
            delta = np.where(tradable, target / np.where(tradable, px, 1.0) - units, 0.0)
            sells = delta < -1e-12
            sell(sells, -delta, pxs, row)
            buys = delta > 1e-12
            q = np.where(buys, delta, 0.0)
            cost = q * pxs * (1.0 + slip)
            fee = cost * comm
            cash = cash - cost.sum(axis=1) - fee.sum(axis=1)
            paid[:] += fee.sum(axis=1) + (q * pxs * slip).sum(axis=1)
            traded[row] += (q * pxs).sum(axis=1)
            new = buys & (opened < 0)
            opened[new] = t
            flow[:] -= cost + fee
            units[:] += q
            # Every position takes the new strategy's levels, measured from this fill.
            holding = units > 1e-12
            entry_units[:] = np.where(holding, units, 0.0)
            peak[:] = np.where(holding, pxs, 0.0)
            if levels is not None:
                lv = levels[k][group]  # P x S x 6, raw prices
                adj = prices.to_adjusted[decision_idx[k]]
                stop[:] = np.where(holding, lv[:, :, STOP] * adj, np.nan)
                trail[:] = np.where(holding, lv[:, :, TRAIL], 0.0)
                tier_lv[:, :, 0] = lv[:, :, TIER1] * adj
                tier_lv[:, :, 1] = lv[:, :, TIER2] * adj
                tier_sz[:, :, 0] = lv[:, :, TIER1_SIZE]
                tier_sz[:, :, 1] = lv[:, :, TIER2_SIZE]
            intraday = bool(has_open.any())  # after an open fill, the rest of the bar counts
        else:
            intraday = True
        if levels is not None and intraday and (units > 0).any():
            hi, lo, o = prices.high[t], prices.low[t], prices.open[t]
            live = (units > 1e-12) & np.isfinite(prices.close[t])
            if k is not None:  # filled at the open today: the open itself is not a gap
                o = np.full(n_s, np.nan)
            # Stops first (the worse order inside a bar).
            level = np.where(np.isnan(stop), np.nan, np.fmax(stop, peak * (1.0 - trail)))
            gap = live & np.isfinite(o) & (o <= level)
            hit = live & ~gap & (lo <= level)
            out = gap | hit
            if out.any():
                px = np.where(gap, o, np.where(hit, level, 0.0))
                if not prices.has_range:
                    px = np.where(out, close, 0.0)
                n_stops[:] += out.sum(axis=1)
                sell(out, units.copy(), np.broadcast_to(px, units.shape), row)
                stop[out] = np.nan
                tier_lv[out] = np.nan
            live = (units > 1e-12) & np.isfinite(prices.close[t])
            for j in (0, 1):
                lvl = tier_lv[:, :, j]
                reach = live & np.isfinite(lvl) & (hi >= lvl)
                if reach.any():
                    gap_up = np.isfinite(o) & (o >= lvl)
                    px = np.where(gap_up, o, lvl) if prices.has_range else close
                    qty = np.minimum(entry_units * tier_sz[:, :, j], units)
                    n_tiers[:] += reach.sum(axis=1)
                    sell(reach, qty, np.where(reach, px, 0.0), row)
                    tier_lv[:, :, j] = np.where(reach, np.nan, lvl)
            peak[:] = np.where(units > 1e-12, np.fmax(peak, hi), 0.0)
        invested = (units * close).sum(axis=1)
        equity[row] = cash + invested
        with np.errstate(invalid="ignore", divide="ignore"):
            exposure[row] = np.where(equity[row] > 0, invested / equity[row], 0.0)
        if progress is not None and row % 256 == 255:
            progress(256)
    # Positions still open at the end close at the last close, for the trade count only.
    last = close_ff[end]
    flow[:] += np.where(units > 1e-12, units * last, 0.0)
    units_end = units.copy()
    units[:] = 0.0
    _close_trips(n_t - 1)
    units[:] = units_end
    return SimResult(
        equity, exposure, traded, paid, trades, wins, gross_p, gross_l, held, n_stops, n_tiers,
        at_open, at_close,
    )  # fmt: skip
