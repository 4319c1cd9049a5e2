"""regime-v3: the rules of regime-v2 reorganised around a bear/recovery cycle.

regime-v2 measures the drawdown from a 1-year high and calls any fall of 20% from it a bear, so
after a trough it stays bear until the old high leaves the window (May to mid-September 2009
while the index rose 50%). regime-v3 keeps a cycle instead:

- **bull cycle**: the cycle high is the highest close since the last recovery. A fall of
  `bear_drawdown` from it with the index below its 200-day average, or of
  `deep_bear_drawdown` whatever the trend, starts a bear.
- **bear**: the bear's low is the lowest close since it started. The bear ends when the index is
  `rebound` above that low *and* credit confirms: the BAA-AAA spread is at least
  `credit_narrowing` pp below its `credit_window`-session high (the credit market no longer
  pricing more stress; bear-market rallies, as in 2001, 2002 and late 2008, came with spreads
  still at their highs). Without a credit series the rebound alone decides, and the reasoning
  says so. A bear also ends when the index closes above the high it fell from: no bear market
  by the definition the model is judged against (without this rule the 1991, 1998 and 1999
  corrections stayed "bear" at new highs, 98 sessions of 1990-2006).
- **recovery**: from the end of a bear until the 200-day trend confirms (index above a rising
  average) or `recovery_max_sessions` pass. A new cycle high is counted from the recovery on.
- **crisis**: realised volatility above `crisis_vol`, whatever the cycle.
- outside these: **bull** above a rising 200-day average with moderate volatility, else
  **sideways**.

Every value on row D uses only rows <= D (the state machine runs forward once), so the full
history and data cut at D agree on D. The labels depend on closes, the credit spread and the
parameters only; the HMM's filtered probability informs the confidence, as in regime-v2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from bloasis.marketdata.sources import realised_vol
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
from bloasis.regime.params import RegimeV3Params

# What decided a label (Indicators.decided_by).
DECIDED: Final[tuple[str, ...]] = (
    "crisis_volatility",
    "drawdown_below_average",
    "deep_drawdown",
    "bear_not_recovered",
    "rebound_confirmed",
    "trend_up",
    "no_trend",
)
_D_CRISIS, _D_DD, _D_DEEP, _D_HOLD, _D_REBOUND, _D_TREND, _D_NONE = range(7)


@dataclass(frozen=True)
class V3Inputs:
    """The per-session inputs of the rules, computed once for a market frame."""

    index: pd.DatetimeIndex
    close: np.ndarray
    gap: np.ndarray  # close / 200-day average - 1
    slope: np.ndarray  # the average's change over `slope_lookback` sessions
    vol: np.ndarray  # realised volatility, annualised %
    credit: np.ndarray  # BAA-AAA, pp (NaN: unknown)
    credit_high: np.ndarray  # its high over `credit_window` sessions

    @property
    def valid(self) -> np.ndarray:
        return ~(np.isnan(self.gap) | np.isnan(self.slope) | np.isnan(self.vol))


def v3_inputs(market: pd.DataFrame, p: RegimeV3Params) -> V3Inputs:
    close = market["index_close"].astype("float64")
    sma = close.rolling(p.sma_window, min_periods=p.sma_min_periods).mean()
    credit = market["credit_spread"].astype("float64")
    return V3Inputs(
        index=pd.DatetimeIndex(market.index),
        close=close.to_numpy(),
        gap=(close / sma - 1.0).to_numpy(),
        slope=(sma / sma.shift(p.slope_lookback) - 1.0).to_numpy(),
        vol=realised_vol(close.to_numpy(), p.vol_window),
        credit=credit.to_numpy(),
        credit_high=credit.rolling(p.credit_window, min_periods=1).max().to_numpy(),
    )


@dataclass(frozen=True)
class Cycle:
    """The state machine's trace, one entry per session."""

    stress: np.ndarray  # in a bear (bool)
    high_pos: np.ndarray  # row of the cycle high (bull cycle) / of the high the bear fell from
    low_pos: np.ndarray  # row of the current (or last) bear's low; -1 before any bear
    entry_rule: np.ndarray  # _D_DD / _D_DEEP: what started the current (or last) bear
    exit_pos: np.ndarray  # row where the last bear ended; -1 before any
    credit_known: np.ndarray  # the credit confirmation could be checked when the bear ended
    regained: np.ndarray  # the last bear ended because the index regained the high it fell from


