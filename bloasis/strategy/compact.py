"""User strategies are stored and published compact (their positions only); the price levels
are shared with the profile strategy's book. These two functions are the only translation."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from bloasis.strategy.types import Pick, ProfitTier, Signal, Strategy


def positions_of(s: Strategy) -> list[dict[str, Any]]:
    """A strategy's positions in the compact form (rank and score from its picks)."""
    picks = {p.symbol: p for p in s.picks}
    out = []
    for g in s.signals:
        p = picks.get(g.symbol)
        out.append(
            {
                "symbol": g.symbol,
                "sector": g.sector,
                "action": g.action,
                "weight": str(g.weight),
                "rank": p.rank if p else 0,
                "final_score": p.final_score if p else 0.0,
            }
        )
    return out


def expand(
    *,
    strategy_id: str,
    user_id: str,
    positions: Sequence[dict[str, Any]],
    cash_weight: Decimal,
    profile: Strategy,
    book: Sequence[dict[str, Any]],
) -> Strategy:
    """The full user strategy: its positions joined with the profile book's levels and scores.

    Raises KeyError naming the symbol when a position is missing from the book (the two come
    from different runs: a bug, never silently filled)."""
    by_symbol = {e["symbol"]: e for e in book}
    picks: list[Pick] = []
    signals: list[Signal] = []
    for pos in positions:
        e = by_symbol.get(pos["symbol"])
        if e is None:
            raise KeyError(f"{pos['symbol']} is not in the book of {profile.strategy_id}")
        picks.append(
            Pick(
                symbol=e["symbol"],
                sector=e["sector"],
                rank=int(pos.get("rank") or e["rank"]),
                final_score=float(pos.get("final_score") or e["final_score"]),
                factor_scores=dict(e["factor_scores"]),
                rationale=e["rationale"],
            )
        )
        signals.append(
            Signal(
                symbol=e["symbol"],
                sector=e["sector"],
                action=pos["action"],
                weight=Decimal(pos["weight"]),
                entry_price=Decimal(e["entry_price"]),
                stop_loss=Decimal(e["stop_loss"]),
                profit_tiers=tuple(
                    ProfitTier(Decimal(t["level"]), Decimal(t["size_pct"]))
                    for t in e["profit_tiers"]
                ),
                trailing_stop_pct=Decimal(e["trailing_stop_pct"]),
            )
        )
    return Strategy(
        strategy_id=strategy_id,
        as_of=profile.as_of,
        risk_profile=profile.risk_profile,
        user_id=user_id,
        regime=profile.regime,
        risk_level=profile.risk_level,
        picks=tuple(picks),
        signals=tuple(signals),
        cash_weight=cash_weight,
        rationale=f"Derived from {profile.strategy_id} with the user's preferences.",
    )
