"""Scoring regime labels against an independent ex-post dating of the index (issue 13).

The truth: a bear market is a fall of at least 20% from a peak to the lowest close before that
peak is regained (`date_bear_markets`); its sessions run from the day after the peak through the
trough, every other session is bull. A model's labels map crisis/bear -> bear, and bull, recovery
and sideways -> bull.

The trading yardstick: a stock/cash rule that decides at the close of session t, trades at the
close of t+1 (so the position earns from t+2), pays `cost_bp` per switch, and earns nothing in
cash (the embedded data has no bill rate; buy and hold is scored the same way, so the two
Sharpe ratios compare like with like).

Everything here is a pure function of the closes and the labels: no fitting, no randomness
except the bootstrap, which has a fixed seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd

STRESS: Final[tuple[str, ...]] = ("bear", "crisis")
SESSIONS_PER_YEAR: Final[float] = 252.0


@dataclass(frozen=True)
class BearMarket:
    peak: date
    trough: date
    minus10: date  # the first close at least 10% below the peak
    peak_close: float
    trough_close: float

    @property
    def depth(self) -> float:
        return self.trough_close / self.peak_close - 1.0


def date_bear_markets(close: pd.Series, threshold: float = 0.20) -> list[BearMarket]:
    """Peak -> trough falls of at least `threshold`, the trough being the lowest close before the
    peak is regained (an episode still under water at the end of the data ends at its lowest
    close so far)."""
    if not 0.10 <= threshold < 1:
        # Below 10% an episode could end before its -10% point, which every lag is measured from.
        raise ValueError(f"threshold must be in [0.10, 1), got {threshold}")
    c = close.dropna().astype("float64")
    values = c.to_numpy()
    if values.size == 0:
        return []
    if (values <= 0).any():
        raise ValueError("closes must be positive")
    # An episode starts at a running high and lasts until a close reaches that high again.
    is_high = values >= np.maximum.accumulate(values)
    peak_pos = np.maximum.accumulate(np.where(is_high, np.arange(values.size), 0))
    out: list[BearMarket] = []
    for p in np.unique(peak_pos):
        seg = np.flatnonzero(peak_pos == p)
        if seg.size < 2:
            continue
        low = int(seg[np.argmin(values[seg])])
        # "At least 20%": a fall of exactly the threshold counts, whatever the float rounding
        # of the ratio (80/100 - 1 is -0.19999999999999996).
        if values[low] > values[p] * (1.0 - threshold) * (1.0 + 1e-12):
            continue
        below = seg[values[seg] <= values[p] * 0.9]
        out.append(
            BearMarket(
                peak=c.index[p].date(),
                trough=c.index[low].date(),
                minus10=c.index[int(below[0])].date(),
                peak_close=float(values[p]),
                trough_close=float(values[low]),
            )
        )
    return out


def expost_bear(index: pd.DatetimeIndex, markets: list[BearMarket]) -> pd.Series:
    """True on the sessions of `index` after a peak through its trough."""
    out = pd.Series(False, index=index)
    for m in markets:
        out.loc[(index > pd.Timestamp(m.peak)) & (index <= pd.Timestamp(m.trough))] = True
    return out


def as_bear(labels: pd.Series) -> pd.Series:
    """Bear flags from labels: booleans pass through (nullable ones too, a missing flag as
    bull), regime names map crisis/bear -> True."""
    if labels.dtype == bool:
        return labels
    if pd.api.types.is_bool_dtype(labels.dtype):  # pandas' nullable "boolean"
        return labels.fillna(False).astype(bool)
    return labels.isin(STRESS)


def stock_cash_returns(close: pd.Series, invested: pd.Series, cost_bp: float = 10.0) -> pd.Series:
    """Daily returns of the rule: decide at t's close, trade at t+1's close, earn from t+2."""
    r = close.astype("float64").pct_change().fillna(0.0)
    sig = invested.reindex(close.index).ffill().fillna(False).astype(float)
    held = sig.shift(1).fillna(0.0)  # the position held from this close to the next
    out = held.shift(1).fillna(0.0) * r
    traded = held.ne(held.shift(1).fillna(held.iloc[0]))
    return out - traded.astype(float) * cost_bp / 1e4


def sharpe(r: pd.Series | np.ndarray) -> float:
    x = np.asarray(r, dtype="float64")
    return float(_sharpe_rows(x[None, :])[0]) if x.size > 1 else 0.0


def _sharpe_rows(x: np.ndarray) -> np.ndarray:
    """Sharpe of each row. A constant row has no ratio (0): its computed stdev is rounding
    noise (1e-19), not 0, so the test is relative to the row's scale."""
    mean = x.mean(axis=1)
    sd = x.std(axis=1, ddof=1)
    scale = np.maximum(1.0, np.abs(x).max(axis=1))
    ok = np.isfinite(sd) & (sd > 1e-12 * scale)
    out = np.zeros_like(mean)
    np.divide(mean, sd, out=out, where=ok)
    return out * np.sqrt(SESSIONS_PER_YEAR)


