"""Wire forms of strategies: the fast compact JSON equals the protobuf printer's, the compact
form expands back to the full strategy (pure logic)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from google.protobuf import json_format

from bloasis.pb.v2 import events_pb2, strategy_pb2
from bloasis.publish.events import strategy_event, user_cache_json, user_strategy_event
from bloasis.store.strategies import book_entry
from bloasis.strategy.compact import expand, positions_of
from bloasis.wire import strategy_to_pb
from tests.factories import strategy

RUN = uuid.UUID(int=5)
AT = datetime(2026, 11, 28, 18, 0, 1, 234567, tzinfo=UTC)


def test_fast_user_cache_json_is_the_printers_strategy_with_what_serving_needs() -> None:
    """The Redis value is a `Strategy` message holding only what serving rebuilds the user's
    strategy from (the profile book has the levels, sectors, scores and regime)."""
    s = strategy(user_id="u1")
    fast = user_cache_json(
        s, run_id=RUN, model_version="m", computed_at=AT, profile_strategy_id="moderate:x"
    )
    ref = strategy_to_pb(
        s, run_id=RUN, model_version="m", computed_at=AT, profile_strategy_id="moderate:x",
        compact=True,
    )  # fmt: skip
    for name in ("strategy_id", "risk_profile", "rationale", "regime", "risk_level"):
        ref.ClearField(name)  # type: ignore[arg-type]
    for g in ref.signals:
        g.ClearField("sector")
    assert json_format.Parse(fast, strategy_pb2.Strategy()) == ref
    assert json.loads(fast)["signals"][0] == {"symbol": "KO", "action": "buy", "weight": "0.0850"}
    assert len(fast) < 600  # 3 signals; the whole compact strategy is over 1 KB


def test_user_event_parses_and_is_versioned() -> None:
    s = strategy(user_id="u1")
    e1 = user_strategy_event(s, computed_at=AT, profile_strategy_id="p", preferences_version=1)
    e2 = user_strategy_event(s, computed_at=AT, profile_strategy_id="p", preferences_version=2)
    msg = json_format.Parse(e1.payload, events_pb2.StrategySignalEvent())
    assert msg.user_id == "u1" and msg.profile_strategy_id == "p" and len(msg.signals) == 3
    assert msg.occurred_at.ToDatetime(tzinfo=UTC) == AT
    assert e1.key == s.strategy_id and e1.topic == "strategy-events"
    assert e1.event_id != e2.event_id and e1.event_id.endswith(":v1")


def test_profile_event_carries_every_level() -> None:
    s = strategy()
    ev = strategy_event(s, run_id=RUN, model_version="m", computed_at=AT)
    msg = json_format.Parse(ev.payload, events_pb2.StrategySignalEvent())
    assert msg.signals[0].entry_price == "101.00" and msg.signals[0].stop_loss == "97.00"
    assert [t.level for t in msg.signals[0].profit_tiers] == ["104.00", "107.00"]
    assert ev.event_id == f"strategy_signal:{s.strategy_id}"


def test_compact_positions_expand_back() -> None:
    profile = strategy()
    user = strategy(user_id="u9")
    book = [book_entry(p, g) for p, g in zip(profile.picks, profile.signals, strict=True)]
    back = expand(
        strategy_id=user.strategy_id,
        user_id="u9",
        positions=positions_of(user),
        cash_weight=user.cash_weight,
        profile=profile,
        book=book,
    )
    assert back.signals == user.signals and back.picks == user.picks
    assert back.user_id == "u9" and back.as_of == profile.as_of
