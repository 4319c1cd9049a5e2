"""Tier 2/3 pipeline steps against the real stack: stored once, events once, user
recomputation driven by preference versions, Redis keys switched together."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import date

import pytest
import redis
from sqlalchemy import Engine, func, select

from bloasis import strategy_run
from bloasis.config import Settings
from bloasis.marketdata import MarketData
from bloasis.marketdata.sources import EmbeddedSource
from bloasis.pipeline import compute_regime, persist_regime
from bloasis.publish.cache import (
    REGIME_CURRENT_KEY,
    sectors_key,
    strategy_key,
    user_key,
    write_run_keys,
)
from bloasis.publish.events import STRATEGY_TOPIC
from bloasis.publish.relay import relay_pending
from bloasis.regime.model import DEFAULT_PARAMS, RegimeModel
from bloasis.store import runs
from bloasis.store import strategies as store
from bloasis.store.models import (
    OutboxRow,
    PickRow,
    SectorScoreRow,
    SignalRow,
    StrategyRow,
    UserStrategyRow,
)
from bloasis.strategy.types import PROFILES, UserPreferences
from bloasis.users import random_population, seed_population
from tests.kafka_util import consume_all

MODEL = RegimeModel(DEFAULT_PARAMS, "regime-v2-test-strategy-pipeline")
RUN = uuid.UUID(int=77)
DAY = date(2008, 10, 15)


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _run_tiers(engine: Engine, md: MarketData, day: date) -> strategy_run.TierOutcome:
    regime = persist_regime(
        engine, compute_regime(md, day, trigger="manual", run_id=RUN, model=MODEL)
    ).stored
    return strategy_run.compute_and_store_tiers(engine, md, regime, run_id=RUN, top_n=15)


def _users(engine: Engine, tier: strategy_run.TierOutcome) -> strategy_run.UsersOutcome:
    from datetime import UTC, datetime

    prefs = strategy_run.load_users(engine)
    chunks = [
        strategy_run.derive_chunk(
            tier.books, c, run_id=RUN, model_version=MODEL.version, computed_at=datetime.now(UTC)
        )
        for c in strategy_run.chunks_of(prefs, 70)
    ]
    return strategy_run.store_user_chunks(engine, chunks)


@pytest.fixture
def seeded(clean_db: Engine) -> Engine:
    with clean_db.begin() as conn:
        runs.start_run(
            conn, run_id=RUN, flow="test", trigger="manual", as_of=DAY, parameters={},
            data_source="embedded", data_snapshot_hash="", code_version="t",
            model_version=MODEL.version,
        )  # fmt: skip
    seed_population(clean_db, random_population(300, seed=4, prefix="sp"))
    return clean_db


def test_tiers_and_users_stored_once_with_events(
    seeded: Engine, md: MarketData, stack_settings: Settings
) -> None:
    tier = _run_tiers(seeded, md, DAY)
    assert tier.sectors_inserted and tier.strategies_inserted == 3 and tier.events == 3
    assert _count(seeded, SectorScoreRow) == 11 and _count(seeded, StrategyRow) == 3
    assert _count(seeded, PickRow) == sum(len(b.strategy.picks) for b in tier.books.values())
    assert _count(seeded, SignalRow) == sum(len(b.strategy.signals) for b in tier.books.values())
    users = _users(seeded, tier)
    assert (users.users, users.written, users.events) == (300, 300, 300)
    assert tier.signal_events == sum(len(b.strategy.signals) for b in tier.books.values())
    assert users.signal_events >= 300  # one per signal of each user (every one has some)
    assert _count(seeded, UserStrategyRow) == 300

    # Rerun: nothing new stored, no new events.
    outbox_n = _count(seeded, OutboxRow)
    tier2 = _run_tiers(seeded, md, DAY)
    users2 = _users(seeded, tier2)
    assert (tier2.sectors_inserted, tier2.strategies_inserted, tier2.events) == (False, 0, 0)
    assert tier2.stale_books == {}  # the stored books equal the recomputed ones
    assert (users2.written, users2.events, tier2.signal_events, users2.signal_events) == (0,) * 4
    assert _count(seeded, OutboxRow) == outbox_n
    assert users2.redis == users.redis  # same values, same provenance

    # A preferences update marks that user: the next run recomputes exactly them.
    with seeded.begin() as conn:
        store.upsert_preferences(
            conn, UserPreferences("sp000", "aggressive", excluded_sectors=("Financials",))
        )
    users3 = _users(seeded, tier2)
    assert (users3.written, users3.events) == (1, 1)
    with seeded.connect() as conn:
        rec = store.get_user_strategy(conn, MODEL.version, "sp000", DAY)
    assert rec is not None and rec.preferences_version == 2
    assert rec.profile_strategy_id.startswith("aggressive:")
    assert all(p["sector"] != "Financials" for p in rec.positions)

    # Events on the broker: one per strategy id, the update as a new versioned event.
    bootstrap = stack_settings.require("kafka_bootstrap_servers")
    stats = asyncio.run(relay_pending(seeded, bootstrap, idempotence=False))
    assert stats.pending == 0
    every = [
        e for e in asyncio.run(consume_all(bootstrap, STRATEGY_TOPIC)) if MODEL.version in e.key
    ]
    got = [e for e in every if e.headers["event_type"] == "strategy_signal"]
    ids = [e.headers["event_id"] for e in got]
    assert len(ids) == len(set(ids)) == 3 + 300 + 1
    # Beside them, one event per signal (the original contract's executor), keyed alike.
    per_symbol = [
        json.loads(e.value) for e in every if e.headers["event_type"] != "strategy_signal"
    ]
    by_parent = {ev["event_id"]: ev for ev in (json.loads(e.value) for e in got)}
    assert per_symbol and len({ev["event_id"] for ev in per_symbol}) == len(per_symbol)
    for ev in per_symbol:
        parent = by_parent[ev["event_id"].rsplit(":", 1)[0]]
        assert ev["symbol"] in {g["symbol"] for g in parent["signals"]}
        assert ev["strategy_id"] == parent["strategy_id"]
    assert len(per_symbol) == sum(len(p["signals"]) for p in by_parent.values())
    sp0 = [json.loads(e.value) for e in got if e.key.startswith("user:sp000:")]
    assert [ev["event_id"].rsplit(":", 1)[1] for ev in sp0] == ["v1", "v2"]
    assert len({e.partition for e in got if e.key.startswith("user:sp000:")}) == 1
    conservative = next(json.loads(e.value) for e in got if e.key.startswith("conservative:"))
    assert conservative["signals"] and conservative["signals"][0]["entry_price"]


def test_redis_keys_switch_together(
    seeded: Engine, md: MarketData, stack_settings: Settings
) -> None:
    tier = _run_tiers(seeded, md, DAY)
    users = _users(seeded, tier)
    settings = stack_settings.model_copy(update={"model_version": MODEL.version})
    r = redis.Redis.from_url(stack_settings.require("redis_url"))
    status = strategy_run.publish_run(
        seeded, settings, model_version=MODEL.version, as_of=DAY, with_strategies=True,
        users=users,
    )  # fmt: skip
    assert status.startswith(f"{1 + 1 + 3 + 300} Redis keys switched (current)")
    for key in [REGIME_CURRENT_KEY, sectors_key("crisis"), *map(strategy_key, PROFILES)]:
        assert 0 < r.ttl(key) <= 86400, key
    u = json.loads(r.get(user_key("sp001")))  # type: ignore[arg-type]
    assert u["as_of"] == DAY.isoformat() and u["picks"] == []
    assert u["profile_strategy_id"].endswith(f":{DAY}:{MODEL.version}")
    cons = json.loads(r.get(strategy_key("conservative")))  # type: ignore[arg-type]
    assert cons["as_of"] == DAY.isoformat() and cons["signals"][0]["entry_price"]


def test_readers_never_see_two_runs_mixed(stack_settings: Settings) -> None:
    """MULTI/EXEC switches a run's keys at once: a reader's MGET always sees one run."""
    r = redis.Redis.from_url(stack_settings.require("redis_url"))
    keys = ["mix:regime", "mix:strategy", "mix:user"]
    stop = threading.Event()
    seen: set[tuple[bytes | None, ...]] = set()

    def reader() -> None:
        rr = redis.Redis.from_url(stack_settings.require("redis_url"))
        while not stop.is_set():
            seen.add(tuple(rr.mget(keys)))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            write_run_keys(r, {k: (f"run{i}", 60) for k in keys})
    finally:
        stop.set()
        t.join(10)
    r.delete(*keys)
    mixed = [v for v in seen if len(set(v)) != 1]
    assert len(seen) > 10 and mixed == []
