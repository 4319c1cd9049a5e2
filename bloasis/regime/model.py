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

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bloasis.config import SettingsError, universe_tag
from bloasis.regime.hmm import HmmConfig, filtered_high_vol
from bloasis.regime.types import RegimeResult

REGIME_CODES = ("crisis", "bear", "bull", "sideways", "recovery")
_CRISIS, _BEAR, _BULL, _SIDEWAYS, _RECOVERY = range(5)


class RegimeParams(BaseSettings):
    """Thresholds of the model, settable as `BLOASIS_REGIME_<NAME>` environment variables.

    Defaults were chosen by measurement on the embedded S&P 500 data 1990-2022 (the backfill's
    validation report); SPEC §2's "start from" values are kept where they measured well
    (crisis above volatility 30, risk levels). Every run records them, and a non-default set
    gets its own model version (see `model_version_for`), so results never mix.
    """

    model_config = SettingsConfigDict(env_prefix="BLOASIS_REGIME_", frozen=True, extra="ignore")

    sma_window: int = Field(default=200, ge=20, le=400)
    sma_min_periods: int = Field(default=100, ge=20, le=400)  # expanding average until 200 sessions
    slope_lookback: int = Field(default=20, ge=1, le=120)
    trend_band: float = Field(
        default=0.02, ge=0, le=0.2
    )  # |close/SMA - 1| below this: trend "flat"
    peak_window: int = Field(
        default=252, ge=20, le=2520
    )  # drawdown is measured from the 1-year high
    crisis_vol: float = Field(default=30.0, gt=0)  # volatility (VIX or proxy) above this: crisis
    high_risk_vol: float = Field(default=30.0, gt=0)
    medium_risk_vol: float = Field(default=20.0, gt=0)
    bull_max_vol: float = Field(default=25.0, gt=0)  # bull needs low-moderate volatility
    bear_drawdown: float = Field(
        default=-0.10, lt=0, ge=-0.9
    )  # with price below its SMA or HMM stress
    deep_bear_drawdown: float = Field(default=-0.20, lt=0, ge=-0.9)  # bear whatever the trend
    early_bear_drawdown: float = Field(
        default=-0.07, lt=0, ge=-0.9
    )  # fast falls: with HMM certainty
    early_bear_prob: float = Field(default=0.90, ge=0.5, le=1)
    stress_prob: float = Field(default=0.50, ge=0, le=1)
    recovery_window: int = Field(
        default=126, ge=1, le=756
    )  # sessions after stress a rebound is recovery
    recovery_drawdown: float = Field(default=-0.05, lt=0, ge=-0.9)  # still this far below the high
    min_dwell: int = Field(
        default=5, ge=1, le=60
    )  # sessions a new label must hold to replace the old
    stress_dwell: int = Field(
        default=2, ge=1, le=60
    )  # ... or to enter bear/crisis (crisis: at once)
    curve_flat: float = Field(
        default=0.25, ge=0
    )  # 10Y-2Y below this (pp) is flat, below 0 inverted
    spread_tight: float = Field(default=0.80, gt=0)  # BAA-AAA (pp)
    spread_wide: float = Field(default=1.30, gt=0)
    circuit_breaker_drop: float = Field(default=-0.07, lt=0)
    vix_spike_ratio: float = Field(default=1.5, gt=1)  # volatility up 50% over 5 sessions ...
    vix_spike_min: float = Field(default=25.0, gt=0)  # ... to above this level
    hmm_min_history: int = Field(default=504, ge=100)  # returns before the first HMM fit
    hmm_refit_every: int = Field(default=252, ge=5)
    rule_weight: float = Field(default=0.6, ge=0, le=1)  # confidence = w*rule margin + (1-w)*HMM

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @property
    def hmm(self) -> HmmConfig:
        return HmmConfig(min_history=self.hmm_min_history, refit_every=self.hmm_refit_every)


def load_params() -> RegimeParams:
    """Thresholds from the environment; a bad value names its variable."""
    try:
        return RegimeParams()
    except ValidationError as exc:
        lines = [
            f"BLOASIS_REGIME_{str(e['loc'][0]).upper()}={e.get('input')!r}: {e['msg']}"
            for e in exc.errors()
        ]
        raise SettingsError("invalid regime settings:\n  " + "\n  ".join(lines)) from None


# The documented defaults, whatever the environment says (model_construct skips env reading).
DEFAULT_PARAMS = RegimeParams.model_construct()


def model_version_for(base: str, params: RegimeParams) -> str:
    """`base` for the default thresholds; `base+<hash>` for any other set, so stored results
    of different thresholds never share a (model_version, as_of) key."""
    if params.as_dict() == DEFAULT_PARAMS.as_dict():
        return base
    blob = json.dumps(params.as_dict(), sort_keys=True).encode()
    return f"{base}+{hashlib.sha256(blob).hexdigest()[:8]}"


class RegimeInputError(ValueError):
    """The data cannot give a regime for the requested date."""


@dataclass(frozen=True)
class RegimeModel:
    """The thresholds in force and the model version results are stored under."""

    params: RegimeParams
    version: str


def resolve_model(base_version: str, universe: str = "embedded") -> RegimeModel:
    """Thresholds from the environment and the version derived from them (one place, used by
    the pipeline and the server alike). Results on another universe than the embedded data
    live under their own version (`...@synthetic:500:7`), never mixed with real ones."""
    params = load_params()
    version = model_version_for(base_version, params)
    if universe == "embedded":
        return RegimeModel(params, version)
    return RegimeModel(params, f"{version}@{universe_tag(universe)}")


