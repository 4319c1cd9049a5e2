"""Faults against the real embedded stack: the broker, Redis or PostgreSQL stopped before or during
a run, a relay or a run killed with SIGKILL, two runs of one as-of at once.

What is promised (README "Faults"): a run whose results committed completes whatever Redis and
Kafka do; events wait in the outbox and reach the broker once each by event id, in order per key;
a crash between the broker's ack and the outbox commit re-sends (at-least-once) and consumers
deduplicate on the `event_id` header; Redis is repaired by the next run; a run that loses
PostgreSQL fails after its retries with nothing in Redis or Kafka, and a rerun finishes it; one
run per (model version, as-of) writes at a time.

Every test uses its own model version (event ids, strategy ids and rows carry it), stops servers
through a child process (forking from a process with live gRPC threads can crash) and restarts
them in `finally`: the stack is shared by the whole session.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine, func, select, text

from bloasis import pipeline, strategy_run
from bloasis.config import Settings
from bloasis.pb.v2 import market_regime_pb2 as mr_pb
from bloasis.pb.v2 import strategy_pb2 as st_pb
from bloasis.pb.v2 import strategy_pb2_grpc as st_grpc
from bloasis.publish.cache import (
    REGIME_CURRENT_KEY,
    USERS_VERSION_KEY,
    make_redis,
    strategy_key,
    user_key,
)
from bloasis.publish.events import ALERT_TOPIC, REGIME_TOPIC, STRATEGY_TOPIC
from bloasis.publish.relay import RelayError, relay_pending
from bloasis.publish.topics import TOPICS, list_topics
from bloasis.serve.classification_v2 import SERVICE as CLASSIFICATION_SERVICE
from bloasis.serve.server import CACHE_HEALTH_NAME, MARKET_REGIME_SERVICE_NAME
from bloasis.serve.strategy_v2 import SERVICE as STRATEGY_SERVICE
from bloasis.store import outbox, runs
from bloasis.store.models import (
    OutboxRow,
    PipelineRun,
    RegimeRow,
    SectorAnalysisRow,
    StrategyRow,
    UserStrategyRow,
)
from bloasis.store.regimes import insert_regimes
from bloasis.strategy.types import PROFILES
from bloasis.users import random_population, seed_population
from tasks.common import is_transient
from tests.factories import regime
from tests.grpc_harness import Harness
from tests.kafka_util import consume_all
from tests.test_grpc import _code_of, _until

CLASSIFICATION_SERVICE_NAME = CLASSIFICATION_SERVICE.full_name
STRATEGY_SERVICE_NAME = STRATEGY_SERVICE.full_name

pytestmark = pytest.mark.fault

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
API_SERVICES = ("", MARKET_REGIME_SERVICE_NAME, CLASSIFICATION_SERVICE_NAME, STRATEGY_SERVICE_NAME)
TOPIC_NAMES = (REGIME_TOPIC, ALERT_TOPIC, STRATEGY_TOPIC)


# --- helpers ---------------------------------------------------------------------------------


def _stack(action: str, service: str, state_dir: Path) -> None:
    """`stack.stop_service`/`start_service` (same port) in a child process."""
    code = (
        "import sys; from pathlib import Path; from bloasis import stack; "
        "getattr(stack, sys.argv[1] + '_service')(sys.argv[2], Path(sys.argv[3]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, action, service, str(state_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{action} {service}: {proc.stderr[-2000:]}"


def _model_version(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> str:
    """A fresh model version for the flows this test runs (and the state dir they read)."""
    mv = f"regime-v2-fault-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("BLOASIS_STATE_DIR", str(state_dir))
    monkeypatch.setenv("BLOASIS_MODEL_VERSION", mv)
    return mv


def _seed_users(engine: Engine, n: int, prefix: str) -> list[str]:
    prefs = random_population(n, seed=5, prefix=prefix)
    seed_population(engine, prefs)
    return [p.user_id for p in prefs]


def _count(engine: Engine, model: type, *where: Any) -> int:
    with engine.connect() as conn:
        q = select(func.count()).select_from(model)
        return int(conn.execute(q.where(*where) if where else q).scalar_one())


def _rows(engine: Engine, mv: str) -> dict[str, int]:
    """What the store holds for one model version (the events carry it in their ids)."""
    ours = OutboxRow.event_id.like(f"%{mv}%")
    return {
        "regimes": _count(engine, RegimeRow, RegimeRow.model_version == mv),
        "sector_analyses": _count(engine, SectorAnalysisRow, SectorAnalysisRow.model_version == mv),
        "strategies": _count(engine, StrategyRow, StrategyRow.model_version == mv),
        "user_strategies": _count(engine, UserStrategyRow, UserStrategyRow.model_version == mv),
        "events": _count(engine, OutboxRow, ours),
        "pending": _count(engine, OutboxRow, ours, OutboxRow.published_at.is_(None)),
    }


def _run_statuses(engine: Engine, mv: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(PipelineRun.id, PipelineRun.status).where(
                PipelineRun.model_version == mv, PipelineRun.flow == "daily-pipeline"
            )
        ).all()
    return {str(r.id): r.status for r in rows}


def _get_run(engine: Engine, run_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        got = runs.get_run(conn, uuid.UUID(run_id))
    assert got is not None
    return got


@dataclass(frozen=True)
class Delivery:
    expected: int  # events in the outbox
    delivered: int  # records read back from the topics
    unique: int  # distinct event ids among them
    duplicated: int  # records repeating an event id already read


def _delivery(engine: Engine, bootstrap: str, marker: str) -> Delivery:
    """Read every topic back and check the events whose id contains `marker` against the outbox:
    each one delivered, nothing foreign, and per (topic, key) the first copies in outbox order."""
    got = [
        e
        for topic in TOPIC_NAMES
        for e in asyncio.run(consume_all(bootstrap, topic))
        if marker in e.headers.get("event_id", "")
    ]
    seen: set[str] = set()
    read: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in got:
        eid = e.headers["event_id"]
        if eid not in seen:  # what a consumer deduplicating on the header keeps
            seen.add(eid)
            read[(e.topic, e.key)].append(eid)
    with engine.connect() as conn:
        rows = conn.execute(
            select(OutboxRow.event_id, OutboxRow.topic, OutboxRow.key)
            .where(OutboxRow.event_id.like(f"%{marker}%"))
            .order_by(OutboxRow.id)
        ).all()
    want: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in rows:
        want[(r.topic, r.key)].append(r.event_id)
    assert dict(read) == dict(want)  # in order per key; none missing, none foreign
    return Delivery(len(rows), len(got), len(seen), len(got) - len(seen))


@pytest.fixture
def kafka(stack_settings: Settings) -> str:
    return stack_settings.require("kafka_bootstrap_servers")


def _redis_values(r: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key's value (TTLs tick; values only change when someone writes)."""
    return {k: r.get(k) for k in r.keys("*")}


