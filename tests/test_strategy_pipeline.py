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
from bloasis.pipeline import PipelineError, compute_regime, persist_regime
from bloasis.publish.cache import (
    REGIME_CURRENT_KEY,
    USERS_VERSION_KEY,
    sectors_key,
    strategy_key,
    user_key,
    write_run_keys,
    write_user_keys,
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


def _users(
    engine: Engine, tier: strategy_run.TierOutcome, run_id: uuid.UUID = RUN
) -> tuple[strategy_run.UsersOutcome, dict[str, str]]:
    """The run's users in chunks of 70 (id ranges, as the daily run slices them): their
    outcome and the Redis values each chunk would cache."""
    from datetime import UTC, datetime

    outcomes, values = [], {}
    for part in strategy_run.user_slices(engine, None, 70):
        chunk = strategy_run.derive_chunk(
            tier.books,
            strategy_run.load_slice(engine, part),
            run_id=run_id,
            model_version=MODEL.version,
            computed_at=datetime.now(UTC),
        )
        got = strategy_run.store_chunk(engine, chunk)
        outcomes.append(got.outcome)
        values.update(got.redis)
    return strategy_run.UsersOutcome.total(outcomes), values


@pytest.fixture
def seeded(clean_db: Engine) -> Engine:
    with clean_db.begin() as conn:
        for run_id in (RUN, uuid.UUID(int=78), uuid.UUID(int=79)):  # the run, two reruns
            runs.start_run(
                conn, run_id=run_id, flow="test", trigger="manual", as_of=DAY, parameters={},
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
    users, values = _users(seeded, tier)
    assert (users.users, users.written, users.events) == (300, 300, 300)
    assert tier.signal_events == sum(len(b.strategy.signals) for b in tier.books.values())
    assert users.signal_events >= 300  # one per signal of each user (every one has some)
    assert _count(seeded, UserStrategyRow) == 300

    # The same run's chunks again (a retried task): counted as that run's, nothing written.
    outbox_n = _count(seeded, OutboxRow)
    retried, _ = _users(seeded, tier)
    assert (retried.written, retried.events, retried.signal_events) == (
        300, 300, users.signal_events
    )  # fmt: skip
    assert _count(seeded, OutboxRow) == outbox_n and _count(seeded, UserStrategyRow) == 300

    # Rerun (another run): nothing new stored, no new events.
    tier2 = _run_tiers(seeded, md, DAY)
    users2, values2 = _users(seeded, tier2, uuid.UUID(int=78))
    assert (tier2.sectors_inserted, tier2.strategies_inserted, tier2.events) == (False, 0, 0)
    assert tier2.stale_books == {}  # the stored books equal the recomputed ones
    assert (users2.written, users2.events, tier2.signal_events, users2.signal_events) == (0,) * 4
    assert _count(seeded, OutboxRow) == outbox_n
    assert values2 == values and len(values) == 300  # same values, same provenance

    # A preferences update marks that user: the next run recomputes exactly them.
    with seeded.begin() as conn:
        store.upsert_preferences(
            conn, UserPreferences("sp000", "aggressive", excluded_sectors=("Financials",))
        )
    users3, _ = _users(seeded, tier2, uuid.UUID(int=79))
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
    """Each chunk writes its users under the run's version; the switch sets the shared keys
    and the pointer to that version in one MULTI/EXEC."""
    from datetime import UTC, datetime

    tier = _run_tiers(seeded, md, DAY)
    settings = stack_settings.model_copy(update={"model_version": MODEL.version})
    url = stack_settings.require("redis_url")
    r = redis.Redis.from_url(url)
    r.delete(USERS_VERSION_KEY)
    version = strategy_run.users_cache_version(url, RUN, every_user=True)
    assert version == RUN.hex[-12:]
    job = strategy_run.UsersJob(RUN, MODEL.version, datetime.now(UTC), cache_version=version)
    parts = strategy_run.user_slices(seeded, None, 128)
    assert [(p.first, p.before) for p in parts] == [
        ("sp000", "sp128"), ("sp128", "sp256"), ("sp256", None)
    ]  # fmt: skip
    outs = [
        strategy_run.derive_store_cache(seeded, tier.books, p, job, redis_url=url, ttl=600)
        for p in parts
    ]
    assert [o.users for o in outs] == [o.cached for o in outs] == [128, 128, 44]
    assert r.get(USERS_VERSION_KEY) is None  # written, not yet visible to readers
    status = strategy_run.publish_run(
        seeded, settings, model_version=MODEL.version, as_of=DAY, with_strategies=True,
        users_version=version,
    )  # fmt: skip
    assert status.startswith(f"{1 + 1 + 3 + 1} Redis keys switched (current)")
    assert r.get(USERS_VERSION_KEY) == version.encode()
    for key in [REGIME_CURRENT_KEY, sectors_key("crisis"), *map(strategy_key, PROFILES)]:
        assert 0 < r.ttl(key) <= 86400, key
    assert 0 < r.ttl(USERS_VERSION_KEY) <= 86400
    assert 0 < r.ttl(user_key("sp001", version)) <= 600
    u = json.loads(r.get(user_key("sp001", version)))  # type: ignore[arg-type]
    assert u["as_of"] == DAY.isoformat() and u["user_id"] == "sp001" and u["signals"]
    assert set(u["signals"][0]) == {"symbol", "action", "weight"}  # the rest is the book's
    assert u["profile_strategy_id"].endswith(f":{DAY}:{MODEL.version}")
    cons = json.loads(r.get(strategy_key("conservative")))  # type: ignore[arg-type]
    assert cons["as_of"] == DAY.isoformat() and cons["signals"][0]["entry_price"]
    # The next run's version: once switched, the previous version's keys expire soon (not at
    # their TTL), so two versions share Redis memory only for a while.
    nxt = uuid.UUID(int=78)
    job2 = strategy_run.UsersJob(nxt, MODEL.version, datetime.now(UTC), cache_version=nxt.hex[-12:])
    for p in parts:
        strategy_run.derive_store_cache(seeded, tier.books, p, job2, redis_url=url, ttl=600)
    status = strategy_run.publish_run(
        seeded, settings, model_version=MODEL.version, as_of=DAY, with_strategies=True,
        users_version=nxt.hex[-12:],
    )  # fmt: skip
    assert status.endswith("the previous version's 300 user keys expire in 300 s"), status
    assert 0 < r.ttl(user_key("sp001", version)) <= 300
    assert r.ttl(user_key("sp001", nxt.hex[-12:])) > 300
    version = nxt.hex[-12:]
    # A run over some users writes into the current version, in place.
    assert strategy_run.users_cache_version(url, uuid.uuid4(), every_user=False) == version
    r.delete(USERS_VERSION_KEY)
    fresh = uuid.uuid4()
    assert strategy_run.users_cache_version(url, fresh, every_user=False) == fresh.hex[-12:]


def test_readers_never_mix_two_runs_users(stack_settings: Settings) -> None:
    """User keys written in plain pipelines under each run's version, the pointer switched with
    the regime in one MULTI/EXEC: a reader that resolves the pointer with the regime (MGET)
    and then reads a user's key always sees that user from the regime's run."""
    url = stack_settings.require("redis_url")
    r = redis.Redis.from_url(url)
    users = [f"mix{i:03d}" for i in range(300)]
    stop = threading.Event()
    seen: list[tuple[bytes | None, bytes | None]] = []

    def reader() -> None:
        rr = redis.Redis.from_url(url)
        i = 0
        while not stop.is_set():
            regime, version = rr.mget(["mix:regime", USERS_VERSION_KEY])
            if version is not None:
                user = users[i % len(users)]
                seen.append((regime, rr.get(user_key(user, version.decode()))))
            i += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for run in range(20):
            version = f"mixrun{run}"
            write_user_keys(r, version, [(u, f"run{run}") for u in users], 60, per_pipeline=50)
            write_run_keys(r, {"mix:regime": (f"run{run}", 60), USERS_VERSION_KEY: (version, 60)})
    finally:
        stop.set()
        t.join(10)
    r.delete("mix:regime", USERS_VERSION_KEY, *(user_key(u, f"mixrun{n}") for u in users
                                                for n in range(20)))  # fmt: skip
    assert len(seen) > 10
    assert [s for s in seen if s[0] != s[1]] == []  # never another run's user, never missing


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


def test_no_users_no_slices(clean_db: Engine) -> None:
    """A deployment without users yet: nothing to derive (the slicing used to fail on it)."""
    assert strategy_run.user_slices(clean_db, None, 100) == []


def test_user_slices_of_named_users_refuse_unknown_ones(seeded: Engine) -> None:
    parts = strategy_run.user_slices(seeded, ["sp007", "sp002", "sp005", "sp002"], 2)
    assert [p.ids for p in parts] == [("sp002", "sp005"), ("sp007",)]  # sorted, once each
    with pytest.raises(PipelineError, match="unknown users: nobody, zed"):
        strategy_run.user_slices(seeded, ["sp001", "zed", "nobody"], 2)


def test_a_chunk_with_redis_unreachable_is_stored_and_says_its_keys_are_not_cached(
    seeded: Engine, md: MarketData
) -> None:
    from datetime import UTC, datetime

    from bloasis.stack import _pick_port

    tier = _run_tiers(seeded, md, DAY)
    job = strategy_run.UsersJob(RUN, MODEL.version, datetime.now(UTC), cache_version="v1")
    part = strategy_run.UserSlice("sp000", "sp010")
    nowhere = f"redis://127.0.0.1:{_pick_port(set())}/0"  # nothing listens there
    out = strategy_run.derive_store_cache(seeded, tier.books, part, job, redis_url=nowhere, ttl=60)
    assert (out.users, out.written, out.events, out.cached) == (10, 10, 10, 0)
    assert len(out.cache_errors) == 1 and "ConnectionError" in out.cache_errors[0]
    assert _count(seeded, UserStrategyRow) == 10


def test_the_switch_stands_when_expiring_the_previous_version_fails(
    seeded: Engine, md: MarketData, stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis failing after the switch (while the previous version's keys are being shortened)
    leaves a switched run, not one reported as "redis unavailable" (nor its NOTIFY unsent)."""
    _run_tiers(seeded, md, DAY)
    settings = stack_settings.model_copy(update={"model_version": MODEL.version})
    r = redis.Redis.from_url(stack_settings.require("redis_url"))
    r.set(USERS_VERSION_KEY, "older", ex=60)

    def gone(*_a: object, **_k: object) -> int:
        raise redis.ConnectionError("Connection reset by peer (injected)")

    monkeypatch.setattr(strategy_run, "expire_users_version", gone)
    status = strategy_run.publish_run(
        seeded, settings, model_version=MODEL.version, as_of=DAY, with_strategies=True,
        users_version="newer",
    )  # fmt: skip
    assert status == f"{1 + 1 + 3 + 1} Redis keys switched (current)"
    assert r.get(USERS_VERSION_KEY) == b"newer"
    r.delete(USERS_VERSION_KEY)
