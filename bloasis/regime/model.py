"""Explainable rule-based regime classifier, vectorised over a whole history.

Every indicator on row D uses only rows <= D (rolling windows, running maxima, causal dwell
filter), so classifying the full history and classifying data truncated at D agree on D: the
backfill and a single as-of run are the same computation.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from bloasis.regime.types import RegimeResult

REGIME_CODES = ("crisis", "bear", "bull", "sideways", "recovery")
_CRISIS, _BEAR, _BULL, _SIDEWAYS, _RECOVERY = range(5)


@dataclass(frozen=True)
class RegimeParams:
    """Thresholds of the rule layer (SPEC §2 "start from" values); recorded with each run."""

    sma_window: int = 200
    slope_lookback: int = 20
    trend_band: float = 0.02  # |close/SMA200 - 1| below this is "flat"
    crisis_vol: float = 30.0  # volatility (VIX or proxy) above this -> crisis
    high_risk_vol: float = 30.0
    medium_risk_vol: float = 20.0
    bull_max_vol: float = 25.0  # bull needs low-moderate volatility
    bear_drawdown: float = -0.10  # drawdown from peak that, with a down trend, means bear
    deep_bear_drawdown: float = -0.20  # below this it is bear whatever the trend
    recovery_window: int = 126  # sessions after crisis/bear during which a rebound is "recovery"
    recovery_drawdown: float = -0.05  # still this far below the peak -> not yet bull
    min_dwell: int = 5  # sessions a new label must hold before it replaces the old (not for crisis)
    curve_flat: float = 0.25  # 10Y-2Y below this (pp) is flat, below 0 inverted
    spread_tight: float = 0.80  # BAA-AAA (pp)
    spread_wide: float = 1.30
    circuit_breaker_drop: float = -0.07
    vix_spike_ratio: float = 1.5  # volatility up 50% over 5 sessions ...
    vix_spike_min: float = 25.0  # ... to above this level

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_PARAMS = RegimeParams()


def _raw_labels(
    vol: np.ndarray,
    gap: np.ndarray,
    slope: np.ndarray,
    dd: np.ndarray,
    p: RegimeParams,
) -> np.ndarray:
    up = (gap > p.trend_band) & (slope > 0)
    down = (gap < -p.trend_band) & (slope < 0)
    crisis = vol > p.crisis_vol
    bear = (
        ((dd <= p.bear_drawdown) & (gap < 0)) | (dd <= p.deep_bear_drawdown) | down & (dd < -0.05)
    )
    bull = up & (vol <= p.bull_max_vol)
    labels = np.full(vol.shape, _SIDEWAYS, dtype=np.int8)
    labels[bull] = _BULL
    labels[bear] = _BEAR
    labels[crisis] = _CRISIS
    # A rebound soon after crisis/bear, still below the old peak, is recovery rather than bull.
    stressed = (labels == _CRISIS) | (labels == _BEAR)
    since = _sessions_since(stressed)
    rebound = (gap > 0) & (since <= p.recovery_window) & ~stressed
    recovering = rebound & ((dd < p.recovery_drawdown) | (slope <= 0) | (labels == _SIDEWAYS))
    labels[recovering] = _RECOVERY
    return labels


def _sessions_since(flag: np.ndarray) -> np.ndarray:
    """Sessions since `flag` was last true (large where never)."""
    idx = np.arange(flag.size)
    last = np.where(flag, idx, -1)
    last = np.maximum.accumulate(last)
    return np.where(last >= 0, idx - last, np.iinfo(np.int32).max)


def _dwell_filter(raw: np.ndarray, min_dwell: int) -> np.ndarray:
    """Causal hysteresis: switch only after a new label held `min_dwell` sessions; crisis at once.

    A sequential scan, but over small ints (8k sessions: ~2 ms), so no vectorisation needed.
    """
    out = raw.copy()
    if raw.size == 0:
        return out
    cur = int(raw[0])
    run_label, run_len = cur, 0
    for i, lab in enumerate(raw.tolist()):
        if lab == run_label:
            run_len += 1
        else:
            run_label, run_len = lab, 1
        if lab != cur and (lab == _CRISIS or run_len >= min_dwell):
            cur = lab
        out[i] = cur
    return out


def classify_frame(market: pd.DataFrame, params: RegimeParams = DEFAULT_PARAMS) -> pd.DataFrame:
    """Label every row of a market frame (columns from `bloasis.marketdata.MarketData.market`).

    Returns a frame on the same index with the label, confidence, risk level, data-driven trigger
    (or "") and every indicator. Rows before the 200-day average exists are dropped.
    """
    p = params
    close = market["index_close"].astype("float64")
    sma = close.rolling(p.sma_window, min_periods=p.sma_window).mean()
    gap = close / sma - 1.0
    slope = sma / sma.shift(p.slope_lookback) - 1.0
    dd = close / close.cummax() - 1.0
    ret = close.pct_change()
    vol = market["vix"].astype("float64")
    curve = (market["ust10y"] - market["ust2y"]).astype("float64")
    spread = market["credit_spread"].astype("float64")

    valid = (sma.notna() & slope.notna() & vol.notna()).to_numpy()
    first = int(np.argmax(valid)) if valid.any() else len(valid)
    sl = slice(first, None)
    v, g, s, d = (x.to_numpy()[sl] for x in (vol, gap, slope, dd))
    v = pd.Series(v).ffill().to_numpy()  # a missing VIX print keeps the last known level
    labels = _dwell_filter(_raw_labels(v, g, s, d, p), p.min_dwell)

    conf = _confidence(labels, v, g, s, d, p)
    risk = np.where(
        (labels == _CRISIS) | (v > p.high_risk_vol),
        "high",
        np.where((labels == _BEAR) | (v > p.medium_risk_vol), "medium", "low"),
    )
    r = ret.to_numpy()[sl]
    vol_5 = pd.Series(v).shift(5).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        spike = (v / vol_5 >= p.vix_spike_ratio) & (v >= p.vix_spike_min)
    trigger = np.where(
        r <= p.circuit_breaker_drop, "circuit_breaker", np.where(spike, "vix_spike", "")
    )
    trend = np.where(
        (g > p.trend_band) & (s > 0), "up", np.where((g < -p.trend_band) & (s < 0), "down", "flat")
    )
    c = curve.to_numpy()[sl]
    sp = spread.to_numpy()[sl]
    curve_state = np.where(
        np.isnan(c),
        "unknown",
        np.where(c < 0, "inverted", np.where(c < p.curve_flat, "flat", "normal")),
    )
    spread_state = np.where(
        np.isnan(sp),
        "unknown",
        np.where(sp < p.spread_tight, "tight", np.where(sp > p.spread_wide, "wide", "normal")),
    )
    is_proxy = market["vix_is_proxy"].to_numpy()[sl].astype(bool)
    return pd.DataFrame(
        {
            "regime": np.asarray(REGIME_CODES, dtype=object)[labels],
            "confidence": conf,
            "risk_level": risk,
            "data_trigger": trigger,
            "vix": v,
            "vix_is_proxy": is_proxy,
            "sp500_trend": trend,
            "sp500_close": close.to_numpy()[sl],
            "yield_curve": c,
            "yield_curve_state": curve_state,
            "credit_spread": sp,
            "credit_spread_state": spread_state,
            "drawdown": d,
            "sma200_gap": g,
            "sma200_slope": s,
            "daily_return": np.nan_to_num(r),
        },
        index=market.index[sl],
    )


def _confidence(
    labels: np.ndarray,
    vol: np.ndarray,
    gap: np.ndarray,
    slope: np.ndarray,
    dd: np.ndarray,
    p: RegimeParams,
) -> np.ndarray:
    """Rule margin mapped to [0.5, 1]: how far the deciding indicator is past its threshold."""
    m = np.zeros(labels.shape)
    m = np.where(labels == _CRISIS, (vol - p.crisis_vol) / 20.0, m)
    m = np.where(labels == _BEAR, np.maximum(-dd + p.bear_drawdown, -gap) / 0.15, m)
    m = np.where(
        labels == _BULL,
        np.minimum(gap - p.trend_band, (p.bull_max_vol - vol) / 100.0) / 0.05,
        m,
    )
    m = np.where(labels == _SIDEWAYS, (p.trend_band * 2 - np.abs(gap)) / (p.trend_band * 2), m)
    m = np.where(labels == _RECOVERY, np.minimum(gap, -dd) / 0.05, m)
    return np.round(0.5 + 0.5 * np.clip(np.nan_to_num(m), 0.0, 1.0), 4)


def _fmt_pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def reasoning(regime: str, confidence: float, ind: dict[str, Any]) -> str:
    """A deterministic sentence naming the drivers and their values."""
    vix_name = "realised-volatility VIX proxy" if ind["vix_is_proxy"] else "VIX"
    parts = [
        f"S&P 500 {ind['sp500_close']:,.2f} is {_fmt_pct(ind['sma200_gap'])} vs its 200-day"
        f" average (average slope {_fmt_pct(ind['sma200_slope'])} over 20 sessions,"
        f" trend {ind['sp500_trend']})",
        f"{_fmt_pct(ind['drawdown'])} from its peak",
        f"{vix_name} {ind['vix']:.1f}",
    ]
    if ind["yield_curve"] is not None:
        parts.append(f"10Y-2Y curve {ind['yield_curve']:+.2f} pp ({ind['yield_curve_state']})")
    else:
        parts.append("yield curve unavailable")
    if ind["credit_spread"] is not None:
        parts.append(f"BAA-AAA spread {ind['credit_spread']:.2f} pp ({ind['credit_spread_state']})")
    else:
        parts.append("credit spread unavailable")
    return f"{regime.capitalize()} (rule confidence {confidence:.2f}): " + "; ".join(parts) + "."


def _clean(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if np.isnan(v) else round(v, 6)
    return v


def results_from_frame(
    frame: pd.DataFrame,
    *,
    trigger: str,
    run_id: uuid.UUID,
    model_version: str,
    computed_at: datetime,
) -> list[RegimeResult]:
    """Turn classified rows into results; a data-driven trigger overrides the run's trigger."""
    records = frame.to_dict("records")
    out = []
    for as_of, row in zip(frame.index, records, strict=True):
        ind = {
            k: _clean(row[k])
            for k in (
                "vix",
                "vix_is_proxy",
                "sp500_trend",
                "sp500_close",
                "yield_curve",
                "yield_curve_state",
                "credit_spread",
                "credit_spread_state",
                "drawdown",
                "sma200_gap",
                "sma200_slope",
                "daily_return",
            )
        }
        conf = float(row["confidence"])
        out.append(
            RegimeResult(
                as_of=pd.Timestamp(as_of).date(),
                regime=str(row["regime"]),
                confidence=conf,
                risk_level=str(row["risk_level"]),
                trigger=str(row["data_trigger"]) or trigger,
                reasoning=reasoning(str(row["regime"]), conf, ind),
                indicators=ind,
                model_version=model_version,
                run_id=run_id,
                computed_at=computed_at,
            )
        )
    return out


def classify_as_of(
    market: pd.DataFrame,
    as_of: date,
    *,
    trigger: str,
    run_id: uuid.UUID,
    model_version: str,
    computed_at: datetime,
    params: RegimeParams = DEFAULT_PARAMS,
) -> RegimeResult:
    """The regime for `as_of` from data published on or before it (later rows are cut off)."""
    cut = market.loc[: pd.Timestamp(as_of)]
    if cut.empty or cut.index[-1] != pd.Timestamp(as_of):
        last = cut.index[-1].date() if not cut.empty else None
        raise ValueError(
            f"as_of {as_of} is not a session in the data (last session before: {last})"
        )
    frame = classify_frame(cut, params)
    if frame.empty:
        raise ValueError(f"as_of {as_of}: fewer than {params.sma_window} sessions of index history")
    (result,) = results_from_frame(
        frame.iloc[-1:],
        trigger=trigger,
        run_id=run_id,
        model_version=model_version,
        computed_at=computed_at,
    )
    return result
