"""Factor scores, vectorised over a (sessions x symbols) price matrix.

Raw factors at the last row (the as-of session):
- momentum: 12-1 month return, close[t-21] / close[t-252] - 1 (skips the last month, whose
  short-term reversal would otherwise pollute the trend signal);
- trend: mean of close / SMA200 - 1 and close / SMA50 - 1 (needs 200 sessions);
- volatility (low volatility): minus the annualised 60-day realised volatility of log returns;
- liquidity: average daily dollar volume over the last 60 sessions (at least 20 with volume),
  only when the data has volume;
- value, quality: taken from an optional fundamentals frame (index symbol, columns `value`
  and/or `quality`, higher is better); the embedded data has none;
- sentiment: no source, never present.

A factor needing more history than a symbol has is NaN for that symbol; the final score
renormalises over the factors a symbol has (see `bloasis.strategy.profiles.combine`).

Scores are cross-sectional percentiles, 0-100, **among the symbols passed in** (the engine passes
the sector analysis's candidates): a score says how a symbol compares with the alternatives it
competes with for a place in the strategy, not with the whole market.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

MOMENTUM_LOOKBACK = 252
MOMENTUM_SKIP = 21
SMA_LONG, SMA_SHORT = 200, 50
VOL_WINDOW = 60
LIQUIDITY_WINDOW, LIQUIDITY_MIN_OBS = 60, 20
# Rows any factor can look at: momentum reads close[t-252].
FACTOR_HISTORY = MOMENTUM_LOOKBACK + 1
TRADING_DAYS = 252


@dataclass(frozen=True)
class FactorTable:
    """Per symbol (in the input's order). `raw` and `scores` hold the factors that are present
    (at least one symbol has a value); `vol`, `gap50`, `gap200` are inputs to sizing and to the
    trading signals."""

    symbols: tuple[str, ...]
    raw: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]  # 0-100, NaN where the symbol lacks the factor
    vol: np.ndarray  # annualised 60-day realised volatility
    gap50: np.ndarray  # close / SMA50 - 1
    gap200: np.ndarray  # close / SMA200 - 1


def percentile_scores(x: np.ndarray) -> np.ndarray:
    """Cross-sectional percentile, 0 (worst) to 100 (best), ties averaged; NaN stays NaN, a lone
    value scores 50."""
    out = np.full(x.shape, np.nan)
    ok = ~np.isnan(x)
    n = int(ok.sum())
    if n == 1:
        out[ok] = 50.0
    elif n > 1:
        out[ok] = (rankdata(x[ok]) - 1.0) / (n - 1) * 100.0
    return out


def _tail_mean(a: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` rows; NaN unless all of them are known."""
    if a.shape[0] < window:
        return np.full(a.shape[1], np.nan)
    return np.asarray(a[-window:].mean(axis=0))


def realised_vol(closes: np.ndarray, window: int = VOL_WINDOW) -> np.ndarray:
    """Annualised standard deviation of the last `window` daily log returns (NaN without
    `window` + 1 closes)."""
    if closes.shape[0] <= window:
        return np.full(closes.shape[1], np.nan)
    r = np.diff(np.log(closes[-window - 1 :]), axis=0)
    return np.asarray(r.std(axis=0, ddof=1) * np.sqrt(TRADING_DAYS))


def compute_factors(
    closes: np.ndarray,
    symbols: tuple[str, ...],
    *,
    dollar_volume: np.ndarray | None = None,
    fundamentals: pd.DataFrame | None = None,
) -> FactorTable:
    """Factors at the last row of `closes` (adjusted closes, sessions x symbols, NaN before a
    symbol lists). `dollar_volume` (same shape, close x volume) enables liquidity."""
    c = np.asarray(closes, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != len(symbols):
        raise ValueError(f"closes must be sessions x {len(symbols)} symbols, got {c.shape}")
    last = c[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        if c.shape[0] >= FACTOR_HISTORY:
            mom = c[-1 - MOMENTUM_SKIP] / c[-FACTOR_HISTORY] - 1.0
        else:
            mom = np.full(c.shape[1], np.nan)
        gap50 = last / _tail_mean(c, SMA_SHORT) - 1.0
        gap200 = last / _tail_mean(c, SMA_LONG) - 1.0
        vol = realised_vol(c)
    raw: dict[str, np.ndarray] = {
        "momentum": mom,
        "trend": 0.5 * (gap50 + gap200),
        "volatility": -vol,  # low volatility scores high
    }
    if dollar_volume is not None:
        dv = np.asarray(dollar_volume[-LIQUIDITY_WINDOW:], dtype=np.float64)
        obs = (~np.isnan(dv)).sum(axis=0)
        mean_dv = np.nansum(dv, axis=0) / np.maximum(obs, 1)
        raw["liquidity"] = np.where(obs >= LIQUIDITY_MIN_OBS, mean_dv, np.nan)
    if fundamentals is not None:
        f = fundamentals.reindex(list(symbols))
        for name in ("value", "quality"):
            if name in f.columns:
                raw[name] = f[name].to_numpy(dtype=np.float64, na_value=np.nan)
    present = {k: v for k, v in raw.items() if (~np.isnan(v)).any()}
    return FactorTable(
        symbols=symbols,
        raw=present,
        scores={k: percentile_scores(v) for k, v in present.items()},
        vol=vol,
        gap50=gap50,
        gap200=gap200,
    )
