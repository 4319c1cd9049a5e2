"""Trading signals and position sizing.

Actions, from the as-of indicators (trend = close vs its 50-day average, confirmed by the 200-day
one when the symbol has 200 sessions):
- buy: uptrend (above both averages), RSI(14) < 70, MACD histogram >= 0 and close at or below
  the upper Bollinger band (not stretched);
- sell: downtrend (below both averages), MACD histogram < 0 and ADX(14) >= 20 (a real
  downtrend, not chop);
- hold: anything else (overbought, stretched, or mixed evidence; also unknown indicators).
Weight: buy carries its full size, hold half of its capped size (a partial position while the
evidence is mixed), sell none (the trend says exit or stay out; its levels are informative).

Levels (long side), with d = ATR(14) x m in the entry's price units, m = 0.75 / 1.0 / 1.25 for
regime risk level high / medium / low (tighter stops when risk is high):
entry = last close; stop = entry - 2d; tier 1 = entry + 1.5d (take 33%), tier 2 = entry + 3d
(take 33%); the remaining 34% rides a trailing stop of 2d / entry (the initial stop's distance,
as a fraction), clipped to [1%, 50%]. Prices are quantized to 0.01, rounded away from the entry
(stop down, tiers up) and kept at least one tick apart, so stop < entry < tier 1 < tier 2 always
holds (for entries of at least 0.02). Without ATR (too little history) d falls back to
entry x daily volatility.

Sizing (`size_positions`), over the picks that carry weight (n of them):
1. volatility target: vt_i = target_vol / (vol_i x sqrt(n)) (vol_i: annualised 60-day realised
   volatility, floored at 5%): n uncorrelated positions of that size have the target volatility;
2. optimiser blend: the optimiser's proposal, renormalised over the picks it covers and scaled
   to their vol-target gross, is blended 50/50 with vt: vol targeting decides how much is
   invested, the optimiser how it is split. Without a proposal: vt alone;
3. caps, all applied after the blend, each one only lowers weights so none undoes another:
   position cap (the profile's, or the user's lower max) times the action factor (buy 1,
   hold 0.5); then every pair with 60-day return correlation > 0.7 halves its smaller position
   (smaller by the uncapped weight, ties: the lower-ranked one; each position is halved at most
   once); then a sector above 30% is scaled down to 30%; then a total above 1 is scaled to 1
   (the rest is cash).
Rounding to Decimal is down (see `bloasis.strategy.users`), so it can never break a cap.

Same picks, a higher profile: the uncapped weights scale by target_vol (same ratio for every
symbol), caps are higher, the halving set is the same, so the total invested is monotone
conservative <= moderate <= aggressive, and so is each sector's exposure unless the total had to
be scaled down to 1. Single positions need not be: a sector scaled down to 30% can shrink one
name when a sibling grows faster.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Final

from bloasis.strategy.factors import TRADING_DAYS
from bloasis.strategy.types import ProfitTier

RISK_MULTIPLIER: Final[dict[str, float]] = {"high": 0.75, "medium": 1.0, "low": 1.25}
STOP_ATR, TIER1_ATR, TIER2_ATR = 2.0, 1.5, 3.0
TIER_SIZES: Final = (Decimal("0.33"), Decimal("0.33"))  # the remaining 0.34 trails
TRAILING_MIN, TRAILING_MAX = 0.01, 0.50
RSI_OVERBOUGHT = 70.0
ADX_TRENDING = 20.0
ACTION_FACTOR: Final[dict[str, float]] = {"buy": 1.0, "hold": 0.5, "sell": 0.0}

SECTOR_CAP = 0.30
CORRELATION_LIMIT = 0.7
OPTIMISER_BLEND = 0.5
VOL_FLOOR = 0.05

CENT: Final = Decimal("0.01")
BASIS: Final = Decimal("0.0001")


@dataclass(frozen=True)
class Levels:
    """Decimal order levels of one symbol (shared by every strategy that picks it)."""

    entry: Decimal
    stop: Decimal
    tiers: tuple[ProfitTier, ...]
    trailing_stop_pct: Decimal


def price_levels(entry: float, atr: float, vol: float, risk_level: str) -> Levels:
    """Levels from the last close, ATR(14) (in the close's units) and the annual volatility
    (fallback when ATR is unknown)."""
    m = RISK_MULTIPLIER[risk_level]
    if not math.isfinite(atr) or atr <= 0:
        atr = entry * (vol if math.isfinite(vol) else VOL_FLOOR) / math.sqrt(TRADING_DAYS)
    d = atr * m
    e = Decimal(entry).quantize(CENT, ROUND_HALF_EVEN)
    stop = min(Decimal(entry - STOP_ATR * d).quantize(CENT, ROUND_FLOOR), e - CENT)
    tier1 = max(Decimal(entry + TIER1_ATR * d).quantize(CENT, ROUND_CEILING), e + CENT)
    tier2 = max(Decimal(entry + TIER2_ATR * d).quantize(CENT, ROUND_CEILING), tier1 + CENT)
    trail = min(max(STOP_ATR * d / entry, TRAILING_MIN), TRAILING_MAX)
    return Levels(
        entry=e,
        stop=max(stop, CENT),
        tiers=(ProfitTier(tier1, TIER_SIZES[0]), ProfitTier(tier2, TIER_SIZES[1])),
        trailing_stop_pct=Decimal(trail).quantize(BASIS, ROUND_HALF_EVEN),
    )


def decide_action(
    *, gap50: float, gap200: float, rsi: float, macd_hist: float, adx: float, overextended: bool
) -> tuple[str, str]:
    """(action, reason). `gap50`/`gap200`: close / SMA - 1 (gap200 NaN without 200 sessions);
    `overextended`: close above the upper Bollinger band. NaN inputs make comparisons false,
    which ends in hold."""
    no_sma200 = math.isnan(gap200)
    up = gap50 > 0 and (no_sma200 or gap200 > 0)
    down = gap50 < 0 and (no_sma200 or gap200 < 0)
    if up and rsi < RSI_OVERBOUGHT and macd_hist >= 0 and not overextended:
        action = "buy"
    elif down and macd_hist < 0 and adx >= ADX_TRENDING:
        action = "sell"
    else:
        action = "hold"
    trend = "uptrend" if up else "downtrend" if down else "mixed trend"
    long_txt = "" if no_sma200 else f", {gap200:+.1%} vs 200-day"
    reason = (
        f"{action}: {trend} (close {gap50:+.1%} vs 50-day{long_txt}), RSI {rsi:.1f}, "
        f"MACD histogram {macd_hist:+.3f}, ADX {adx:.1f}"
        + (", above the upper Bollinger band" if overextended else "")
    )
    return action, reason


def size_positions(
    vols: Sequence[float],
    proposal: Sequence[float] | None,
    sectors: Sequence[str],
    action_factor: Sequence[float],
    correlated: Sequence[Collection[int]],
    *,
    target_vol: float,
    cap: float,
    sector_cap: float = SECTOR_CAP,
    blend: float = OPTIMISER_BLEND,
) -> tuple[list[float], int]:
    """Float weights of ranked picks (position k = rank k + 1) and how many were halved by the
    correlation rule. `proposal[k]` is NaN where the optimiser did not cover pick k;
    `correlated[k]`: positions j with return correlation above the limit. Pure Python: a
    strategy has ~15 picks, where numpy's per-call overhead would dominate."""
    n = len(vols)
    held = [k for k in range(n) if action_factor[k] > 0]
    weights = [0.0] * n
    if not held:
        return weights, 0
    root = math.sqrt(len(held))
    raw = {k: target_vol / (max(vols[k], VOL_FLOOR) * root) for k in held}
    if proposal is not None:
        covered = [k for k in held if not math.isnan(proposal[k])]
        p_sum = sum(proposal[k] for k in covered)
        if p_sum > 0:
            gross = sum(raw[k] for k in covered)
            for k in covered:
                raw[k] = (1.0 - blend) * raw[k] + blend * proposal[k] / p_sum * gross
    for k in held:
        # A hold is half the (capped) position a buy would get.
        weights[k] = action_factor[k] * min(raw[k], cap)
        raw[k] *= action_factor[k]

    halve: set[int] = set()
    for k in held:
        for j in correlated[k]:
            if j > k and j in raw:
                # The smaller uncapped weight; on a tie the lower-ranked (later) pick.
                halve.add(j if raw[j] <= raw[k] else k)
    for k in halve:
        weights[k] *= 0.5

    exposure: dict[str, float] = {}
    for k in held:
        exposure[sectors[k]] = exposure.get(sectors[k], 0.0) + weights[k]
    for k in held:
        if exposure[sectors[k]] > sector_cap:
            weights[k] *= sector_cap / exposure[sectors[k]]
    total = sum(weights)
    if total > 1.0:
        weights = [w / total for w in weights]
    return weights, len(halve)
