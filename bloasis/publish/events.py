"""Events a regime result causes, ready for the outbox (topic, key, headers, proto3 JSON payload).

Event ids are derived from what the event is about (kind, model version, as-of date), so a rerun
or a replayed relay produces the same id and consumers can deduplicate on it.
"""

from __future__ import annotations

from typing import Final

from bloasis.pb import events_pb2
from bloasis.regime.types import RegimeResult
from bloasis.store.outbox import OutboxEvent
from bloasis.wire import regime_to_pb, to_json, ts

REGIME_TOPIC: Final = "regime-events"
ALERT_TOPIC: Final = "alert-events"
STRATEGY_TOPIC: Final = "strategy-events"
CONTENT_TYPE: Final = "application/json; proto=bloasis.events"


def _event(topic: str, key: str, event_type: str, event_id: str, payload: str) -> OutboxEvent:
    return OutboxEvent(
        event_id=event_id,
        topic=topic,
        key=key,
        payload=payload,
        headers={"event_type": event_type, "content-type": CONTENT_TYPE, "event_id": event_id},
    )


def regime_event_id(kind: str, r: RegimeResult) -> str:
    return f"{kind}:{r.model_version}:{r.as_of.isoformat()}"


def regime_events(previous: RegimeResult | None, current: RegimeResult) -> list[OutboxEvent]:
    """RegimeChangeEvent when the label differs from the last persisted one, plus alerts:
    entering crisis (critical), a circuit-breaker drop (critical), the yield curve turning
    inverted (warning) and a volatility spike (warning)."""
    out: list[OutboxEvent] = []
    pb = regime_to_pb(current)
    prev_label = previous.regime if previous else ""
    if prev_label != current.regime:
        eid = regime_event_id("regime_change", current)
        msg = events_pb2.RegimeChangeEvent(
            event_id=eid,
            event_type="regime_change",
            occurred_at=ts(current.computed_at),
            previous_regime=prev_label,
            new_regime=current.regime,
            regime=pb,
        )
        out.append(_event(REGIME_TOPIC, "regime", "regime_change", eid, to_json(msg)))

    ind = current.indicators
    alerts: list[tuple[str, str, str]] = []
    if current.regime == "crisis" and prev_label != "crisis":
        alerts.append(("crisis_entered", "critical", f"Market entered crisis: {current.reasoning}"))
    if current.trigger == "circuit_breaker":
        drop = float(ind.get("daily_return") or 0.0)
        alerts.append(("circuit_breaker", "critical", f"S&P 500 fell {drop:.1%} in one session"))
    prev_curve = previous.indicators.get("yield_curve_state") if previous else None
    if ind.get("yield_curve_state") == "inverted" and prev_curve != "inverted":
        alerts.append(
            (
                "yield_curve_inversion",
                "warning",
                f"10Y-2Y yield curve inverted at {ind.get('yield_curve'):+.2f} pp",
            )
        )
    if current.trigger == "vix_spike":
        name = "VIX proxy" if ind.get("vix_is_proxy") else "VIX"
        alerts.append(
            ("volatility_spike", "warning", f"{name} spiked to {float(ind.get('vix') or 0):.1f}")
        )
    for alert_type, severity, text in alerts:
        eid = regime_event_id(alert_type, current)
        msg = events_pb2.MarketAlertEvent(
            event_id=eid,
            event_type="market_alert",
            occurred_at=ts(current.computed_at),
            severity=severity,
            alert_type=alert_type,
            message=text,
            as_of=current.as_of.isoformat(),
            regime=pb,
        )
        out.append(_event(ALERT_TOPIC, alert_type, "market_alert", eid, to_json(msg)))
    return out
