"""Risk profiles: factor weights, regime multipliers, sizing parameters, and the final score.

Factor weights (SPEC §4) plus `trend`, which SPEC does not list: it gets its own weight, 0.10 for
every profile, rather than being folded into momentum, because it answers another question
(is the price above its 50/200-day averages now, vs did it rise over the past year) and is the
signal that keeps every profile out of falling knives. Weights are renormalised over the factors
present (on the embedded data: momentum, trend, volatility), so adding trend does not distort
the SPEC ratios among the others.

    factor       conservative  moderate  aggressive
    momentum         0.10        0.20       0.30
    value            0.25        0.20       0.10
    quality          0.30        0.20       0.15
    volatility       0.20        0.15       0.05
    liquidity        0.10        0.10       0.10
    sentiment        0.05        0.15       0.30
    trend            0.10        0.10       0.10

Regime multipliers (crisis and recovery rows from SPEC §4; the others chosen): bear is a milder
crisis (defence first, momentum distrusted), sideways favours value/quality/low volatility a
little and discounts trend-following (ranges whipsaw it), bull leans into momentum.

    factor      crisis  bear  sideways  bull  recovery
    momentum     0.3    0.6     0.8     1.2     1.5
    value        1.0    1.2     1.2     0.9     1.2
    quality      1.8    1.5     1.2     1.0     0.9
    volatility   2.0    1.5     1.2     0.8     0.7
    liquidity    1.5    1.2     1.0     1.0     1.0
    sentiment    0.5    0.8     1.0     1.0     1.2
    trend        1.0    1.2     0.8     1.0     0.8
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

from bloasis.regime.types import REGIMES
from bloasis.strategy.types import FACTORS, PROFILES

BASE_WEIGHTS: Final[dict[str, dict[str, float]]] = {
    "conservative": {
        "momentum": 0.10,
        "value": 0.25,
        "quality": 0.30,
        "volatility": 0.20,
        "liquidity": 0.10,
        "sentiment": 0.05,
        "trend": 0.10,
    },
    "moderate": {
        "momentum": 0.20,
        "value": 0.20,
        "quality": 0.20,
        "volatility": 0.15,
        "liquidity": 0.10,
        "sentiment": 0.15,
        "trend": 0.10,
    },
    "aggressive": {
        "momentum": 0.30,
        "value": 0.10,
        "quality": 0.15,
        "volatility": 0.05,
        "liquidity": 0.10,
        "sentiment": 0.30,
        "trend": 0.10,
    },
}

_MULTIPLIER_ROWS: Final[dict[str, tuple[float, float, float, float, float]]] = {
    # factor: (crisis, bear, sideways, bull, recovery)
    "momentum": (0.3, 0.6, 0.8, 1.2, 1.5),
    "value": (1.0, 1.2, 1.2, 0.9, 1.2),
    "quality": (1.8, 1.5, 1.2, 1.0, 0.9),
    "volatility": (2.0, 1.5, 1.2, 0.8, 0.7),
    "liquidity": (1.5, 1.2, 1.0, 1.0, 1.0),
    "sentiment": (0.5, 0.8, 1.0, 1.0, 1.2),
    "trend": (1.0, 1.2, 0.8, 1.0, 0.8),
}
_MULTIPLIER_COLUMNS: Final = ("crisis", "bear", "sideways", "bull", "recovery")
REGIME_MULTIPLIERS: Final[dict[str, dict[str, float]]] = {
    regime: {f: _MULTIPLIER_ROWS[f][i] for f in FACTORS}
    for i, regime in enumerate(_MULTIPLIER_COLUMNS)
}

FACTOR_LABELS: Final[dict[str, str]] = {
    "momentum": "12-1 momentum",
    "value": "value",
    "quality": "quality",
    "volatility": "low volatility",
    "liquidity": "liquidity",
    "sentiment": "sentiment",
    "trend": "trend",
}


@dataclass(frozen=True)
class ProfileParams:
    """Sizing parameters of a risk profile (SPEC §4)."""

    target_vol: float  # annual portfolio volatility the vol-targeting aims at
    position_cap: float  # largest weight of one symbol


PROFILE_PARAMS: Final[dict[str, ProfileParams]] = {
    "conservative": ProfileParams(target_vol=0.10, position_cap=0.05),
    "moderate": ProfileParams(target_vol=0.15, position_cap=0.10),
    "aggressive": ProfileParams(target_vol=0.25, position_cap=0.15),
}

assert set(BASE_WEIGHTS) == set(PROFILES) == set(PROFILE_PARAMS)
assert set(REGIME_MULTIPLIERS) == set(REGIMES)


def factor_weights(profile: str, regime: str, present: Iterable[str]) -> dict[str, float]:
    """Profile weight x regime multiplier, renormalised to sum 1 over the `present` factors
    (in `FACTORS` order)."""
    if profile not in BASE_WEIGHTS:
        raise ValueError(f"unknown risk profile {profile!r} (expected one of {PROFILES})")
    if regime not in REGIME_MULTIPLIERS:
        raise ValueError(f"unknown regime {regime!r} (expected one of {REGIMES})")
    have = set(present)
    raw = {
        f: BASE_WEIGHTS[profile][f] * REGIME_MULTIPLIERS[regime][f] for f in FACTORS if f in have
    }
    total = sum(raw.values())
    if total <= 0:
        raise ValueError("no factor is present: nothing to score")
    return {f: w / total for f, w in raw.items()}


def combine(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Final score 0-100 per symbol: the weighted mean of the factor scores it has (weights
    renormalised per symbol over its available factors); NaN when it has none."""
    num: np.ndarray | None = None
    den: np.ndarray | None = None
    for f, w in weights.items():
        s = scores[f]
        ok = ~np.isnan(s)
        part = np.where(ok, w * s, 0.0)
        wt = np.where(ok, w, 0.0)
        num = part if num is None else num + part
        den = wt if den is None else den + wt
    if num is None or den is None:
        raise ValueError("no factor weights")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def top_factors(
    scores: Mapping[str, float], weights: Mapping[str, float], k: int = 3
) -> list[tuple[str, float]]:
    """The `k` factors contributing most (weight x score) to a symbol's final score, ties in
    `FACTORS` order: what its rationale names."""
    order = sorted(
        (f for f in FACTORS if f in scores and f in weights),
        key=lambda f: (-weights[f] * scores[f], FACTORS.index(f)),
    )
    return [(f, scores[f]) for f in order[:k]]


def describe_factors(scores: Mapping[str, float], weights: Mapping[str, float]) -> str:
    """E.g. "low volatility 92, trend 80, 12-1 momentum 45"."""
    return ", ".join(f"{FACTOR_LABELS[f]} {s:.0f}" for f, s in top_factors(scores, weights))