def run_cycle(inp: V3Inputs, p: RegimeV3Params) -> Cycle:
    """One forward pass (8k sessions: a few ms; plain floats beat numpy per step here)."""
    n = len(inp.close)
    close = inp.close.tolist()
    gap = inp.gap.tolist()
    credit = inp.credit.tolist()
    credit_high = inp.credit_high.tolist()
    stress = np.zeros(n, dtype=bool)
    high_pos = np.zeros(n, dtype=np.int64)
    low_pos = np.full(n, -1, dtype=np.int64)
    entry_rule = np.full(n, -1, dtype=np.int8)
    exit_pos = np.full(n, -1, dtype=np.int64)
    credit_known = np.ones(n, dtype=bool)
    regained = np.zeros(n, dtype=bool)
    in_bear = False
    hi = lo = rule = ex = -1
    known = True
    back = False
    bear_dd, deep_dd, rebound, narrow = (
        p.bear_drawdown,
        p.deep_bear_drawdown,
        p.rebound,
        p.credit_narrowing,
    )
    for i in range(n):
        c = close[i]
        if not in_bear:
            if hi < 0 or c > close[hi]:
                hi = i
            dd = c / close[hi] - 1.0
            if dd <= deep_dd:
                in_bear, lo, rule = True, i, _D_DEEP
            elif dd <= bear_dd and gap[i] < 0:  # NaN (no average yet) compares False
                in_bear, lo, rule = True, i, _D_DD
        else:
            if c < close[lo]:
                lo = i
            if c > close[hi]:
                # Above the high it fell from, the index is in no bear market (the ex-post
                # definition itself): whatever the rebound rule says, the bear is over.
                in_bear, ex, hi, back = False, i, i, True
            elif c >= close[lo] * (1.0 + rebound):
                cr, ch = credit[i], credit_high[i]
                known = cr == cr and ch == ch  # not NaN
                if narrow <= 0 or not known or cr <= ch - narrow:
                    in_bear, ex, hi, back = False, i, i, False
        stress[i] = in_bear
        high_pos[i] = hi
        low_pos[i] = lo
        entry_rule[i] = rule
        exit_pos[i] = ex
        credit_known[i] = known
        regained[i] = back
    return Cycle(stress, high_pos, low_pos, entry_rule, exit_pos, credit_known, regained)


def v3_labels(inp: V3Inputs, cyc: Cycle, p: RegimeV3Params) -> tuple[np.ndarray, np.ndarray]:
    """(label codes, decided-by codes) per session, before the dwell filter."""
    n = len(inp.close)
    idx = np.arange(n)
    since_exit = np.where(cyc.exit_pos >= 0, idx - cyc.exit_pos, np.iinfo(np.int32).max)
    with np.errstate(invalid="ignore"):
        trend_up = (inp.gap > p.trend_band) & (inp.slope > 0)
        bull = (inp.gap > 0) & (inp.slope > 0) & (inp.vol <= p.bull_max_vol)
        crisis = inp.vol > p.crisis_vol
    recovering = ~cyc.stress & (since_exit <= p.recovery_max_sessions) & ~trend_up
    # A recovery ends for good once the trend has confirmed it.
    confirmed = ~cyc.stress & trend_up
    last_confirm = np.maximum.accumulate(np.where(confirmed, idx, -1))
    recovering &= last_confirm < cyc.exit_pos
    lab = np.full(n, SIDEWAYS, dtype=np.int8)
    why = np.full(n, _D_NONE, dtype=np.int8)
    lab[bull] = BULL
    why[bull] = _D_TREND
    lab[recovering] = RECOVERY
    why[recovering] = _D_REBOUND
    lab[cyc.stress] = BEAR
    just_entered = cyc.stress & ~np.r_[False, cyc.stress[:-1]]
    why[cyc.stress] = _D_HOLD
    why[just_entered] = cyc.entry_rule[just_entered]
    lab[crisis] = CRISIS
    why[crisis] = _D_CRISIS
    return lab, why


