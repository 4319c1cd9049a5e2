"""Outbox -> Kafka relay and the Redis cache, against the real broker and Redis."""

from __future__ import annotations

import gc
import json
from datetime import date, timedelta

import pytest
import redis
from sqlalchemy import Engine, select

from bloasis.config import Settings
from bloasis.pipeline import persist_regime
from bloasis.publish.cache import REGIME_CURRENT_KEY, read_current_regime
from bloasis.publish.events import ALERT_TOPIC, REGIME_TOPIC
from bloasis.publish.relay import RelayError, relay_pending
from bloasis.publish.topics import TOPICS, ensure_topics, list_topics
from bloasis.store import outbox, runs
from bloasis.store.models import OutboxRow
from bloasis.strategy_run import publish_run
from tests.factories import RUN_ID, regime
from tests.kafka_util import consume_all


def _seed_run(engine: Engine) -> None:
    with engine.begin() as conn:
        runs.start_run(
            conn, run_id=RUN_ID, flow="test", trigger="manual", as_of=None, parameters={},
            data_source="test", data_snapshot_hash="", code_version="t", model_version="rules-v1",
        )  # fmt: skip


async def test_topics_created_idempotently_with_partitions(stack_settings: Settings) -> None:
    bootstrap = stack_settings.require("kafka_bootstrap_servers")
    await ensure_topics(bootstrap)
    assert await ensure_topics(bootstrap) == []
    listed = await list_topics(bootstrap)
    for spec in TOPICS:
        assert listed[spec.name] == spec.partitions
    assert {t.name: t.config["retention.ms"] for t in TOPICS} == {
        "regime-events": str(7 * 86_400_000),
        "alert-events": str(7 * 86_400_000),
        "strategy-events": str(30 * 86_400_000),
    }


async def test_persist_relay_consume_no_duplicates(
    clean_db: Engine, stack_settings: Settings
) -> None:
    bootstrap = stack_settings.require("kafka_bootstrap_servers")
    await ensure_topics(bootstrap)
    before = {e.headers["event_id"] for e in await consume_all(bootstrap, REGIME_TOPIC)}
    _seed_run(clean_db)
    d0 = date(2031, 3, 3)  # dates no other test uses: event ids are unique per as-of
    labels = ["bull", "bull", "bear", "crisis", "crisis", "recovery"]
    outcomes = [
        persist_regime(clean_db, regime(d0 + timedelta(days=i), lab))
        for i, lab in enumerate(labels)
    ]
    assert [o.inserted for o in outcomes] == [True] * 6
    assert [o.previous.regime if o.previous else "" for o in outcomes] == ["", *labels[:-1]]
    # Rerun of the same days: nothing inserted, no new events.
    again = [persist_regime(clean_db, regime(d0 + timedelta(days=i), "sideways")) for i in range(6)]
    assert [(o.inserted, o.events, o.stored.regime) for o in again] == [
        (False, 0, lab) for lab in labels
    ]

    stats = await relay_pending(clean_db, bootstrap, idempotence=False, batch_size=2)
    assert stats.published == 5 and stats.pending == 0 and stats.batches == 3
    assert (await relay_pending(clean_db, bootstrap, idempotence=False)).published == 0

    got = [
        e for e in await consume_all(bootstrap, REGIME_TOPIC) if e.headers["event_id"] not in before
    ]
    assert [json.loads(e.value)["new_regime"] for e in got] == [
        "bull",
        "bear",
        "crisis",
        "recovery",
    ]
    assert {e.key for e in got} == {"regime"} and len({e.partition for e in got}) == 1
    assert len({e.headers["event_id"] for e in got}) == 4
    first = json.loads(got[0].value)
    assert first["previous_regime"] == "" and first["regime"]["as_of"] == "2031-03-03"
    assert got[0].headers["event_type"] == "regime_change"
    assert got[0].headers["content-type"].startswith("application/json")
    alerts = [
        json.loads(e.value)
        for e in await consume_all(bootstrap, ALERT_TOPIC)
        if e.headers["event_id"].endswith("2031-03-06")
    ]
    assert [(a["alert_type"], a["severity"]) for a in alerts] == [("regime_crisis", "critical")]


