"""Domain <-> protobuf translation, shared by the publisher (Kafka, Redis) and the gRPC server.

Redis values and Kafka payloads are proto3 JSON of these messages, so every reader parses one
format.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from bloasis.pb.v2 import classification_pb2, common_pb2, strategy_pb2
from bloasis.regime.types import OVERRIDE_SUFFIX, RegimeResult
from bloasis.strategy.types import (
    Pick,
    SectorAnalysis,
    Signal,
    Strategy,
    UserPreferences,
)

_OPTIONAL_FLOATS = ("yield_curve", "credit_spread", "high_vol_prob", "realised_vol", "rebound")
_V3_ONLY = ("decided_by", "realised_vol", "rebound")


def ts(dt: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt.astimezone(UTC))
    return out


def regime_to_pb(r: RegimeResult) -> common_pb2.MarketRegime:
    ind = {k: v for k, v in r.indicators.items() if v is not None}
    return common_pb2.MarketRegime(
        regime=r.regime,
        confidence=r.confidence,
        risk_level=r.risk_level,
        trigger=r.trigger,
        reasoning=r.reasoning,
        indicators=common_pb2.Indicators(**ind),
        as_of=r.as_of.isoformat(),
        computed_at=ts(r.computed_at),
        model_version=r.model_version,
        run_id=str(r.run_id),
        override=r.model_version.endswith(OVERRIDE_SUFFIX),
    )


def regime_from_pb(m: common_pb2.MarketRegime) -> RegimeResult:
    ind: dict[str, Any] = {
        f.name: getattr(m.indicators, f.name) for f in common_pb2.Indicators.DESCRIPTOR.fields
    }
    for k in _OPTIONAL_FLOATS:
        if not m.indicators.HasField(k):
            ind[k] = None
    if not m.indicators.decided_by:  # regime-v2: its results have none of v3's indicators
        for k in _V3_ONLY:
            del ind[k]
    return RegimeResult(
        as_of=date.fromisoformat(m.as_of),
        regime=m.regime,
        confidence=m.confidence,
        risk_level=m.risk_level,
        trigger=m.trigger,
        reasoning=m.reasoning,
        indicators=ind,
        model_version=m.model_version,
        run_id=uuid.UUID(m.run_id),
        computed_at=m.computed_at.ToDatetime(tzinfo=UTC),
    )


def to_json(msg: Message) -> str:
    """Compact proto3 JSON keeping the .proto field names (snake_case), as readers expect."""
    # Defaults printed too: a reader sees `"previous_regime": ""`, not a missing field.
    return json_format.MessageToJson(
        msg,
        preserving_proto_field_name=True,
        indent=None,
        sort_keys=True,
        always_print_fields_with_no_presence=True,
    )


def regime_to_json(r: RegimeResult) -> str:
    return to_json(regime_to_pb(r))


def regime_from_json(text: str | bytes) -> RegimeResult:
    return regime_from_pb(json_format.Parse(text, common_pb2.MarketRegime()))


# --- tier 2 / tier 3 -------------------------------------------------------------------------
def sector_analysis_to_pb(
    a: SectorAnalysis, *, run_id: uuid.UUID, model_version: str, computed_at: datetime
) -> classification_pb2.SectorAnalysis:
    return classification_pb2.SectorAnalysis(
        as_of=a.as_of.isoformat(),
        regime=a.regime,
        sectors=[
            classification_pb2.SectorScore(
                sector=s.sector,
                score=s.score,
                tilt=s.tilt,
                strength=s.strength,
                members=s.members,
                rank=s.rank,
                selected=s.selected,
            )
            for s in a.scores
        ],
        candidates=list(a.candidates),
        run_id=str(run_id),
        model_version=model_version,
        computed_at=ts(computed_at),
    )


def pick_to_pb(p: Pick) -> strategy_pb2.Pick:
    return strategy_pb2.Pick(
        symbol=p.symbol,
        sector=p.sector,
        rank=p.rank,
        final_score=p.final_score,
        factor_scores=p.factor_scores,
        rationale=p.rationale,
    )


def signal_to_pb(s: Signal) -> strategy_pb2.Signal:
    return strategy_pb2.Signal(
        symbol=s.symbol,
        sector=s.sector,
        action=s.action,
        weight=str(s.weight),
        entry_price=str(s.entry_price),
        stop_loss=str(s.stop_loss),
        profit_tiers=[
            strategy_pb2.ProfitTier(level=str(t.level), size_pct=str(t.size_pct))
            for t in s.profit_tiers
        ],
        trailing_stop_pct=str(s.trailing_stop_pct),
    )


def strategy_to_pb(
    s: Strategy,
    *,
    run_id: uuid.UUID,
    model_version: str,
    computed_at: datetime,
    profile_strategy_id: str = "",
    compact: bool = False,
) -> strategy_pb2.Strategy:
    """`compact` (user strategies in Redis and Kafka): no picks, signals without price levels."""
    signals = [
        strategy_pb2.Signal(symbol=x.symbol, sector=x.sector, action=x.action, weight=str(x.weight))
        if compact
        else signal_to_pb(x)
        for x in s.signals
    ]
    return strategy_pb2.Strategy(
        strategy_id=s.strategy_id,
        as_of=s.as_of.isoformat(),
        risk_profile=s.risk_profile,
        user_id=s.user_id or "",
        picks=[] if compact else [pick_to_pb(p) for p in s.picks],
        signals=signals,
        cash_weight=str(s.cash_weight),
        rationale=s.rationale,
        run_id=str(run_id),
        model_version=model_version,
        computed_at=ts(computed_at),
        profile_strategy_id=profile_strategy_id,
        regime=s.regime,
        risk_level=s.risk_level,
    )


def preferences_to_pb(
    p: UserPreferences, *, updated_at: datetime | None = None
) -> strategy_pb2.UserPreferences:
    out = strategy_pb2.UserPreferences(
        user_id=p.user_id,
        risk_profile=p.risk_profile,
        preferred_sectors=list(p.preferred_sectors),
        excluded_sectors=list(p.excluded_sectors),
        max_single_position=str(p.max_single_position),
    )
    if updated_at is not None:
        out.updated_at.CopyFrom(ts(updated_at))
    return out


def rfc3339(dt: datetime, timespec: str = "microseconds") -> str:
    """UTC with a `Z`; `seconds` is the original contract's form (2025-01-26T14:30:00Z)."""
    return dt.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
