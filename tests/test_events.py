"""Which events a regime result causes, and their wire form (pure logic)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

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
    assert alert["severity"] == "critical" and alert["alert_type"] == "regime_crisis"
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


def _original_consumer(events: list[Any]) -> list[dict[str, Any]]:
    """Decode with messages generated from the original contract, in a process of its own."""
    lines = "".join(json.dumps({"topic": e.topic, "payload": e.payload}) + "\n" for e in events)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "v1_client.py"), "--decode"],
        input=lines, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return [json.loads(x) for x in proc.stdout.splitlines()]


def test_an_original_consumer_reads_regime_and_alert_events() -> None:
    prev = regime(D1, "bear")
    cur = regime(D2, "crisis", trigger="circuit_breaker", daily_return=-0.08)
    events = regime_events(prev, cur)
    got = _original_consumer(events)
    assert [g["topic"] for g in got] == ["regime-events", "alert-events", "alert-events"]
    assert all("error" not in g for g in got)
    change = got[0]["event"]
    assert change["event_id"] == events[0].event_id
    assert (change["previous_regime"], change["new_regime"]) == ("bear", "crisis")
    assert change["confidence"] == cur.confidence and change["reasoning"] == cur.reasoning
    assert change["timestamp"] == "2026-01-02T03:04:05Z"
    assert change["priority"] == "EVENT_PRIORITY_CRITICAL"
    assert change["metadata"]["event_type"] == "regime_change"
    assert change["metadata"]["as_of"] == D2.isoformat()
    alerts = {g["event"]["alert_type"]: g["event"] for g in got[1:]}
    assert set(alerts) == {"regime_crisis", "circuit_breaker"}
    crit = alerts["circuit_breaker"]
    assert crit["severity"] == "critical" and crit["priority"] == "EVENT_PRIORITY_CRITICAL"
    assert crit["timestamp"] == "2026-01-02T03:04:05Z" and "fell" in crit["message"]
    assert crit["indicators"]["daily_return"] == "-0.08"
    # History filled in is low priority, and says so.
    [hist] = _original_consumer(regime_events(prev, cur, historical=True))
    assert hist["event"]["priority"] == "EVENT_PRIORITY_LOW"
    assert hist["event"]["metadata"]["historical"] == "true"