def max_drawdown(r: pd.Series) -> float:
    """From an equity of 1 before the first return (a loss on day one is a drawdown too)."""
    eq = np.cumprod(np.r_[1.0, 1.0 + np.asarray(r, dtype="float64")])
    return float((eq / np.maximum.accumulate(eq) - 1.0).min())


def cagr(r: pd.Series) -> float:
    years = len(r) / SESSIONS_PER_YEAR
    growth = float(np.prod(1.0 + r.to_numpy(dtype="float64")))
    return growth ** (1.0 / years) - 1.0 if years > 0 else 0.0


def bootstrap_sharpe_diff(
    a: pd.Series,
    b: pd.Series,
    *,
    block: int = 63,
    samples: int = 2000,
    level: float = 0.90,
    seed: int = 13,
) -> tuple[float, float]:
    """Moving-block bootstrap interval of sharpe(a) - sharpe(b), the same blocks drawn for both
    series (they share the market's days, so their difference is resampled jointly)."""
    x = np.column_stack([np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")])
    n = x.shape[0]
    if n < 2 * block:
        raise ValueError(f"need at least {2 * block} sessions for the bootstrap, got {n}")
    rng = np.random.default_rng(seed)
    k = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(samples, k))
    idx = (starts[:, :, None] + np.arange(block)).reshape(samples, -1)[:, :n]
    s = x[idx]  # samples x n x 2
    diff = _sharpe_rows(s[:, :, 0]) - _sharpe_rows(s[:, :, 1])
    lo, hi = np.quantile(diff, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _median(xs: list[int]) -> float | None:
    return float(np.median(xs)) if xs else None


@dataclass(frozen=True)
class EpisodeLags:
    peak: str
    trough: str
    onset_from_peak: int | None  # sessions from the peak to the first bear label; None: missed
    onset_from_minus10: int | None  # ... from the -10% point (negative: called before it)
    exit_after_trough: int  # sessions from the trough to the first bull label ...
    exit_censored: bool  # ... or to the end of the labels, when none came (a lower bound)


def episode_lags(bear: pd.Series, markets: list[BearMarket]) -> list[EpisodeLags]:
    """Per bear market inside the labels' span: how late the model entered and left."""
    idx = bear.index
    flags = bear.to_numpy()
    out = []
    for m in markets:
        pk, tr, m10 = (
            int(idx.searchsorted(pd.Timestamp(d))) for d in (m.peak, m.trough, m.minus10)
        )
        if pk >= len(idx) or idx[pk].date() != m.peak or tr >= len(idx):
            continue  # the episode is not (wholly) inside the scored span
        hits = np.flatnonzero(flags[pk + 1 : tr + 1])
        onset = int(hits[0]) + 1 if hits.size else None
        bull_after = np.flatnonzero(~flags[tr:])
        out.append(
            EpisodeLags(
                peak=m.peak.isoformat(),
                trough=m.trough.isoformat(),
                onset_from_peak=onset,
                onset_from_minus10=None if onset is None else pk + onset - m10,
                exit_after_trough=int(bull_after[0]) if bull_after.size else len(idx) - 1 - tr,
                exit_censored=not bull_after.size,
            )
        )
    return out


def switches_per_year(bear: pd.Series) -> float:
    b = bear.to_numpy()
    return float((b[1:] != b[:-1]).sum() / (len(b) / SESSIONS_PER_YEAR)) if len(b) > 1 else 0.0


def recovery_hit_rates(labels: pd.Series, close: pd.Series) -> dict[str, Any]:
    """What `recovery` means, measured: the share of recovery sessions after which the index is
    higher 63 and 126 sessions later, beside the same share over all sessions (the base rate)."""
    out: dict[str, Any] = {"sessions": int((labels == "recovery").sum())}
    full = close.astype("float64")
    for h in (63, 126):
        ahead = (full.shift(-h) / full - 1.0).reindex(labels.index)
        known = ahead.notna()
        rec = known & (labels == "recovery")
        out[f"higher_after_{h}"] = round(float((ahead[rec] > 0).mean()), 4) if rec.any() else None
        out[f"base_rate_{h}"] = round(float((ahead[known] > 0).mean()), 4) if known.any() else None
    return out


def score(
    labels: pd.Series,
    close: pd.Series,
    markets: list[BearMarket],
    *,
    cost_bp: float = 10.0,
    bootstrap: bool = True,
) -> dict[str, Any]:
    """Every figure of the comparison for one model over the span of `labels` (whose index must be
    sessions of `close`). `labels` are regime names or bear flags."""
    bear = as_bear(labels).astype(bool)
    span = pd.DatetimeIndex(bear.index)
    truth = expost_bear(span, markets)
    t, p = truth.to_numpy(), bear.to_numpy()
    bear_recall = float((p & t).sum() / t.sum()) if t.any() else None
    bull_recall = float((~p & ~t).sum() / (~t).sum()) if (~t).any() else None
    bal = (
        (bear_recall + bull_recall) / 2
        if bear_recall is not None and bull_recall is not None
        else None
    )
    c = close.loc[span[0] : span[-1]]
    strat = stock_cash_returns(c, ~bear)
    hold = c.astype("float64").pct_change().fillna(0.0)
    lags = episode_lags(bear, markets)
    out: dict[str, Any] = {
        "start": span[0].date().isoformat(),
        "end": span[-1].date().isoformat(),
        "sessions": len(span),
        "balanced_accuracy": _r(bal),
        "bear_recall": _r(bear_recall),
        "bull_recall": _r(bull_recall),
        "median_onset_lag_from_peak": _median(
            [x.onset_from_peak for x in lags if x.onset_from_peak is not None]
        ),
        "median_onset_lag_from_minus10": _median(
            [x.onset_from_minus10 for x in lags if x.onset_from_minus10 is not None]
        ),
        # An episode still bear at the end of the data counts with its lag so far (a lower
        # bound): leaving it out would reward a model that never leaves.
        "median_exit_lag_after_trough": _median([x.exit_after_trough for x in lags]),
        "median_exit_lag_completed": _median(
            [x.exit_after_trough for x in lags if not x.exit_censored]
        ),
        "episodes_missed": sum(1 for x in lags if x.onset_from_peak is None),
        "episodes": [asdict(x) for x in lags],
        "sharpe": _r(sharpe(strat)),
        "max_drawdown": _r(max_drawdown(strat)),
        "cagr": _r(cagr(strat)),
        "switches_per_year": _r(switches_per_year(bear)),
        "share_bear": _r(float(p.mean())),
    }
    if bootstrap:
        lo, hi = bootstrap_sharpe_diff(strat, hold)
        out["sharpe_minus_buy_hold"] = _r(sharpe(strat) - sharpe(hold))
        out["sharpe_diff_90ci"] = [_r(lo), _r(hi)]
    if labels.dtype != bool:
        out["label_distribution"] = {
            str(k): round(float(v), 4)
            for k, v in labels.value_counts(normalize=True).sort_index().items()
        }
        out["recovery"] = recovery_hit_rates(labels, close)
    return out


def buy_and_hold(close: pd.Series) -> dict[str, Any]:
    r = close.astype("float64").pct_change().fillna(0.0)
    return {
        "start": close.index[0].date().isoformat(),
        "end": close.index[-1].date().isoformat(),
        "sessions": len(close),
        "sharpe": _r(sharpe(r)),
        "max_drawdown": _r(max_drawdown(r)),
        "cagr": _r(cagr(r)),
        "switches_per_year": 0.0,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