def _dwell(raw: np.ndarray, stress: np.ndarray, p: RegimeV3Params) -> np.ndarray:
    """The dwell filter against flip-flopping, for what the cycle does not already smooth:
    bull/sideways/recovery changes and leaving crisis. A bear starts and ends exactly when the
    cycle says (its thresholds are the hysteresis); crisis starts at once."""
    out = dwell_filter(raw, p.min_dwell, p.stress_dwell)
    cycle = (raw == BEAR) | ((raw == CRISIS) & stress)
    out[cycle & (out != CRISIS)] = BEAR
    left = ~stress & (out == BEAR)
    out[left] = raw[left]
    return out


def labels_only(market: pd.DataFrame, p: RegimeV3Params, inp: V3Inputs | None = None) -> pd.Series:
    """The labels alone (no confidence, no HMM): what the selection grid scores. `inp`: the
    market's inputs already computed with the same windows (the grid reuses them)."""
    inp = inp or v3_inputs(market, p)
    cyc = run_cycle(inp, p)
    raw, _ = v3_labels(inp, cyc, p)
    valid = inp.valid
    first = int(np.argmax(valid)) if valid.any() else len(valid)
    lab = _dwell(raw[first:], cyc.stress[first:], p)
    return pd.Series(LABELS[lab], index=inp.index[first:])


def classify_frame_v3(market: pd.DataFrame, p: RegimeV3Params) -> pd.DataFrame:
    """Label every row (columns as `bloasis.regime.model.classify_frame`, plus the cycle's
    trace for the reasoning). Rows before the average and the volatility exist are dropped."""
    inp = v3_inputs(market, p)
    cyc = run_cycle(inp, p)
    raw, why_raw = v3_labels(inp, cyc, p)
    valid = inp.valid
    first = int(np.argmax(valid)) if valid.any() else len(valid)
    sl = slice(first, None)
    labels = _dwell(raw[sl], cyc.stress[sl], p)
    # The dwell filter may hold a label the raw rules have left: the reason follows the label.
    why = np.where(labels == raw[sl], why_raw[sl], _hold_reason(labels))
    close = inp.close
    gap, slope, vol = inp.gap[sl], inp.slope[sl], inp.vol[sl]
    hp, lp, ep = cyc.high_pos[sl], cyc.low_pos[sl], cyc.exit_pos[sl]
    cycle_dd = close[sl] / close[hp] - 1.0
    rebound = np.where(lp >= 0, close[sl] / close[np.maximum(lp, 0)] - 1.0, np.nan)
    logret = np.log(close)
    hv = np.r_[np.nan, filtered_high_vol(np.diff(logret), p.hmm)]
    prob = hv[sl]
    margin = np.select(
        [labels == CRISIS, labels == BEAR, labels == BULL, labels == RECOVERY],
        [
            (vol - p.crisis_vol) / 20.0,
            np.maximum(p.bear_drawdown - cycle_dd, -gap) / 0.15,
            np.minimum(gap, (p.bull_max_vol - vol) / 100.0) / 0.05,
            np.nan_to_num(rebound) / (2 * p.rebound),
        ],
        (p.trend_band * 2 - np.abs(gap)) / (p.trend_band * 2),
    )
    rule_conf = 0.5 + 0.5 * np.clip(np.nan_to_num(margin), 0.0, 1.0)
    conf, risk = confidence_and_risk(labels, rule_conf, prob, vol, p)
    dates = inp.index.strftime("%Y-%m-%d").to_numpy()
    frame = indicator_columns(
        market,
        first,
        p,
        labels=LABELS[labels],
        confidence=conf,
        rule_confidence=rule_conf,
        prob=prob,
        risk=risk,
        drawdown=cycle_dd,
        gap=gap,
        slope=slope,
        spike_vol=vol,
    )
    frame["decided_by"] = np.asarray(DECIDED, dtype=object)[why]
    frame["realised_vol"] = vol
    frame["rebound"] = rebound
    frame["cycle_high"] = close[hp]
    frame["cycle_high_date"] = dates[hp]
    frame["bear_low"] = np.where(lp >= 0, close[np.maximum(lp, 0)], np.nan)
    frame["bear_low_date"] = np.where(lp >= 0, dates[np.maximum(lp, 0)], "")
    frame["recovered_on"] = np.where(ep >= 0, dates[np.maximum(ep, 0)], "")
    frame["credit_high"] = inp.credit_high[sl]
    frame["credit_checked"] = cyc.credit_known[sl]
    frame["regained_high"] = cyc.regained[sl]
    frame.attrs["model"] = "regime-v3"
    frame.attrs["params"] = p
    return frame