def _report(name: str, **figures: Any) -> None:
    # Shown with -s (or -rA); the closing note of issue 5 quotes these.
    print(f"\n[fault] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


async def _health(ch: grpc.aio.Channel, name: str) -> int:
    resp = await health_pb2_grpc.HealthStub(ch).Check(
        health_pb2.HealthCheckRequest(service=name), timeout=5
    )
    return int(resp.status)


async def _health_is(ch: grpc.aio.Channel, names: tuple[str, ...], status: int) -> bool:
    return all([await _health(ch, n) == status for n in names])


# --- 1. broker down --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_broker_down_runs_complete_and_the_relay_delivers_every_event_once(
    prefect_harness: None,
    clean_db: Engine,
    kafka: str,
    stack_settings: Settings,
    stack_state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.pipeline import daily_pipeline
    from flows.relay import outbox_relay

    mv = _model_version(monkeypatch, stack_state_dir)
    users = _seed_users(clean_db, 12, "bk")
    cli_env = dict(os.environ)  # with this test's state dir and model version
    r = make_redis(stack_settings.require("redis_url"))
    _stack("stop", "kafka", stack_state_dir)
    try:
        # Before: the broker is down for the whole run.
        first = asyncio.run(daily_pipeline(as_of=date(2020, 3, 16), trigger="manual"))
        # During: up when the run starts, gone by the time it relays.
        _stack("start", "kafka", stack_state_dir)
        store_chunk = strategy_run.store_chunk

        def stop_broker_then_store(*args: Any, **kwargs: Any) -> strategy_run.StoredChunk:
            _stack("stop", "kafka", stack_state_dir)
            return store_chunk(*args, **kwargs)

        monkeypatch.setattr(strategy_run, "store_chunk", stop_broker_then_store)
        second = asyncio.run(daily_pipeline(as_of=date(2020, 3, 17), trigger="manual"))
        monkeypatch.setattr(strategy_run, "store_chunk", store_chunk)

        for out in (first, second):
            assert out["relay"].startswith("broker unavailable, events pending"), out["relay"]
            assert "Redis keys switched (current)" in out["cache"]
            run = _get_run(clean_db, out["run_id"])
            assert run["status"] == "completed", run["error"]
            assert run["timings"]["relay_s"] < 10  # 3 bounded attempts, then it gives up
        rows = _rows(clean_db, mv)
        assert rows | {"events": 0, "pending": 0} == {
            "regimes": 2, "sector_analyses": 2, "strategies": 6, "user_strategies": 24,
            "events": 0, "pending": 0,
        }  # fmt: skip
        queued = sum(
            o["events_queued"] + 3 + o["user_events_queued"] + o["signal_events_queued"]
            for o in (first, second)
        )
        assert rows["events"] == rows["pending"] == queued  # every event waits in the outbox
        cached = json.loads(r.get(REGIME_CURRENT_KEY) or b"{}")
        assert (cached["as_of"], cached["model_version"]) == ("2020-03-17", mv)
        version = (r.get(USERS_VERSION_KEY) or b"").decode()
        assert version == uuid.UUID(second["run_id"]).hex[-12:]
        assert all(r.exists(user_key(u, version)) for u in users)

        # The relay on its own, broker still down: a clear error, bounded, nothing lost.
        t0 = time.monotonic()
        down = subprocess.run(
            [sys.executable, "-m", "bloasis.cli", "relay", "--once"],
            env=cli_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        cli_down_s = time.monotonic() - t0
        assert down.returncode == 1, down.stderr[-2000:]
        assert f"unavailable after 3 attempts; {queued} events stay in the outbox" in down.stderr
        assert cli_down_s < 20  # interpreter start + 3 attempts with 0.5/1 s backoff
        t0 = time.monotonic()
        with pytest.raises(RelayError, match="unavailable after 2 attempts"):
            asyncio.run(relay_pending(clean_db, kafka, idempotence=False, attempts=2))
        relay_down_s = time.monotonic() - t0
        assert relay_down_s < 5 and _rows(clean_db, mv)["pending"] == queued
    finally:
        _stack("start", "kafka", stack_state_dir)
        r.close()

    # A restarted Tansu keeps nothing: the relay creates the topics again.
    assert not set(asyncio.run(list_topics(kafka))) & set(TOPIC_NAMES)
    part = subprocess.run(
        [sys.executable, "-m", "bloasis.cli", "relay", "--once", "--max-events", "10"],
        env=cli_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert part.returncode == 0 and part.stdout.startswith("published 10 events"), part.stderr
    rest = asyncio.run(outbox_relay())
    assert rest["published"] == queued - 10 and rest["pending"] == 0
    assert asyncio.run(relay_pending(clean_db, kafka, idempotence=False)).published == 0
    topics = asyncio.run(list_topics(kafka))
    assert all(topics[t.name] == t.partitions for t in TOPICS)

    got = _delivery(clean_db, kafka, mv)
    assert (got.expected, got.delivered, got.unique, got.duplicated) == (queued, queued, queued, 0)
    _report(
        "broker down",
        expected=got.expected, delivered=got.delivered, duplicated=got.duplicated,
        relay_down_s=f"{relay_down_s:.1f}", cli_relay_down_s=f"{cli_down_s:.1f}",
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_relay_killed_between_ack_and_commit_resends_and_consumers_dedupe(
    clean_db: Engine, kafka: str, stack_state_dir: Path
) -> None:
    """At-least-once: the broker acknowledged a batch, the relay died before marking it
    published. The next relay sends it again; the `event_id` header tells the copies apart."""
    tag = f"fault-kill-{uuid.uuid4().hex[:8]}"
    events = [
        outbox.OutboxEvent(
            f"{tag}:{i}", STRATEGY_TOPIC, f"k{i % 4}", json.dumps({"i": i}),
            {"event_id": f"{tag}:{i}", "event_type": "test"},
        )
        for i in range(60)
    ]  # fmt: skip
    with clean_db.begin() as conn:
        outbox.enqueue(conn, events)
    child = (
        "import asyncio, os, signal\n"
        "from bloasis.config import load_settings\n"
        "from bloasis.publish.relay import relay_pending\n"
        "from bloasis.store import outbox\n"
        "from bloasis.store.db import get_engine\n"
        "def die(conn, ids):  # acknowledged by the broker; the commit never happens\n"
        "    print('ACKED', len(ids), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "outbox.mark_published = die\n"
        "s = load_settings()\n"
        "asyncio.run(relay_pending(get_engine(s), s.require('kafka_bootstrap_servers'),\n"
        "                          idempotence=False, batch_size=25))\n"
    )
    env = {**os.environ, "BLOASIS_STATE_DIR": str(stack_state_dir)}
    proc = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL and "ACKED 25" in proc.stdout, proc.stderr[-2000:]
    with clean_db.connect() as conn:
        assert outbox.backlog(conn) == 60  # its transaction died with it: nothing marked

    # The next relay waits for the dead session's locks to go (lock_relay), then sends all.
    stats = asyncio.run(relay_pending(clean_db, kafka, idempotence=False))
    assert (stats.published, stats.pending) == (60, 0)
    got = _delivery(clean_db, kafka, tag)  # order per key holds for the deduplicated stream
    assert (got.expected, got.delivered, got.unique, got.duplicated) == (60, 85, 60, 25)
    _report(
        "relay SIGKILL after ack",
        expected=got.expected, delivered=got.delivered, unique=got.unique,
        duplicated=got.duplicated,
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_two_relays_at_once_deliver_each_event_once_in_key_order(
    clean_db: Engine, kafka: str
) -> None:
    tag = f"fault-two-{uuid.uuid4().hex[:8]}"
    with clean_db.begin() as conn:
        outbox.enqueue(
            conn,
            [
                outbox.OutboxEvent(
                    f"{tag}:{i}", STRATEGY_TOPIC, f"k{i % 5}", "{}", {"event_id": f"{tag}:{i}"}
                )
                for i in range(400)
            ],
        )

    def relay() -> int:
        return asyncio.run(
            relay_pending(clean_db, kafka, idempotence=False, batch_size=40)
        ).published

    with ThreadPoolExecutor(2) as pool:
        published = list(pool.map(lambda _: relay(), range(2)))
    assert sum(published) == 400
    got = _delivery(clean_db, kafka, tag)
    assert (got.expected, got.delivered, got.duplicated) == (400, 400, 0)


# --- 2. Redis down ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_redis_down_run_completes_cache_degraded_and_the_next_run_repairs_it(
    prefect_harness: None,
    clean_db: Engine,
    stack_settings: Settings,
    stack_state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    harness: Harness,
) -> None:
    from flows.pipeline import daily_pipeline

    mv = _model_version(monkeypatch, stack_state_dir)
    users = _seed_users(clean_db, 6, "rd")
    s = stack_settings.model_copy(update={"model_version": mv})
    srv, regime_stub = await harness.start(s)
    ch = harness.channel(srv)
    strategy_stub = st_grpc.StrategyServiceStub(ch)
    assert await _health_is(ch, (*API_SERVICES, CACHE_HEALTH_NAME), SERVING)
    r = make_redis(s.require("redis_url"))
    keys = [REGIME_CURRENT_KEY, *(strategy_key(p) for p in PROFILES), USERS_VERSION_KEY]
    day = date(2022, 12, 28)

    await asyncio.to_thread(_stack, "stop", "redis", stack_state_dir)
    try:
        # Degraded, not down: only the cache's health name changes.
        await _until(lambda: _health_is(ch, (CACHE_HEALTH_NAME,), NOT_SERVING), "degraded", 5)
        assert await _health_is(ch, API_SERVICES, SERVING)

        out = await asyncio.to_thread(asyncio.run, daily_pipeline(as_of=day, trigger="manual"))
        assert out["cache"] == "redis unavailable" and out["inserted"] is True
        assert out["users"] == 6 and out["user_keys_cached"] == 0  # said, not silent
        assert out["relay"].startswith("published")  # events do not depend on Redis
        run = _get_run(clean_db, out["run_id"])
        assert run["status"] == "completed" and run["result"]["cache"] == "redis unavailable"

        # Reads: the snapshot (kept fresh by NOTIFY), users from PostgreSQL.
        async def current_as_of() -> str:
            resp = await regime_stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
            return str(resp.regime.as_of)

        await _until(lambda: _eq(current_as_of(), day.isoformat()), "the new regime", 10)
        prof = await strategy_stub.GetStrategy(
            st_pb.GetStrategyRequest(risk_profile="moderate"), timeout=5
        )
        assert (prof.served_from, prof.strategy.as_of) == ("snapshot", day.isoformat())
        user = await strategy_stub.GetStrategy(
            st_pb.GetStrategyRequest(user_id=users[0]), timeout=5
        )
        assert (user.served_from, user.strategy.as_of) == ("postgres", day.isoformat())
        # A server started now, Redis down: its first snapshot comes from PostgreSQL.
        srv2, stub2 = await harness.start(s)
        resp = await stub2.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        assert (resp.served_from, resp.regime.as_of) == ("snapshot", day.isoformat())
        assert await _health(harness.channel(srv2), CACHE_HEALTH_NAME) == NOT_SERVING
    finally:
        await asyncio.to_thread(_stack, "start", "redis", stack_state_dir)

    await _until(lambda: _health_is(ch, (CACHE_HEALTH_NAME,), SERVING), "cache back", 5)
    assert not any(r.exists(k) for k in keys)  # the embedded Redis keeps nothing: repair due
    again = await asyncio.to_thread(asyncio.run, daily_pipeline(as_of=day, trigger="manual"))
    assert again["inserted"] is False and again["events_queued"] == 0
    assert again["user_events_queued"] == 0 and again["strategies_inserted"] == 0
    assert again["cache"].startswith(f"{len(keys) + 1} Redis keys switched (current)")  # +sectors
    assert all(r.ttl(k) > 0 for k in keys)
    # The rerun wrote every user's key again, under its own version (values as stored).
    version = (r.get(USERS_VERSION_KEY) or b"").decode()
    assert version == uuid.UUID(again["run_id"]).hex[-12:] and again["user_keys_cached"] == 6
    assert all(r.ttl(user_key(u, version)) > 0 for u in users)
    cached = json.loads(r.get(REGIME_CURRENT_KEY) or b"{}")
    assert (cached["as_of"], cached["model_version"], cached["run_id"]) == (
        day.isoformat(),
        mv,
        out["run_id"],
    )  # fmt: skip  (values as stored: the first run's provenance)

    async def user_from_redis() -> bool:
        got = await strategy_stub.GetStrategy(st_pb.GetStrategyRequest(user_id=users[0]), timeout=5)
        return got.served_from == "redis"

    # The repaired key matches the snapshot's book, once the server has read the new pointer
    # (the switch's NOTIFY).
    await _until(user_from_redis, "the user served from Redis", 10)
    # Rebuilt from the slim Redis value and the snapshot's book: what PostgreSQL served (this
    # second read may come from the server's answer cache, built from the Redis read).
    again_user = await strategy_stub.GetStrategy(
        st_pb.GetStrategyRequest(user_id=users[0]), timeout=5
    )
    assert again_user.strategy == user.strategy
    r.close()
    _report("redis down", cache_first=out["cache"], cache_next=again["cache"])


async def _eq(value: Any, want: Any) -> bool:
    return bool(await value == want)


# --- 3. PostgreSQL down mid-run --------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_postgres_down_mid_run_fails_cleanly_and_a_rerun_completes(
    prefect_harness: None,
    clean_db: Engine,
    kafka: str,
    stack_settings: Settings,
    stack_state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    harness: Harness,
) -> None:
    from flows.pipeline import daily_pipeline

    mv = _model_version(monkeypatch, stack_state_dir)
    _seed_users(clean_db, 5, "pg")
    s = stack_settings.model_copy(update={"model_version": mv})
    before = regime(date(2020, 3, 13), "bear", model_version=mv, run_id=uuid.uuid4())
    with clean_db.begin() as conn:
        runs.start_run(
            conn, run_id=before.run_id, flow="test-faults", trigger="manual", as_of=None,
            parameters={}, data_source="test", data_snapshot_hash="0" * 64, code_version="t",
            model_version=mv,
        )  # fmt: skip
        insert_regimes(conn, [before])
    day = date(2020, 3, 16)
    srv, stub = await harness.start(s)
    ch = harness.channel(srv)

    # Hold the run between its regime step (committed) and the tiers step.
    reached, go = threading.Event(), threading.Event()
    tiers = strategy_run.compute_and_store_tiers

    def gated(*args: Any, **kwargs: Any) -> strategy_run.TierOutcome:
        reached.set()
        go.wait(60)
        return tiers(*args, **kwargs)

    monkeypatch.setattr(strategy_run, "compute_and_store_tiers", gated)

    def failing_run() -> tuple[BaseException | None, float]:
        try:
            asyncio.run(daily_pipeline(as_of=day, trigger="manual"))
        except BaseException as exc:
            return exc, time.monotonic() - t_go
        return None, time.monotonic() - t_go

    t_go = time.monotonic()
    running = asyncio.ensure_future(asyncio.to_thread(failing_run))
    r = make_redis(s.require("redis_url"))
    try:
        await _until(reached.is_set, "the regime step", 60)
        (failed_id,) = [i for i, st in _run_statuses(clean_db, mv).items() if st == "running"]
        await _until(
            lambda: (
                srv.regime_snapshot.value is not None and srv.regime_snapshot.value.as_of == day
            ),
            "the committed regime in the snapshot",
            10,
        )
        redis_before = _redis_values(r)
        await asyncio.to_thread(_stack, "stop", "postgres", stack_state_dir)
        try:
            t_go = time.monotonic()
            go.set()
            await _until(lambda: _health_is(ch, API_SERVICES, NOT_SERVING), "NOT_SERVING", 5)
            assert await _health(ch, CACHE_HEALTH_NAME) == SERVING  # Redis is fine
            resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
            assert (resp.served_from, resp.regime.as_of) == ("snapshot", day.isoformat())
            code, details = await _code_of(
                stub.GetRegimeHistory(mr_pb.GetRegimeHistoryRequest(), timeout=5)
            )
            assert code == grpc.StatusCode.UNAVAILABLE and "PostgreSQL" in details

            exc, failed_after = await asyncio.wait_for(asyncio.shield(running), 60)
            assert exc is not None and is_transient(exc), repr(exc)
            assert failed_after < 30  # 3 retries (1 + 2 + 4 s) of the tiers step, then the end
            # Nothing of the run reached Redis or the broker.
            assert _redis_values(r) == redis_before
            assert not [
                e
                for t in TOPIC_NAMES
                for e in await consume_all(kafka, t)
                if mv in e.headers.get("event_id", "")
            ]
        finally:
            go.set()
            await asyncio.to_thread(_stack, "start", "postgres", stack_state_dir)
    finally:
        go.set()  # never leave the flow thread parked
        await asyncio.wait_for(running, 60)
        r.close()

    await _until(lambda: _health_is(ch, API_SERVICES, SERVING), "SERVING again", 15)
    # Its end could not be recorded: the row says running; the regime step's commit stands.
    assert _run_statuses(clean_db, mv)[failed_id] == "running"
    left = _rows(clean_db, mv)
    assert (left["regimes"], left["strategies"], left["user_strategies"]) == (2, 0, 0)
    assert left["events"] == left["pending"] > 0

    monkeypatch.setattr(strategy_run, "compute_and_store_tiers", tiers)
    out = await asyncio.to_thread(asyncio.run, daily_pipeline(as_of=day, trigger="manual"))
    assert out["inserted"] is False and out["strategies_inserted"] == 3
    assert out["user_strategies_written"] == 5 and out["abandoned_runs"] == [failed_id]
    assert out["relay"].endswith(", 0 pending")
    failed = _get_run(clean_db, failed_id)
    assert failed["status"] == "failed" and failed["error"].startswith("abandoned")
    done = _rows(clean_db, mv)
    assert (done["strategies"], done["user_strategies"], done["pending"]) == (3, 5, 0)
    got = await asyncio.to_thread(_delivery, clean_db, kafka, mv)
    assert (got.delivered, got.duplicated) == (got.expected, 0) == (done["events"], 0)
    _report(
        "postgres down mid-run",
        failed_after_s=f"{failed_after:.1f}", error=type(exc).__name__,
        expected=got.expected, delivered=got.delivered, duplicated=got.duplicated,
    )  # fmt: skip


# --- 4. concurrency and SIGKILL --------------------------------------------------------------


LOCK_HOLD_S = 0.3


@pytest.mark.timeout(120)
def test_two_runs_of_one_as_of_at_once_one_does_the_work(
    prefect_harness: None,
    clean_db: Engine,
    kafka: str,
    stack_state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_API_URL

    mv = _model_version(monkeypatch, stack_state_dir)
    _seed_users(clean_db, 8, "cc")
    day = date(2022, 12, 27)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    cmd = [sys.executable, "-m", "bloasis.cli", "run", "--as-of", day.isoformat(), "--json"]
    # "At once", for sure: both start while the run lock is taken, and are released together.
    c, k = pipeline.run_lock_key(mv, day)
    queued = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = :c AND objid = :k AND objsubid = 2"
    )
    procs: list[subprocess.Popen[str]] = []
    with pipeline.run_lock(clean_db, mv, day, timeout_s=1), clean_db.connect() as conn:
        try:
            for _ in range(2):
                procs.append(
                    subprocess.Popen(
                        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                )
            deadline = time.monotonic() + 60
            while conn.execute(queued, {"c": c & 0xFFFFFFFF, "k": k & 0xFFFFFFFF}).scalar() != 2:
                conn.rollback()
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
                time.sleep(0.1)
            # Held a while longer with both queued: each run's recorded wait covers it (the
            # second to queue may have asked only milliseconds before the poll saw it).
            time.sleep(LOCK_HOLD_S)
        except BaseException:
            for p in procs:
                p.kill()
            raise
    outs = [p.communicate(timeout=100) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    a, b = sorted((json.loads(o) for o, _ in outs), key=lambda x: not x["inserted"])
    assert a["inserted"] is True and b["inserted"] is False
    assert (a["strategies_inserted"], a["user_strategies_written"]) == (3, 8)
    assert (b["strategies_inserted"], b["user_strategies_written"], b["events_queued"]) == (0, 0, 0)
    assert b["user_events_queued"] == 0

    rows = _rows(clean_db, mv)
    assert rows == {
        "regimes": 1, "sector_analyses": 1, "strategies": 3, "user_strategies": 8,
        "events": a["events_queued"] + 3 + 8 + a["signal_events_queued"], "pending": 0,
    }  # fmt: skip
    with clean_db.connect() as conn:
        spans = conn.execute(
            select(PipelineRun.started_at, PipelineRun.finished_at, PipelineRun.status)
            .where(PipelineRun.model_version == mv)
            .order_by(PipelineRun.started_at)
        ).all()
    assert [x.status for x in spans] == ["completed", "completed"]
    assert spans[0].finished_at <= spans[1].started_at  # serialised by the run lock
    got = _delivery(clean_db, kafka, mv)
    assert (got.expected, got.delivered, got.duplicated) == (rows["events"], rows["events"], 0)
    waits = sorted(_get_run(clean_db, x["run_id"])["timings"]["lock_wait_s"] for x in (a, b))
    assert waits[0] >= LOCK_HOLD_S  # both queued on the lock; the spans show one at a time
    _report(
        "two runs at once",
        events=got.expected, delivered=got.delivered, duplicated=got.duplicated,
        lock_wait_s=[f"{w:.1f}" for w in waits],
    )  # fmt: skip


def test_run_lock_waits_for_the_holder_then_gives_up_with_a_clear_error(
    engine: Engine,
) -> None:
    day = date(2022, 12, 27)
    with pipeline.run_lock(engine, "fault-lock", day, timeout_s=1) as waited:
        assert waited < 0.5
        t0 = time.monotonic()
        with (
            pytest.raises(pipeline.PipelineError, match=r"run of .* still holds its lock"),
            pipeline.run_lock(engine, "fault-lock", day, timeout_s=0.6),
        ):
            pass
        assert time.monotonic() - t0 > 0.5  # it waited for the lock its whole timeout
        with pipeline.run_lock(engine, "fault-lock", date(2022, 12, 28), timeout_s=1):
            pass  # another as-of is another lock
    with pipeline.run_lock(engine, "fault-lock", day, timeout_s=1) as waited:
        assert waited < 0.5  # released by the first holder


_KILLED_RUN = """
import sys, time, uuid
from datetime import UTC, date, datetime
from bloasis import pipeline, strategy_run
from bloasis.config import load_settings
from bloasis.regime.model import resolve_model
from bloasis.store import outbox
from bloasis.store.db import get_engine

stage, as_of = sys.argv[1], date.fromisoformat(sys.argv[2])
s = load_settings()
engine, model = get_engine(s), resolve_model(s.model_version, s.universe, s.regime_overrides)
md = pipeline.load_market_data(as_of)
run_id = uuid.uuid4()

def hold(what):
    print(what, run_id, flush=True)
    time.sleep(60)  # SIGKILLed here

with pipeline.run_lock(engine, model.version, as_of, timeout_s=30):
    pipeline.begin_run(engine, run_id=run_id, flow="daily-pipeline", trigger="manual",
                       as_of=as_of, parameters={}, md=md, model_version=model.version)
    result = pipeline.compute_regime(md, as_of, trigger="manual", run_id=run_id, model=model)
    stored = pipeline.persist_regime(engine, result).stored
    if stage == "after-regime":
        hold("REGIME_COMMITTED")
    tier = strategy_run.compute_and_store_tiers(engine, md, stored, run_id=run_id, top_n=s.top_n)
    users = strategy_run.load_slice(engine, strategy_run.UserSlice())
    chunk = strategy_run.derive_chunk(tier.books, users, run_id=run_id,
                                      model_version=model.version, computed_at=datetime.now(UTC))
    copy_enqueue = outbox.copy_enqueue

    def enqueue_then_hold(conn, events):
        copy_enqueue(conn, events)
        hold("USERS_UNCOMMITTED")  # user rows and events written, not committed

    outbox.copy_enqueue = enqueue_then_hold
    strategy_run.store_chunk(engine, chunk)
"""


def _killed_at(stage: str, day: date, env: dict[str, str]) -> str:
    """Run the pipeline steps in a child, SIGKILL it where `stage` holds; its run id."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, stage, day.isoformat()],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    want = "REGIME_COMMITTED" if stage == "after-regime" else "USERS_UNCOMMITTED"
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()  # bounded by the test's timeout
        if not line.startswith(want):
            pytest.fail(f"child ended before {want}: {proc.stderr.read()[-3000:]}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return line.split()[1]


@pytest.mark.timeout(90)
def test_a_run_killed_mid_way_leaves_nothing_half_published_and_the_next_one_finishes(
    prefect_harness: None,
    clean_db: Engine,
    kafka: str,
    stack_settings: Settings,
    stack_state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.pipeline import daily_pipeline

    mv = _model_version(monkeypatch, stack_state_dir)
    _seed_users(clean_db, 10, "kl")
    day = date(2008, 10, 15)
    r = make_redis(stack_settings.require("redis_url"))
    redis_before = _redis_values(r)

    # Killed after the regime step committed: the regime and its events, nothing else.
    first = _killed_at("after-regime", day, dict(os.environ))
    after_regime = _rows(clean_db, mv)
    assert after_regime | {"events": 0} == {
        "regimes": 1, "sector_analyses": 0, "strategies": 0, "user_strategies": 0,
        "events": 0, "pending": after_regime["events"],
    }  # fmt: skip
    # Killed inside the users' transaction (the lock of the first one went with it): the
    # tiers are stored, the users' rows and events rolled back.
    second = _killed_at("users-uncommitted", day, dict(os.environ))
    after_users = _rows(clean_db, mv)
    assert (after_users["strategies"], after_users["user_strategies"]) == (3, 0)
    # The tiers' events: one per profile strategy and one per signal of each.
    tier_events = after_users["events"] - after_regime["events"]
    assert after_users["events"] == after_users["pending"] and tier_events > 3
    assert _run_statuses(clean_db, mv) == {first: "running", second: "running"}
    assert _redis_values(r) == redis_before  # Redis is switched only at the very end
    assert not any(
        mv in e.headers.get("event_id", "")
        for t in TOPIC_NAMES
        for e in asyncio.run(consume_all(kafka, t))
    )

    out = asyncio.run(daily_pipeline(as_of=day, trigger="manual"))
    assert (out["inserted"], out["strategies_inserted"], out["user_strategies_written"]) == (
        False, 0, 10,
    )  # fmt: skip
    assert sorted(out["abandoned_runs"]) == sorted([first, second])
    done = _rows(clean_db, mv)
    assert done == {
        "regimes": 1, "sector_analyses": 1, "strategies": 3, "user_strategies": 10,
        "events": after_users["events"] + 10 + out["signal_events_queued"], "pending": 0,
    }  # fmt: skip
    statuses = _run_statuses(clean_db, mv)
    assert sorted(statuses.values()) == ["completed", "failed", "failed"]
    cached = json.loads(r.get(REGIME_CURRENT_KEY) or b"{}")
    assert (cached["as_of"], cached["model_version"]) == (day.isoformat(), mv)

    again = asyncio.run(daily_pipeline(as_of=day, trigger="manual"))  # nothing left to do
    assert (again["events_queued"], again["user_events_queued"]) == (0, 0)
    assert _rows(clean_db, mv) == done
    got = _delivery(clean_db, kafka, mv)
    assert (got.expected, got.delivered, got.duplicated) == (done["events"], done["events"], 0)
    r.close()
    _report(
        "SIGKILL mid-run",
        rows_after_kill=after_users, rows_after_next_run=done,
        expected=got.expected, delivered=got.delivered, duplicated=got.duplicated,
    )  # fmt: skip
