"""What both regime models share: the label codes, the dwell filter, how confidence and the
risk level are made, and the classified frame's columns (labels, confidence, risk, the
data-driven trigger and the reported indicators). regime-v2 (`bloasis.regime.model`) and
regime-v3 (`bloasis.regime.v3`) both build on it, so neither imports the other's module."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bloasis.regime.params import AnyParams
from bloasis.regime.types import REGIMES

# Codes index `REGIMES` (crisis, bear, bull, sideways, recovery).
CRISIS, BEAR, BULL, SIDEWAYS, RECOVERY = range(len(REGIMES))
LABELS = np.asarray(REGIMES, dtype=object)


def dwell_filter(raw: np.ndarray, min_dwell: int, stress_dwell: int) -> np.ndarray:
    """Causal hysteresis against flip-flopping: a new label replaces the current one after it
    held `min_dwell` sessions; entering bear needs `stress_dwell`, crisis takes over at once.

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
        need = 1 if lab == CRISIS else stress_dwell if lab == BEAR else min_dwell
        if lab != cur and run_len >= need:
            cur = lab
        out[i] = cur
    return out


def confidence_and_risk(
    labels: np.ndarray, rule_conf: np.ndarray, prob: np.ndarray, vol: np.ndarray, p: AnyParams
) -> tuple[np.ndarray, np.ndarray]:
    """Both models' confidence (the rule margin combined with how far the HMM agrees; the rule
    margin alone before its first fit) and SPEC §2's risk level on the volatility they use."""
    agree = np.select(
        [(labels == CRISIS) | (labels == BEAR), labels == RECOVERY],
        [prob, 1.0 - np.abs(prob - 0.5)],
        1.0 - prob,
    )
    conf = np.where(
        np.isnan(prob), rule_conf, p.rule_weight * rule_conf + (1 - p.rule_weight) * agree
    )
    risk = np.where(
        (labels == CRISIS) | (vol > p.high_risk_vol),
        "high",
        np.where((labels == BEAR) | (vol > p.medium_risk_vol), "medium", "low"),
    )
    return conf, risk


def indicator_columns(
    market: pd.DataFrame,
    first: int,
    p: AnyParams,
    *,
    labels: np.ndarray,
    confidence: np.ndarray,
    rule_confidence: np.ndarray,
    prob: np.ndarray,
    risk: np.ndarray,
    drawdown: np.ndarray,
    gap: np.ndarray,
    slope: np.ndarray,
    spike_vol: np.ndarray | None = None,
) -> pd.DataFrame:
    """The classified frame both models return: labels, confidence, risk, the data-driven
    trigger and the reported indicators, on the rows of `market` from `first` (the first
    classifiable session); the other arrays start there."""
    sl = slice(first, None)
    vix_s = market["vix"].astype("float64").ffill()  # a missing print keeps the last level
    full_close = market["index_close"].astype("float64")
    ret = full_close.pct_change().to_numpy()[sl]
    close = full_close.iloc[sl]
    market = market.iloc[sl]
    vix = vix_s.to_numpy()[sl]
    # The volatility-spike trigger: on the VIX (or its proxy) for regime-v2, on the volatility
    # the model itself uses when given (regime-v3: nothing of it rests on the fitted proxy).
    vol = vix if spike_vol is None else spike_vol
    vol_5 = np.full_like(vol, np.nan)
    vol_5[5:] = vol[:-5]
    with np.errstate(invalid="ignore", divide="ignore"):
        spike = (vol / vol_5 >= p.vix_spike_ratio) & (vol >= p.vix_spike_min)
    trigger = np.where(
        ret <= p.circuit_breaker_drop, "circuit_breaker", np.where(spike, "vix_spike", "")
    )
    curve = (market["ust10y"] - market["ust2y"]).to_numpy(dtype="float64")
    spread = market["credit_spread"].to_numpy(dtype="float64")
    return pd.DataFrame(
        {
            "regime": labels,
            "confidence": np.round(confidence, 4),
            "rule_confidence": np.round(rule_confidence, 4),
            "high_vol_prob": np.round(prob, 4),
            "risk_level": risk,
            "data_trigger": trigger,
            "vix": vix,
            "vix_is_proxy": market["vix_is_proxy"].to_numpy().astype(bool),
            "sp500_trend": np.where(
                (gap > p.trend_band) & (slope > 0),
                "up",
                np.where((gap < -p.trend_band) & (slope < 0), "down", "flat"),
            ),
            "sp500_close": close.to_numpy(),
            "yield_curve": curve,
            "yield_curve_state": states(curve, [0.0, p.curve_flat], ["inverted", "flat", "normal"]),
            "credit_spread": spread,
            "credit_spread_state": states(
                spread, [p.spread_tight, p.spread_wide], ["tight", "normal", "wide"]
            ),
            "drawdown": drawdown,
            "sma200_gap": gap,
            "sma200_slope": slope,
            "daily_return": np.nan_to_num(ret),
        },
        index=market.index,
    )


def states(x: np.ndarray, cuts: list[float], names: list[str]) -> np.ndarray:
    """Bucket by ascending cut points; NaN is "unknown"."""
    out = np.asarray(names, dtype=object)[np.searchsorted(cuts, np.nan_to_num(x), side="right")]
    return np.where(np.isnan(x), "unknown", out)
