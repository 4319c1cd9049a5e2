"""The regime result: one per as-of date, the unit that is stored, published and served."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Literal

RegimeLabel = Literal["crisis", "bear", "bull", "sideways", "recovery"]
RiskLevel = Literal["low", "medium", "high"]
Trigger = Literal["baseline", "manual", "backfill", "circuit_breaker", "vix_spike"]

REGIMES: Final[tuple[str, ...]] = ("crisis", "bear", "bull", "sideways", "recovery")
RISK_LEVELS: Final[tuple[str, ...]] = ("low", "medium", "high")
# An operator's override of the current regime (v1 SaveRegime) is stored under the served
# model version with this suffix.
OVERRIDE_SUFFIX: Final = "+override"
TRIGGERS: Final[tuple[str, ...]] = (
    "baseline",
    "manual",
    "backfill",
    "circuit_breaker",
    "vix_spike",
    # The original BLOASIS triggers an operator may give with SaveRegime.
    "fomc",
    "earnings_season",
    "geopolitical",
)


@dataclass(frozen=True)
class RegimeResult:
    as_of: date
    regime: str
    confidence: float
    risk_level: str
    trigger: str
    reasoning: str
    # Keys match bloasis.common.v2.Indicators (vix, vix_is_proxy, sp500_trend, sp500_close,
    # yield_curve, yield_curve_state, credit_spread, credit_spread_state, drawdown, sma200_gap,
    # sma200_slope, daily_return); None where the data had no value.
    indicators: dict[str, Any]
    model_version: str
    run_id: uuid.UUID
    computed_at: datetime

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise ValueError(f"regime must be one of {REGIMES}, got {self.regime!r}")
        if self.risk_level not in RISK_LEVELS:
            raise ValueError(f"risk_level must be one of {RISK_LEVELS}, got {self.risk_level!r}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")
