"""Performance measures of daily equity curves, vectorised over portfolios (columns).

The return measures follow empyrical's definitions (annual factor 252, sample standard
deviation; Sharpe and Sortino on returns in excess of the cash rate the backtest credited) and
are cross-checked against empyrical-reloaded in the tests; trade measures come from the
simulation's round trips.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ANNUAL = 252

RETURN_MEASURES = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
)


def _nan_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


def returns_of(equity: np.ndarray) -> np.ndarray:
    """Session returns (T-1 x P) of equity curves (T x P)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return equity[1:] / equity[:-1] - 1.0


def return_measures(returns: np.ndarray, rf: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Measures of session returns (n x P); `rf` the cash return of each session (n)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    n = r.shape[0]
    excess = r if rf is None else r - np.asarray(rf, dtype=np.float64)[:, None]
    growth = np.cumprod(1.0 + r, axis=0)
    total = growth[-1] - 1.0 if n else np.zeros(r.shape[1])
    years = n / ANNUAL
    with np.errstate(invalid="ignore", divide="ignore"):
        cagr = np.where(growth[-1] > 0, growth[-1] ** (1.0 / years) - 1.0, -1.0) if n else total
    sd = r.std(axis=0, ddof=1) if n > 1 else np.full(r.shape[1], np.nan)
    ex_sd = excess.std(axis=0, ddof=1) if n > 1 else sd
    sharpe = _nan_div(excess.mean(axis=0), ex_sd) * np.sqrt(ANNUAL)
    downside = np.sqrt((np.minimum(excess, 0.0) ** 2).mean(axis=0)) * np.sqrt(ANNUAL)
    sortino = _nan_div(excess.mean(axis=0) * ANNUAL, downside)
    peak = np.maximum.accumulate(np.vstack([np.ones(r.shape[1]), growth]), axis=0)
    mdd = (np.vstack([np.ones(r.shape[1]), growth]) / peak - 1.0).min(axis=0)
    calmar = _nan_div(cagr, np.abs(mdd))
    return {
        "total_return": total,
        "cagr": cagr,
        "volatility": sd * np.sqrt(ANNUAL),
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": mdd,
        "calmar": calmar,
    }


def drawdowns(equity: np.ndarray) -> np.ndarray:
    """Drawdown from the running peak, per session (T x P, <= 0)."""
    return equity / np.maximum.accumulate(equity, axis=0) - 1.0


def column(measures: dict[str, np.ndarray], j: int) -> dict[str, Any]:
    """One portfolio's measures as plain floats (None for NaN: JSON has no NaN)."""
    out: dict[str, Any] = {}
    for k, v in measures.items():
        x = v[j].item() if hasattr(v[j], "item") else v[j]
        out[k] = None if isinstance(x, float) and not np.isfinite(x) else x
    return out
