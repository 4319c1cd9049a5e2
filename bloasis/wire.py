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

from bloasis.pb import common_pb2
from bloasis.regime.types import RegimeResult

_OPTIONAL_FLOATS = ("yield_curve", "credit_spread", "high_vol_prob")


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
    )


def regime_from_pb(m: common_pb2.MarketRegime) -> RegimeResult:
    ind: dict[str, Any] = {
        f.name: getattr(m.indicators, f.name) for f in common_pb2.Indicators.DESCRIPTOR.fields
    }
    for k in _OPTIONAL_FLOATS:
        if not m.indicators.HasField(k):
            ind[k] = None
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