def _hold_reason(labels: np.ndarray) -> np.ndarray:
    return np.select(
        [labels == CRISIS, labels == BEAR, labels == RECOVERY, labels == BULL],
        [_D_CRISIS, _D_HOLD, _D_REBOUND, _D_TREND],
        _D_NONE,
    ).astype(np.int8)


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def reasoning_v3(regime: str, confidence: float, row: dict[str, Any], p: RegimeV3Params) -> str:
    """A deterministic sentence: what decided, then the drivers and their values."""
    why = row["decided_by"]
    high = f"its cycle high {row['cycle_high']:,.2f} ({row['cycle_high_date']})"
    low = f"the bear's low {row['bear_low']:,.2f} ({row['bear_low_date']})"
    if why == "crisis_volatility":
        decided = f"realised volatility {row['realised_vol']:.1f}% is above {p.crisis_vol:g}%"
    elif why == "drawdown_below_average":
        decided = (
            f"{_pct(row['drawdown'])} from {high} with the index below its 200-day average"
            f" (bear from {_pct(p.bear_drawdown)})"
        )
    elif why == "deep_drawdown":
        decided = f"{_pct(row['drawdown'])} from {high} (bear from {_pct(p.deep_bear_drawdown)})"
    elif why == "bear_not_recovered":
        decided = (
            f"{_pct(row['rebound'])} off {low}; the bear ends {_pct(p.rebound)} off the low"
            + (
                f" with the BAA-AAA spread {p.credit_narrowing:.2f} pp below its"
                f" {p.credit_window}-session high"
                if p.credit_narrowing > 0
                else ""
            )
        )
    elif why == "rebound_confirmed" and row["regained_high"]:
        decided = (
            f"recovered on {row['recovered_on']}: back above the high the bear fell from;"
            " the 200-day trend has not confirmed yet"
        )
    elif why == "rebound_confirmed":
        credit = (
            "the credit spread narrowing from its high"
            if row["credit_checked"] and p.credit_narrowing > 0
            else "credit spread unavailable, the rebound alone decided"
            if p.credit_narrowing > 0
            else "no credit condition set"
        )
        decided = (
            f"recovered on {row['recovered_on']}: {_pct(row['rebound'])} off {low} ({credit});"
            " the 200-day trend has not confirmed yet"
        )
    elif why == "trend_up":
        decided = (
            f"above a rising 200-day average with realised volatility {row['realised_vol']:.1f}%"
        )
    else:
        decided = "no confirmed trend and no bear"
    vix_name = "realised-volatility VIX proxy" if row["vix_is_proxy"] else "VIX"
    hv = row["high_vol_prob"]
    how = f"rule margin {row['rule_confidence']:.2f}" + (
        "; statistical layer not fitted yet"
        if hv is None or hv != hv
        else f" with a {hv:.2f} filtered probability of the high-volatility state"
    )
    parts = [
        f"S&P 500 {row['sp500_close']:,.2f} is {_pct(row['sma200_gap'])} vs its 200-day average"
        f" (slope {_pct(row['sma200_slope'])} over {p.slope_lookback} sessions)",
        f"{_pct(row['drawdown'])} from {high}",
        f"realised volatility {row['realised_vol']:.1f}%, {vix_name} {row['vix']:.1f}",
    ]
    yc, cs = row["yield_curve"], row["credit_spread"]
    parts.append(
        f"10Y-2Y curve {yc:+.2f} pp ({row['yield_curve_state']})"
        if yc is not None and yc == yc
        else "yield curve unavailable"
    )
    parts.append(
        f"BAA-AAA spread {cs:.2f} pp ({row['credit_spread_state']})"
        if cs is not None and cs == cs
        else "credit spread unavailable"
    )
    return (
        f"{regime.capitalize()} ({decided}), confidence {confidence:.2f} ({how}): "
        + "; ".join(parts)
        + "."
    )
