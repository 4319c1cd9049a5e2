"""What a backtest is asked (`BacktestSpec`) and the errors that name a bad field."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Final

from bloasis.strategy.types import PROFILES, UserPreferences

FREQUENCIES: Final = ("daily", "weekly", "monthly")
# Bump when the engine's results for the same inputs change (stored backtests are keyed on it).
ENGINE_VERSION: Final = "backtest-1"


class BacktestInputError(ValueError):
    """A bad backtest input; `field` names it (the message starts with it)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class UnknownUserError(BacktestInputError):
    """A user named by the request has no stored preferences (NOT_FOUND over gRPC)."""

    def __init__(self, user_id: str) -> None:
        super().__init__("user_id", f"no user {user_id!r} (no stored preferences)")
        self.user_id = user_id


@dataclass(frozen=True)
class Costs:
    """Per trade, as fractions of the traded value: commission paid, and slippage (buys fill
    that much above the price, sells below)."""

    commission: float = 0.0005
    slippage: float = 0.0005

    def check(self) -> None:
        for name in ("commission", "slippage"):
            v = getattr(self, name)
            if not (v == v) or v < 0 or v >= 0.1:  # NaN, negative, or absurd
                raise BacktestInputError(name, f"must be in [0, 0.1) (a fraction), got {v}")


@dataclass(frozen=True)
class Portfolio:
    """One replayed strategy: a risk profile's own, or a user's (derived from that profile's
    book with the user's preferences, as the daily run derives it)."""

    name: str  # the profile name, or "user:<id>"
    profile: str
    prefs: UserPreferences | None = None

    @staticmethod
    def of_profile(profile: str) -> Portfolio:
        if profile not in PROFILES:
            raise BacktestInputError(
                "profiles", f"unknown profile {profile!r} (expected one of {', '.join(PROFILES)})"
            )
        return Portfolio(profile, profile)

    @staticmethod
    def of_user(prefs: UserPreferences) -> Portfolio:
        return Portfolio(f"user:{prefs.user_id}", prefs.risk_profile, prefs)


DEFAULT_INITIAL_CASH: Decimal = Decimal("100000")


@dataclass(frozen=True)
class BacktestSpec:
    start: date
    end: date
    portfolios: tuple[Portfolio, ...]
    rebalance: str = "weekly"
    costs: Costs = field(default_factory=Costs)
    initial_cash: Decimal = DEFAULT_INITIAL_CASH
    top_n: int = 15
    min_history: int = 21
    symbols: tuple[str, ...] = ()  # a subset of the data's universe; () = all of it

    def check(self) -> None:
        if self.rebalance not in FREQUENCIES:
            raise BacktestInputError(
                "rebalance", f"{self.rebalance!r} (expected one of {', '.join(FREQUENCIES)})"
            )
        if self.end <= self.start:
            raise BacktestInputError("end", f"{self.end} is not after start {self.start}")
        if not self.portfolios:
            raise BacktestInputError("profiles", "nothing to backtest: no profile and no user")
        names = [p.name for p in self.portfolios]
        if len(set(names)) != len(names):
            raise BacktestInputError("profiles", "a profile or user is given twice")
        if not self.initial_cash.is_finite() or self.initial_cash <= 0:
            raise BacktestInputError("initial_cash", f"must be > 0, got {self.initial_cash}")
        if self.top_n < 1:
            raise BacktestInputError("top_n", f"must be >= 1, got {self.top_n}")
        self.costs.check()

    def canonical(self) -> dict[str, Any]:
        """Everything that decides the result, as plain JSON (stored, and hashed into the key)."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rebalance": self.rebalance,
            "commission": self.costs.commission,
            "slippage": self.costs.slippage,
            "initial_cash": str(self.initial_cash),
            "top_n": self.top_n,
            "min_history": self.min_history,
            "symbols": sorted(self.symbols),
            "portfolios": [
                {
                    "name": p.name,
                    "profile": p.profile,
                    "preferred": list(p.prefs.preferred_sectors) if p.prefs else [],
                    "excluded": list(p.prefs.excluded_sectors) if p.prefs else [],
                    "max_position": str(p.prefs.max_single_position) if p.prefs else None,
                }
                for p in self.portfolios
            ],
        }


def inputs_key(spec: BacktestSpec, *, model: dict[str, Any], data_hash: str) -> str:
    """The identity of a backtest's inputs: the same key means the same result."""
    doc = {"engine": ENGINE_VERSION, "spec": spec.canonical(), "model": model, "data": data_hash}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
