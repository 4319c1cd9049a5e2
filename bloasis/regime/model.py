"""Market regime model: an explainable rule layer plus a statistical layer, vectorised over a
whole history.

Rules: trend (close vs its 200-day average and the average's slope), drawdown from the 1-year
high, volatility (VIX or its realised-volatility proxy), with the yield curve and credit spread
reported. Statistics: the filtered probability of a 2-state Gaussian HMM's high-volatility
state (`bloasis.regime.hmm`), which lets a fast fall count as bear before the slow indicators
catch up, and which, with the rule margin, makes the confidence. A causal dwell filter stops
flip-flopping.

Every value on row D uses only rows <= D, so classifying the full history and classifying data
cut at D agree on D: the backfill and a single as-of run are the same computation.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from bloasis.config import universe_tag
from bloasis.regime.hmm import filtered_high_vol
from bloasis.regime.outputs import (
    BEAR,
    BULL,
    CRISIS,
    LABELS,
    RECOVERY,
    SIDEWAYS,
    confidence_and_risk,
    dwell_filter,
    indicator_columns,
)
from bloasis.regime.params import (
    DEFAULT_PARAMS,
    AnyParams,
    RegimeParams,
    RegimeV3Params,
    algorithm_of,
    model_version_for,
    params_for,
)
from bloasis.regime.types import RegimeResult
from bloasis.regime.v3 import classify_frame_v3, reasoning_v3

__all__ = [
    "DEFAULT_PARAMS",
    "RegimeInputError",
    "RegimeModel",
    "RegimeParams",
    "RegimeV3Params",
    "classify_as_of",
    "classify_frame",
    "resolve_model",
    "results_from_frame",
]


class RegimeInputError(ValueError):
    """The data cannot give a regime for the requested date."""


@dataclass(frozen=True)
class RegimeModel:
    """The parameters in force (their type picks the algorithm) and the model version results
    are stored under."""

    params: AnyParams
    version: str

    @property
    def algorithm(self) -> str:
        return "regime-v3" if isinstance(self.params, RegimeV3Params) else "regime-v2"


def resolve_model(
    base_version: str, universe: str = "embedded", overrides: Mapping[str, str] | None = None
) -> RegimeModel:
    """The model a version names (`regime-v2`, `regime-v3`), its parameters with the settings
    layer's `BLOASIS_REGIME_*` overrides (`Settings.regime_overrides`) and the version derived
    from them (one place, used by the pipeline and the server alike). Results on another
    universe than the embedded data live under their own version (`...@synthetic:500:7`)."""
    params = params_for(algorithm_of(base_version), overrides)
    version = model_version_for(base_version, params)
    if universe == "embedded":
        return RegimeModel(params, version)
    return RegimeModel(params, f"{version}@{universe_tag(universe)}")


def _sessions_since(flag: np.ndarray) -> np.ndarray:
    """Sessions since `flag` was last true (large where never)."""
    idx = np.arange(flag.size)
    last = np.maximum.accumulate(np.where(flag, idx, -1))
    return np.where(last >= 0, idx - last, np.iinfo(np.int32).max)


def classify_frame(market: pd.DataFrame, params: AnyParams = DEFAULT_PARAMS) -> pd.DataFrame:
    """Label every row of a market frame (columns from `bloasis.marketdata.MarketData.market`)
    with the model the parameters belong to (regime-v2 or regime-v3).

    Returns a frame on the same index with the label, confidence, its two parts, risk level,
    data-driven trigger (or "") and every indicator. Rows before the average and the
    volatility exist are dropped.
    """
    if isinstance(params, RegimeV3Params):
        return classify_frame_v3(market, params)
    return _classify_frame_v2(market, params)


def _classify_frame_v2(market: pd.DataFrame, p: RegimeParams) -> pd.DataFrame:
    close = market["index_close"].astype("float64")
    sma = close.rolling(p.sma_window, min_periods=p.sma_min_periods).mean()
    gap_s = close / sma - 1.0
    slope_s = sma / sma.shift(p.slope_lookback) - 1.0
    dd_s = close / close.rolling(p.peak_window, min_periods=1).max() - 1.0
    vol_s = market["vix"].astype("float64").ffill()  # a missing print keeps the last level
    logret = np.log(close.to_numpy())
    hv = np.r_[np.nan, filtered_high_vol(np.diff(logret), p.hmm)]

    valid = (gap_s.notna() & slope_s.notna() & vol_s.notna()).to_numpy()
    first = int(np.argmax(valid)) if valid.any() else len(valid)
    sl = slice(first, None)
    gap, slope, dd, vol = (x.to_numpy()[sl] for x in (gap_s, slope_s, dd_s, vol_s))
    prob = hv[sl]
    stress_p = np.nan_to_num(prob, nan=0.0)  # before the first fit: rules alone

    raw = np.full(gap.shape, SIDEWAYS, dtype=np.int8)
    raw[(gap > 0) & (slope > 0) & (vol <= p.bull_max_vol)] = BULL
    bear = (
        ((dd <= p.bear_drawdown) & ((gap < 0) | (stress_p > p.stress_prob)))
        | (dd <= p.deep_bear_drawdown)
        | ((dd <= p.early_bear_drawdown) & (stress_p >= p.early_bear_prob) & (gap < 0))
    )
    raw[bear] = BEAR
    raw[vol > p.crisis_vol] = CRISIS
    # A rebound soon after stress, above the average but not yet clear of it, is recovery.
    stressed = (raw == CRISIS) | (raw == BEAR)
    since = _sessions_since(stressed)
    rebound = (gap > 0) & (since <= p.recovery_window) & ~stressed
    raw[rebound & ((dd < p.recovery_drawdown) | (slope <= 0) | (raw == SIDEWAYS))] = RECOVERY
    labels = dwell_filter(raw, p.min_dwell, p.stress_dwell)

    rule_conf = _rule_confidence(labels, vol, gap, dd, p)
    conf, risk = confidence_and_risk(labels, rule_conf, prob, vol, p)
    return indicator_columns(
        market,
        first,
        p,
        labels=LABELS[labels],
        confidence=conf,
        rule_confidence=rule_conf,
        prob=prob,
        risk=risk,
        drawdown=dd,
        gap=gap,
        slope=slope,
    )


def _rule_confidence(
    labels: np.ndarray, vol: np.ndarray, gap: np.ndarray, dd: np.ndarray, p: RegimeParams
) -> np.ndarray:
    """Rule margin mapped to [0.5, 1]: how far the deciding indicator is past its threshold."""
    m = np.select(
        [labels == CRISIS, labels == BEAR, labels == BULL, labels == RECOVERY],
        [
            (vol - p.crisis_vol) / 20.0,
            np.maximum(p.bear_drawdown - dd, -gap) / 0.15,
            np.minimum(gap, (p.bull_max_vol - vol) / 100.0) / 0.05,
            np.minimum(gap, -dd) / 0.05,
        ],
        (p.trend_band * 2 - np.abs(gap)) / (p.trend_band * 2),  # sideways: near the average
    )
    return 0.5 + 0.5 * np.clip(np.nan_to_num(m), 0.0, 1.0)


def _fmt_pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def reasoning(regime: str, confidence: float, ind: dict[str, Any]) -> str:
    """A deterministic sentence naming the drivers and their values."""
    vix_name = "realised-volatility VIX proxy" if ind["vix_is_proxy"] else "VIX"
    if ind["high_vol_prob"] is None:
        how = f"rule margin {ind['rule_confidence']:.2f}; statistical layer not fitted yet"
    else:
        how = (
            f"rule margin {ind['rule_confidence']:.2f} combined with a"
            f" {ind['high_vol_prob']:.2f} filtered probability of the high-volatility state"
        )
    parts = [
        f"S&P 500 {ind['sp500_close']:,.2f} is {_fmt_pct(ind['sma200_gap'])} vs its 200-day"
        f" average (average slope {_fmt_pct(ind['sma200_slope'])} over 20 sessions,"
        f" trend {ind['sp500_trend']})",
        f"{_fmt_pct(ind['drawdown'])} from its 1-year high",
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
    return f"{regime.capitalize()}, confidence {confidence:.2f} ({how}): " + "; ".join(parts) + "."


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
    v3 = frame.attrs.get("model") == "regime-v3"
    keys = _INDICATORS + (_V3_INDICATORS if v3 else ())
    out = []
    for as_of, row in zip(frame.index, records, strict=True):
        ind = {k: _clean(row[k]) for k in keys}
        conf = float(row["confidence"])
        regime = str(row["regime"])
        text = (
            reasoning_v3(
                regime, conf, {**{str(k): v for k, v in row.items()}, **ind}, frame.attrs["params"]
            )
            if v3
            else reasoning(regime, conf, ind)
        )
        out.append(
            RegimeResult(
                as_of=pd.Timestamp(as_of).date(),
                regime=regime,
                confidence=conf,
                risk_level=str(row["risk_level"]),
                trigger=str(row["data_trigger"]) or trigger,
                reasoning=text,
                indicators=ind,
                model_version=model_version,
                run_id=run_id,
                computed_at=computed_at,
            )
        )
    return out


_INDICATORS: tuple[str, ...] = (
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
    "high_vol_prob",
    "rule_confidence",
)
# regime-v3's own (Indicators fields 15-17).
_V3_INDICATORS: tuple[str, ...] = ("decided_by", "realised_vol", "rebound")


def classify_as_of(
    market: pd.DataFrame,
    as_of: date,
    *,
    trigger: str,
    run_id: uuid.UUID,
    model_version: str,
    computed_at: datetime,
    params: AnyParams = DEFAULT_PARAMS,
) -> RegimeResult:
    """The regime for `as_of` from data published on or before it (later rows are cut off)."""
    cut = market.loc[: pd.Timestamp(as_of)]
    if cut.empty or cut.index[-1] != pd.Timestamp(as_of):
        last = cut.index[-1].date() if not cut.empty else None
        raise RegimeInputError(
            f"as_of {as_of} is not a session in the data (last session before: {last})"
        )
    frame = classify_frame(cut, params)
    if frame.empty:
        raise RegimeInputError(
            f"as_of {as_of}: fewer than {params.sma_min_periods} sessions of index history"
            " (the 200-day average cannot be formed yet)"
        )
    (result,) = results_from_frame(
        frame.iloc[-1:],
        trigger=trigger,
        run_id=run_id,
        model_version=model_version,
        computed_at=computed_at,
    )
    return result
