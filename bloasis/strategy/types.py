"""Sector analyses, strategies and user preferences: what is stored, published and served.

Money and sizes are Decimal (strings on the wire); scores are floats in [0, 100].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Final

PROFILES: Final[tuple[str, ...]] = ("conservative", "moderate", "aggressive")
GICS_SECTORS: Final[tuple[str, ...]] = (
    "Communication Services",
    "Consumer Discretionary",
    "Consumer Staples",
    "Energy",
    "Financials",
    "Health Care",
    "Industrials",
    "Information Technology",
    "Materials",
    "Real Estate",
    "Utilities",
)
ACTIONS: Final[tuple[str, ...]] = ("buy", "sell", "hold")
FACTORS: Final[tuple[str, ...]] = (
    "momentum",
    "value",
    "quality",
    "volatility",
    "liquidity",
    "sentiment",
    "trend",
)


@dataclass(frozen=True)
class SectorScore:
    sector: str
    score: float  # 0-100: regime tilt blended with measured strength
    tilt: float  # 0-100: how the regime favours the sector (defensive vs cyclical)
    strength: float  # 0-100: relative momentum of the sector's members (50 when none)
    members: int  # symbols of the universe in the sector
    rank: int  # 1 = best
    selected: bool


@dataclass(frozen=True)
class SectorAnalysis:
    as_of: date
    regime: str
    scores: tuple[SectorScore, ...]  # all 11 GICS sectors, best first
    candidates: tuple[str, ...]  # strongest members of the selected sectors, no duplicates

    @property
    def selected(self) -> tuple[str, ...]:
        return tuple(s.sector for s in self.scores if s.selected)


@dataclass(frozen=True)
class Pick:
    symbol: str
    sector: str
    rank: int
    final_score: float
    factor_scores: dict[str, float]  # the factors that were available, 0-100
    rationale: str


@dataclass(frozen=True)
class ProfitTier:
    level: Decimal  # price
    size_pct: Decimal  # share of the position to take off there, e.g. Decimal("0.33")


@dataclass(frozen=True)
class Signal:
    symbol: str
    sector: str
    action: str  # buy | sell | hold
    weight: Decimal  # share of the portfolio, 0..cap
    entry_price: Decimal
    stop_loss: Decimal
    profit_tiers: tuple[ProfitTier, ...]
    trailing_stop_pct: Decimal  # for the part left after the tiers, as a fraction


@dataclass(frozen=True)
class Strategy:
    strategy_id: str  # deterministic: profile or user, as-of, model version
    as_of: date
    risk_profile: str
    user_id: str | None  # None for a profile strategy
    regime: str
    risk_level: str
    picks: tuple[Pick, ...]
    signals: tuple[Signal, ...]
    cash_weight: Decimal  # 1 - sum(weights)
    rationale: str = ""


@dataclass(frozen=True)
class UserPreferences:
    user_id: str
    risk_profile: str = "moderate"
    preferred_sectors: tuple[str, ...] = field(default=())
    excluded_sectors: tuple[str, ...] = field(default=())
    max_single_position: Decimal = Decimal("0.10")