def _sessions_since(flag: np.ndarray) -> np.ndarray:
    """Sessions since `flag` was last true (large where never)."""
    idx = np.arange(flag.size)
    last = np.maximum.accumulate(np.where(flag, idx, -1))
    return np.where(last >= 0, idx - last, np.iinfo(np.int32).max)


def _dwell_filter(raw: np.ndarray, min_dwell: int, stress_dwell: int) -> np.ndarray:
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
        need = 1 if lab == _CRISIS else stress_dwell if lab == _BEAR else min_dwell
        if lab != cur and run_len >= need:
            cur = lab
        out[i] = cur
    return out


def classify_frame(market: pd.DataFrame, params: RegimeParams = DEFAULT_PARAMS) -> pd.DataFrame:
    """Label every row of a market frame (columns from `bloasis.marketdata.MarketData.market`).

    Returns a frame on the same index with the label, confidence, its two parts, risk level,
    data-driven trigger (or "") and every indicator. Rows before the average and the
    volatility exist are dropped.
    """
    p = params
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

    up = (gap > p.trend_band) & (slope > 0)
    down = (gap < -p.trend_band) & (slope < 0)
    raw = np.full(gap.shape, _SIDEWAYS, dtype=np.int8)
    raw[(gap > 0) & (slope > 0) & (vol <= p.bull_max_vol)] = _BULL
    bear = (
        ((dd <= p.bear_drawdown) & ((gap < 0) | (stress_p > p.stress_prob)))
        | (dd <= p.deep_bear_drawdown)
        | ((dd <= p.early_bear_drawdown) & (stress_p >= p.early_bear_prob) & (gap < 0))
    )
    raw[bear] = _BEAR
    raw[vol > p.crisis_vol] = _CRISIS
    # A rebound soon after stress, above the average but not yet clear of it, is recovery.
    stressed = (raw == _CRISIS) | (raw == _BEAR)
    since = _sessions_since(stressed)
    rebound = (gap > 0) & (since <= p.recovery_window) & ~stressed
    raw[rebound & ((dd < p.recovery_drawdown) | (slope <= 0) | (raw == _SIDEWAYS))] = _RECOVERY
    labels = _dwell_filter(raw, p.min_dwell, p.stress_dwell)

    rule_conf = _rule_confidence(labels, vol, gap, dd, p)
    agree = np.select(
        [(labels == _CRISIS) | (labels == _BEAR), labels == _RECOVERY],
        [prob, 1.0 - np.abs(prob - 0.5)],
        1.0 - prob,
    )
    conf = np.where(
        np.isnan(prob), rule_conf, p.rule_weight * rule_conf + (1 - p.rule_weight) * agree
    )
    risk = np.where(
        (labels == _CRISIS) | (vol > p.high_risk_vol),
        "high",
        np.where((labels == _BEAR) | (vol > p.medium_risk_vol), "medium", "low"),
    )
    ret = close.pct_change().to_numpy()[sl]
    vol_5 = np.full_like(vol, np.nan)
    vol_5[5:] = vol[:-5]
    with np.errstate(invalid="ignore", divide="ignore"):
        spike = (vol / vol_5 >= p.vix_spike_ratio) & (vol >= p.vix_spike_min)
    trigger = np.where(
        ret <= p.circuit_breaker_drop, "circuit_breaker", np.where(spike, "vix_spike", "")
    )
    curve = (market["ust10y"] - market["ust2y"]).to_numpy(dtype="float64")[sl]
    spread = market["credit_spread"].to_numpy(dtype="float64")[sl]
    return pd.DataFrame(
        {
            "regime": np.asarray(REGIME_CODES, dtype=object)[labels],
            "confidence": np.round(conf, 4),
            "rule_confidence": np.round(rule_conf, 4),
            "high_vol_prob": np.round(prob, 4),
            "risk_level": risk,
            "data_trigger": trigger,
            "vix": vol,
            "vix_is_proxy": market["vix_is_proxy"].to_numpy()[sl].astype(bool),
            "sp500_trend": np.where(up, "up", np.where(down, "down", "flat")),
            "sp500_close": close.to_numpy()[sl],
            "yield_curve": curve,
            "yield_curve_state": _states(
                curve, [0.0, p.curve_flat], ["inverted", "flat", "normal"]
            ),
            "credit_spread": spread,
            "credit_spread_state": _states(
                spread, [p.spread_tight, p.spread_wide], ["tight", "normal", "wide"]
            ),
            "drawdown": dd,
            "sma200_gap": gap,
            "sma200_slope": slope,
            "daily_return": np.nan_to_num(ret),
        },
        index=market.index[sl],
    )


def _states(x: np.ndarray, cuts: list[float], names: list[str]) -> np.ndarray:
    """Bucket by ascending cut points; NaN is "unknown"."""
    out = np.asarray(names, dtype=object)[np.searchsorted(cuts, np.nan_to_num(x), side="right")]
    return np.where(np.isnan(x), "unknown", out)


def _rule_confidence(
    labels: np.ndarray, vol: np.ndarray, gap: np.ndarray, dd: np.ndarray, p: RegimeParams
) -> np.ndarray:
    """Rule margin mapped to [0.5, 1]: how far the deciding indicator is past its threshold."""
    m = np.select(
        [labels == _CRISIS, labels == _BEAR, labels == _BULL, labels == _RECOVERY],
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
                "high_vol_prob",
                "rule_confidence",
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
