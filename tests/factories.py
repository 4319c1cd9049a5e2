"""Builders for domain objects used across tests."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from bloasis.regime.types import RegimeResult
from bloasis.strategy.types import Pick, ProfitTier, Signal, Strategy

RUN_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def regime(
    as_of: date,
    label: str = "bull",
    *,
    run_id: uuid.UUID = RUN_ID,
    trigger: str = "baseline",
    model_version: str = "rules-v1",
    **indicators: Any,
) -> RegimeResult:
    ind: dict[str, Any] = {
        "vix": 15.0,
        "vix_is_proxy": False,
        "sp500_trend": "up",
        "sp500_close": 4000.0,
        "yield_curve": 0.8,
        "yield_curve_state": "normal",
        "credit_spread": 1.0,
        "credit_spread_state": "normal",
        "drawdown": -0.02,
        "sma200_gap": 0.05,
        "sma200_slope": 0.01,
        "daily_return": 0.001,
        "high_vol_prob": 0.1,
        "rule_confidence": 0.8,
    }
    ind.update(indicators)
    return RegimeResult(
        as_of=as_of,
        regime=label,
        confidence=0.8,
        risk_level="high" if label == "crisis" else "low",
        trigger=trigger,
        reasoning=f"{label} on {as_of}",
        indicators=ind,
        model_version=model_version,
        run_id=run_id,
        computed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def strategy(
    as_of: date = date(2022, 12, 28),
    profile: str = "moderate",
    *,
    user_id: str | None = None,
    symbols: tuple[tuple[str, str], ...] = (
        ("KO", "Consumer Staples"),
        ("JNJ", "Health Care"),
        ("XOM", "Energy"),
    ),
    model_version: str = "rules-v1",
) -> Strategy:
    picks, signals = [], []
    for i, (sym, sector) in enumerate(symbols, start=1):
        entry = Decimal("100.00") + i
        picks.append(
            Pick(sym, sector, i, 90.0 - i, {"momentum": 80.0, "volatility": 70.5}, f"{sym} ok")
        )
        signals.append(
            Signal(
                symbol=sym,
                sector=sector,
                action="buy",
                weight=Decimal("0.0850"),
                entry_price=entry,
                stop_loss=entry - Decimal("4.00"),
                profit_tiers=(
                    ProfitTier(entry + Decimal("3.00"), Decimal("0.33")),
                    ProfitTier(entry + Decimal("6.00"), Decimal("0.33")),
                ),
                trailing_stop_pct=Decimal("0.0300"),
            )
        )
    owner = f"user:{user_id}" if user_id else profile
    return Strategy(
        strategy_id=f"{owner}:{as_of}:{model_version}",
        as_of=as_of,
        risk_profile=profile,
        user_id=user_id,
        regime="bear",
        risk_level="medium",
        picks=tuple(picks),
        signals=tuple(signals),
        cash_weight=Decimal(1) - Decimal("0.0850") * len(symbols),
        rationale="test strategy",
    )