async def test_relay_with_broker_unreachable_keeps_events(clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        outbox.enqueue(conn, [outbox.OutboxEvent("x1", REGIME_TOPIC, "regime", "{}")])
    with pytest.raises(RelayError, match="unavailable"):
        await relay_pending(clean_db, "127.0.0.1:1", idempotence=False, attempts=2, backoff_s=0.01)
    with clean_db.connect() as conn:
        assert outbox.backlog(conn) == 1


def test_cache_holds_latest_as_of_with_ttl(clean_db: Engine, stack_settings: Settings) -> None:
    _seed_run(clean_db)
    r = redis.Redis.from_url(stack_settings.require("redis_url"))
    r.delete(REGIME_CURRENT_KEY)
    persist_regime(clean_db, regime(date(2022, 6, 1), "bear"))
    publish_run(clean_db, stack_settings, model_version="rules-v1", as_of=date(2022, 6, 1),
                with_strategies=False)  # fmt: skip
    # An older as-of stored later does not replace what is current.
    persist_regime(clean_db, regime(date(2022, 5, 1), "bull"))
    publish_run(clean_db, stack_settings, model_version="rules-v1", as_of=date(2022, 5, 1),
                with_strategies=False)  # fmt: skip
    cur = read_current_regime(r)
    assert cur is not None and (cur.as_of, cur.regime) == (date(2022, 6, 1), "bear")
    ttl = r.ttl(REGIME_CURRENT_KEY)
    assert 0 < ttl <= 21600
    assert json.loads(r.get(REGIME_CURRENT_KEY))["indicators"]["vix"] == 15.0  # type: ignore[arg-type]


def test_range_persist_emits_changes_in_order_once(clean_db: Engine) -> None:
    from bloasis.pipeline import persist_regime_range

    _seed_run(clean_db)
    d0 = date(2032, 1, 5)
    labels = ["bull", "bull", "bear", "crisis", "crisis", "recovery"]
    days = [regime(d0 + timedelta(days=i), lab) for i, lab in enumerate(labels)]
    # Days 0-2 arrive one by one first; the range then adds only 3-5, judged against day 2.
    for r in days[:3]:
        persist_regime(clean_db, r)
    out = persist_regime_range(clean_db, days)
    assert (out.inserted, out.existing) == (3, 3)
    with clean_db.connect() as conn:
        rows = conn.execute(
            select(OutboxRow.payload)
            .where(OutboxRow.event_id.like("%2032-01-%"))
            .order_by(OutboxRow.id)
        ).all()
    kinds = [
        (
            json.loads(p).get("previous_regime"),
            json.loads(p).get("new_regime"),
            json.loads(p).get("alert_type"),
            json.loads(p).get("historical"),
        )
        for (p,) in rows
    ]
    # A range is history (a backfill, a warm-up): its changes say so, and entering crisis
    # raises no alert (the live days 0-2 raised theirs as they came).
    assert kinds == [
        ("", "bull", None, False),
        ("bull", "bear", None, False),
        ("bear", "crisis", None, True),
        ("crisis", "recovery", None, True),
    ]
    assert persist_regime_range(clean_db, days) == type(out)(0, 6, 0)


async def test_relay_defers_full_collections_to_the_end_of_the_run(
    clean_db: Engine, stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claimed rows outlive the young GC generations, and full collections (a rescan of the
    whole heap each) cost a fifth of a 100,000-event relay: in a relay process of its own none
    runs during a relay, the young ones run after each batch, and the GC's state is put back."""
    from bloasis.publish import relay

    bootstrap = stack_settings.require("kafka_bootstrap_servers")
    await ensure_topics(bootstrap)
    collections: list[int] = []
    during: list[bool] = []
    send = relay._send_batch

    async def watched(producer: object, batch: list[outbox.PendingEvent]) -> None:
        during.append(gc.isenabled())
        await send(producer, batch)  # type: ignore[arg-type]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    monkeypatch.setattr(relay, "_send_batch", watched)
    events = [outbox.OutboxEvent(f"gc-{i}", REGIME_TOPIC, "regime", "{}") for i in range(30)]
    for gc_on in (True, False):
        with clean_db.begin() as conn:
            conn.execute(OutboxRow.__table__.delete())
            outbox.enqueue(conn, events)
        during.clear()
        (gc.enable if gc_on else gc.disable)()
        gc.callbacks.append(on_gc)
        try:
            collections.clear()
            # As `bloasis relay` runs it, a process of its own (in a flow's process GC is left
            # alone: tests/test_no_silent_degradation.py).
            stats = await relay_pending(
                clean_db, bootstrap, idempotence=False, batch_size=10, own_process=True
            )
            assert gc.isenabled() is gc_on
        finally:
            gc.callbacks.remove(on_gc)
            gc.enable()
        assert (stats.published, stats.batches) == (30, 3)
        assert during == [False, False, False]
        assert 2 not in collections and collections.count(1) >= 3, collections
