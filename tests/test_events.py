"""Which events a regime result causes, and their wire form (pure logic)."""

from __future__ import annotations

import json
from datetime import date

from bloasis.publish.events import ALERT_TOPIC, REGIME_TOPIC, regime_events
from bloasis.wire import regime_from_json, regime_to_json
from tests.factories import regime

D1, D2 = date(2020, 2, 20), date(2020, 2, 21)


def test_first_result_is_a_change_from_empty() -> None:
    (ev,) = regime_events(None, regime(D1, "bull"))
    assert ev.topic == REGIME_TOPIC and ev.key == "regime"
    body = json.loads(ev.payload)
    assert body["previous_regime"] == ""
    assert body["new_regime"] == "bull"
    assert body["regime"]["as_of"] == "2020-02-20"
    assert ev.headers["event_type"] == "regime_change"
    assert ev.headers["content-type"].startswith("application/json")
    assert ev.event_id == "regime_change:rules-v1:2020-02-20" == body["event_id"]


def test_same_label_no_event() -> None:
    assert regime_events(regime(D1, "bull"), regime(D2, "bull")) == []


def test_entering_crisis_is_critical_alert_and_change() -> None:
    evs = regime_events(regime(D1, "bear"), regime(D2, "crisis", vix=45.0))
    topics = sorted(e.topic for e in evs)
    assert topics == [ALERT_TOPIC, REGIME_TOPIC]
    alert = json.loads(next(e for e in evs if e.topic == ALERT_TOPIC).payload)
    assert alert["severity"] == "critical" and alert["alert_type"] == "crisis_entered"
    # Staying in crisis raises no new alert.
    assert regime_events(regime(D1, "crisis"), regime(D2, "crisis")) == []


def test_inversion_and_spike_and_circuit_breaker_alerts() -> None:
    prev = regime(D1, "bull")
    cur = regime(
        D2,
        "bull",
        trigger="circuit_breaker",
        yield_curve=-0.12,
        yield_curve_state="inverted",
        daily_return=-0.08,
    )
    alerts = {json.loads(e.payload)["alert_type"]: e for e in regime_events(prev, cur)}
    assert set(alerts) == {"yield_curve_inversion", "circuit_breaker"}
    assert "-0.12" in json.loads(alerts["yield_curve_inversion"].payload)["message"]
    assert "-8.0%" in json.loads(alerts["circuit_breaker"].payload)["message"]
    spike = regime_events(prev, regime(D2, "bull", trigger="vix_spike", vix=33.3))
    assert [json.loads(e.payload)["alert_type"] for e in spike] == ["volatility_spike"]
    # Already inverted yesterday: no new inversion alert.
    inv = regime(D1, "bull", yield_curve=-0.1, yield_curve_state="inverted")
    assert regime_events(inv, regime(D2, "bull", yield_curve_state="inverted")) == []


def test_event_ids_are_deterministic() -> None:
    a = regime_events(None, regime(D1, "crisis"))
    b = regime_events(None, regime(D1, "crisis"))
    assert [e.event_id for e in a] == [e.event_id for e in b]
    assert len({e.event_id for e in a}) == len(a) == 2


def test_wire_round_trip_keeps_missing_indicators_missing() -> None:
    r = regime(D1, "sideways", yield_curve=None, yield_curve_state="unknown", credit_spread=None)
    back = regime_from_json(regime_to_json(r))
    assert back == r
    assert back.indicators["yield_curve"] is None
    assert "yield_curve" not in json.loads(regime_to_json(r))["indicators"]


def test_wire_round_trip_of_a_v3_result_keeps_its_own_indicators() -> None:
    r = regime(D1, "bear", decided_by="bear_not_recovered", realised_vol=31.2, rebound=None)
    back = regime_from_json(regime_to_json(r))
    assert back == r and back.indicators["rebound"] is None
    assert json.loads(regime_to_json(r))["indicators"]["decided_by"] == "bear_not_recovered"
