"""ClassificationService and StrategyService against the real embedded stack, over real grpc.aio
channels: latest reads from the snapshot, given as-of reads from PostgreSQL, user strategies
expanded with their profile's book (Redis, then PostgreSQL), the symbols filter, NOTIFY-driven
refresh, the Redis fallback with PostgreSQL down, preferences, argument errors, health,
reflection (grpcurl), the blocking client and a fuzz over the request fields.

The database is seeded directly (no pipeline run) under a model version of this module's own,
so these tests neither see nor disturb other modules' rows; users get a per-module id prefix
and are deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import text

from bloasis.config import Settings
from bloasis.pb.v2 import classification_pb2 as cl_pb
from bloasis.pb.v2 import classification_pb2_grpc as cl_grpc
from bloasis.pb.v2 import strategy_pb2 as st_pb
from bloasis.pb.v2 import strategy_pb2_grpc as st_grpc
from bloasis.publish.cache import (
    REGIME_CURRENT_KEY,
    USERS_VERSION_KEY,
    make_redis,
    sectors_key,
    strategy_key,
    user_key,
    write_run_keys,
    write_user_keys,
)
from bloasis.regime.types import RegimeResult
from bloasis.serve import client
from bloasis.serve.classification_v2 import SERVICE as CLASSIFICATION_SERVICE
from bloasis.serve.server import RegimeServer
from bloasis.serve.strategy_v2 import SERVICE as STRATEGY_SERVICE
from bloasis.store import outbox, runs
from bloasis.store.db import engine_for
from bloasis.store.regimes import insert_regimes, regime_id_at
from bloasis.store.strategies import (
    UserStrategyRecord,
    book_entry,
    insert_profile_strategy,
    insert_sector_analysis,
    upsert_preferences,
    upsert_user_strategies,
)
from bloasis.strategy import users as domain_users
from bloasis.strategy.types import (
    GICS_SECTORS,
    PROFILES,
    Pick,
    ProfitTier,
    SectorAnalysis,
    SectorScore,
    Signal,
    Strategy,
    UserPreferences,
)
from bloasis.wire import regime_to_pb, sector_analysis_to_pb, signal_to_pb, strategy_to_pb, to_json
from bloasis.wire import ts as to_ts
from tests.factories import regime
from tests.grpc_harness import Harness
from tests.test_grpc import GRPCURL, _code_of, _run, _stack, _until

CLASSIFICATION_SERVICE_NAME = CLASSIFICATION_SERVICE.full_name
STRATEGY_SERVICE_NAME = STRATEGY_SERVICE.full_name

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OK, INVALID, NOT_FOUND, UNAVAILABLE = (
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
)
FIELDS = (
    "user_id",
    "risk_profile",
    "as_of",
    "symbols",
    "sectors",
    "preferences",
    "max_single_position",
    "preferred_sectors",
    "excluded_sectors",
)

D1, D2 = date(2022, 12, 27), date(2022, 12, 28)
AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
TOP_N = 3
# The book ranks six candidates; the strategy holds the top three.
BOOK = (
    ("KO", "Consumer Staples"),
    ("JNJ", "Health Care"),
    ("XOM", "Energy"),
    ("PG", "Consumer Staples"),
    ("UNH", "Health Care"),
    ("CVX", "Energy"),
)
_FIRST = ("Consumer Staples", "Health Care", "Energy", "Utilities")  # the selected sectors
SECTOR_ORDER = (*_FIRST, *(s for s in GICS_SECTORS if s not in _FIRST))


# --- building the seeded world -----------------------------------------------------------------


def _book(profile: str, as_of: date) -> list[tuple[Pick, Signal]]:
    """Six ranked candidates with levels distinct per profile and day (4 decimal places, as
    NUMERIC(18, 4) stores them, so they round-trip as the same strings)."""
    base = {"conservative": 100, "moderate": 200, "aggressive": 300}[profile] + as_of.day
    out = []
    for i, (sym, sector) in enumerate(BOOK, start=1):
        entry = Decimal(f"{base + i}.2500")
        out.append(
            (
                Pick(sym, sector, i, 95.5 - i, {"momentum": 80.25, "volatility": 61.5}, f"{sym}!"),
                Signal(
                    symbol=sym,
                    sector=sector,
                    action="buy" if i % 2 else "hold",
                    weight=Decimal("0.0850") if i <= TOP_N else Decimal("0"),
                    entry_price=entry,
                    stop_loss=entry - Decimal("4.1250"),
                    profit_tiers=(
                        ProfitTier(entry + Decimal("3.0000"), Decimal("0.33")),
                        ProfitTier(entry + Decimal("6.5000"), Decimal("0.33")),
                    ),
                    trailing_stop_pct=Decimal("0.0300"),
                ),
            )
        )
    return out


def _profile_strategy(profile: str, as_of: date, mv: str) -> tuple[Strategy, list[dict[str, Any]]]:
    book = _book(profile, as_of)
    top = book[:TOP_N]
    s = Strategy(
        strategy_id=f"{profile}:{as_of.isoformat()}:{mv}",
        as_of=as_of,
        risk_profile=profile,
        user_id=None,
        regime="bear",
        risk_level="medium",
        picks=tuple(p for p, _ in top),
        signals=tuple(g for _, g in top),
        cash_weight=Decimal("0.7450"),
        rationale=f"{profile} on {as_of}",
    )
    return s, [book_entry(p, g) for p, g in book]


def _analysis(as_of: date) -> SectorAnalysis:
    off = as_of.day - 27  # D1 and D2 differ
    return SectorAnalysis(
        as_of=as_of,
        regime="bear",
        scores=tuple(
            SectorScore(name, 90.5 - 7.25 * i + off, 70.0 - i, 55.125 + off, i + 2, i + 1, i < 4)
            for i, name in enumerate(SECTOR_ORDER)
        ),
        candidates=tuple(sym for sym, _ in BOOK) if off else ("KO", "XOM"),
    )


def _position(sym: str, weight: str, rank: int, book: list[tuple[Pick, Signal]]) -> dict[str, Any]:
    pick, g = next((p, g) for p, g in book if p.symbol == sym)
    return {
        "symbol": sym,
        "sector": g.sector,
        "action": g.action,
        "weight": weight,
        "rank": rank,
        "final_score": pick.final_score,
    }


@dataclass
class World:
    settings: Settings
    run_id: uuid.UUID
    prefix: str  # every user id of this module starts with it
    user: str  # preferences and a strategy on D1 and D2
    user_no_strategy: str
    regimes: dict[date, RegimeResult]
    server: RegimeServer | None = None
    strategy: Any = None
    classification: Any = None

    @property
    def mv(self) -> str:
        return self.settings.model_version

    def user_positions(self, as_of: date) -> list[dict[str, Any]]:
        book = _book("moderate", as_of)
        if as_of == D2:  # UNH is only in the book, not among the profile's top picks
            return [_position("KO", "0.0800", 1, book), _position("UNH", "0.0750", 2, book)]
        return [_position("CVX", "0.0500", 1, book)]


def _seed_day(conn: Any, w: World, d: RegimeResult, *, notify: str | None = None) -> None:
    mv = w.mv
    insert_regimes(conn, [d])
    rid = regime_id_at(conn, mv, d.as_of)
    assert rid is not None
    insert_sector_analysis(
        conn, _analysis(d.as_of), model_version=mv, regime_id=rid, run_id=w.run_id, computed_at=AT
    )
    for p in PROFILES:
        s, book = _profile_strategy(p, d.as_of, mv)
        insert_profile_strategy(
            conn, s, book, model_version=mv, regime_id=rid, run_id=w.run_id, computed_at=AT
        )
    if notify:
        outbox.notify_results(conn, notify)


def _new_world(base: Settings) -> World:
    s = base.model_copy(update={"model_version": f"regime-v2-grpcs-{uuid.uuid4().hex[-12:]}"})
    prefix = f"tgs-{uuid.uuid4().hex[:8]}-"
    run_id = uuid.uuid4()
    regimes = {d: regime(d, "bear", run_id=run_id, model_version=s.model_version) for d in (D1, D2)}
    return World(s, run_id, prefix, prefix + "alice", prefix + "bob", regimes)


def _start_run(conn: Any, w: World) -> None:
    runs.start_run(
        conn,
        run_id=w.run_id,
        flow="test-grpc-strategy",
        trigger="manual",
        as_of=None,
        parameters={},
        data_source="test",
        data_snapshot_hash="0" * 64,
        code_version="t",
        model_version=w.mv,
    )


def _seed_world(w: World) -> None:
    with engine_for(w.settings.require("database_url")).begin() as conn:
        _start_run(conn, w)
        for d in (D1, D2):
            _seed_day(conn, w, w.regimes[d])
        prefs = upsert_preferences(
            conn, UserPreferences(w.user, "moderate", ("Health Care",), (), Decimal("0.0800"))
        )
        upsert_preferences(conn, UserPreferences(w.user_no_strategy, "aggressive"))
        upsert_user_strategies(conn, [_user_strategy(w, d, prefs.version) for d in (D1, D2)])
        outbox.notify_results(conn, f"strategy:{D2.isoformat()}")


def _user_strategy(w: World, d: date, preferences_version: int) -> UserStrategyRecord:
    """The seeded user's stored strategy of `d` (the moderate profile's, re-weighted)."""
    return UserStrategyRecord(
        user_id=w.user,
        as_of=d,
        model_version=w.mv,
        profile_strategy_id=f"moderate:{d.isoformat()}:{w.mv}",
        preferences_version=preferences_version,
        run_id=w.run_id,
        positions=w.user_positions(d),
        cash_weight=Decimal("0.8450") if d == D2 else Decimal("0.9500"),
        computed_at=AT,
    )


def _drop_users(w: World) -> None:
    with engine_for(w.settings.require("database_url")).begin() as conn:
        conn.execute(
            text("DELETE FROM user_preferences WHERE starts_with(user_id, :p)"), {"p": w.prefix}
        )


@dataclass
class Stubs:
    strategy: st_grpc.StrategyServiceStub
    classification: cl_grpc.ClassificationServiceStub
    channel: grpc.aio.Channel


def _stubs(h: Harness, srv: RegimeServer) -> Stubs:
    ch = h.channel(srv)
    return Stubs(st_grpc.StrategyServiceStub(ch), cl_grpc.ClassificationServiceStub(ch), ch)


@pytest.fixture(scope="module")
async def world(stack_settings: Settings) -> AsyncIterator[tuple[World, Stubs]]:
    """One server over the seeded data, shared by the tests that do not need their own."""
    w = _new_world(stack_settings)
    await asyncio.to_thread(_seed_world, w)
    h = Harness()
    try:
        srv, _ = await h.start(w.settings)
        w.server = srv
        yield w, _stubs(h, srv)
    finally:
        await h.close()
        await asyncio.to_thread(_drop_users, w)


def _expected_profile(w: World, profile: str, as_of: date) -> st_pb.Strategy:
    s, _ = _profile_strategy(profile, as_of, w.mv)
    return strategy_to_pb(s, run_id=w.run_id, model_version=w.mv, computed_at=AT)


def _expected_user_signals(w: World, as_of: date) -> list[st_pb.Signal]:
    book = {g.symbol: g for _, g in _book("moderate", as_of)}
    return [
        signal_to_pb(replace(book[p["symbol"]], weight=Decimal(p["weight"])))
        for p in w.user_positions(as_of)
    ]


# --- profile strategies ------------------------------------------------------------------------


async def test_profile_strategy_latest_from_snapshot_and_as_of_from_postgres(
    world: tuple[World, Stubs],
) -> None:
    w, stubs = world
    for profile in PROFILES:
        resp = await stubs.strategy.GetStrategy(
            st_pb.GetStrategyRequest(risk_profile=profile), timeout=5
        )
        assert resp.served_from == "snapshot"
        # Every value round-trips exactly, decimals as the same strings.
        assert resp.strategy == _expected_profile(w, profile, D2)
        assert resp.regime == regime_to_pb(w.regimes[D2])

    resp = await stubs.strategy.GetStrategy(
        st_pb.GetStrategyRequest(risk_profile="moderate"), timeout=5
    )
    sig = resp.strategy.signals[0]
    assert (sig.symbol, sig.weight, sig.entry_price, sig.stop_loss) == (
        "KO",
        "0.0850",
        "229.2500",
        "225.1250",
    )
    assert [(t.level, t.size_pct) for t in sig.profit_tiers] == [
        ("232.2500", "0.33"),
        ("235.7500", "0.33"),
    ]
    assert (sig.trailing_stop_pct, resp.strategy.cash_weight) == ("0.0300", "0.7450")
    assert resp.strategy.strategy_id == f"moderate:2022-12-28:{w.mv}"

    old = await stubs.strategy.GetStrategy(
        st_pb.GetStrategyRequest(risk_profile="aggressive", as_of="2022-12-27"), timeout=5
    )
    assert old.served_from == "postgres"
    assert old.strategy == _expected_profile(w, "aggressive", D1)
    assert old.regime == regime_to_pb(w.regimes[D1])

    picks = await stubs.strategy.GetStockPicks(
        st_pb.GetStrategyRequest(risk_profile="conservative"), timeout=5
    )
    expected = _expected_profile(w, "conservative", D2)
    assert (picks.strategy_id, picks.as_of, picks.served_from) == (
        expected.strategy_id,
        "2022-12-28",
        "snapshot",
    )
    assert list(picks.picks) == list(expected.picks)
    assert picks.regime == regime_to_pb(w.regimes[D2])


async def test_symbols_filter_restricts_picks_and_signals(world: tuple[World, Stubs]) -> None:
    w, stubs = world
    req = st_pb.GetStrategyRequest(risk_profile="moderate", symbols=["xom", "KO", "NOPE"])
    resp = await stubs.strategy.GetStrategy(req, timeout=5)
    assert [p.symbol for p in resp.strategy.picks] == ["KO", "XOM"]
    assert [g.symbol for g in resp.strategy.signals] == ["KO", "XOM"]
    assert resp.strategy.cash_weight == "0.7450"  # the whole strategy's
    picks = await stubs.strategy.GetStockPicks(req, timeout=5)
    assert [p.symbol for p in picks.picks] == ["KO", "XOM"]

    user = await stubs.strategy.GetStrategy(
        st_pb.GetStrategyRequest(user_id=w.user, symbols=["UNH"], as_of="2022-12-28"), timeout=5
    )
    assert [g.symbol for g in user.strategy.signals] == ["UNH"]
    none = await stubs.strategy.GetStrategy(
        st_pb.GetStrategyRequest(risk_profile="moderate", symbols=["BRK.B"]), timeout=5
    )
    assert list(none.strategy.picks) == [] and list(none.strategy.signals) == []


# --- user strategies ---------------------------------------------------------------------------


@pytest.fixture
def users_redis(stack_settings: Settings) -> Iterator[redis.Redis]:
    """A Redis client; the pointer `user-strategies:version` (one for the whole session) is put
    back as it was at the end."""
    r = make_redis(stack_settings.require("redis_url"))
    saved, pttl = r.get(USERS_VERSION_KEY), r.pttl(USERS_VERSION_KEY)
    try:
        yield r
    finally:
        if saved is None:
            r.delete(USERS_VERSION_KEY)
        else:
            r.set(USERS_VERSION_KEY, saved, px=pttl if pttl > 0 else None)
        r.close()


def _new_version() -> str:
    """A users' version no run wrote (the pipeline's are 12 hex digits)."""
    return f"t-{uuid.uuid4().hex[:10]}"


async def _switch_users_version(r: redis.Redis, srv: RegimeServer, version: str | None) -> None:
    """Point `user-strategies:version` at `version` (None: unset it), as a run's switch does,
    and wait until `srv` has read it: a refresher round started after the switch completed."""
    if version is None:
        r.delete(USERS_VERSION_KEY)
    else:
        r.set(USERS_VERSION_KEY, version, ex=300)
    srv.refresher.poke()
    await _until(srv.refresher.caught_up, "the round after the switch", 5)
    assert srv.users_version.value == version


def _redis_user_value(w: World, as_of: date, *, cash_weight: str | None = None) -> str:
    """The compact form the pipeline writes to `user:{id}:strategy@{version}` (no picks, no
    levels); `cash_weight` tells values apart (the stored one: the same as PostgreSQL's)."""
    pb = st_pb.Strategy(
        strategy_id=f"user:{w.user}:{as_of.isoformat()}:{w.mv}",
        as_of=as_of.isoformat(),
        risk_profile="moderate",
        user_id=w.user,
        signals=[
            st_pb.Signal(
                symbol=p["symbol"], sector=p["sector"], action=p["action"], weight=p["weight"]
            )
            for p in w.user_positions(as_of)
        ],
        cash_weight=cash_weight or ("0.8450" if as_of == D2 else "0.9500"),
        rationale="from the pipeline",
        run_id=str(w.run_id),
        model_version=w.mv,
        computed_at=to_ts(AT),
        profile_strategy_id=f"moderate:{as_of.isoformat()}:{w.mv}",
        regime="bear",
        risk_level="medium",
    )
    return to_json(pb)


async def test_user_strategy_is_expanded_with_the_profile_book(
    world: tuple[World, Stubs],
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    users_redis: redis.Redis,
) -> None:
    w, _ = world
    # The in-process answer cache off: every call reads Redis, so the values this test writes
    # behind the server's back are served at once (the cache: test_user_strategy_answer_cache).
    srv, _ = await harness.start(w.settings.model_copy(update={"user_strategy_cache_seconds": 0}))
    stubs = _stubs(harness, srv)
    r, version = users_redis, _new_version()
    key = user_key(w.user, version)
    await _switch_users_version(r, srv, version)
    try:
        resp = await stubs.strategy.GetStrategy(st_pb.GetStrategyRequest(user_id=w.user), timeout=5)
        assert resp.served_from == "postgres"  # nothing in Redis for this user
        s = resp.strategy
        assert (s.user_id, s.as_of, s.risk_profile, s.cash_weight) == (
            w.user,
            "2022-12-28",
            "moderate",
            "0.8450",
        )
        # The id the pipeline gives this user's strategy (user_strategies rows do not store it).
        book_stub = SimpleNamespace(as_of=D2)
        assert s.strategy_id == domain_users.user_strategy_id(w.user, book_stub, w.mv)  # type: ignore[arg-type]
        assert s.profile_strategy_id == f"moderate:2022-12-28:{w.mv}"
        assert (s.run_id, s.model_version) == (str(w.run_id), w.mv)
        # Levels come from the book, UNH included although it is not a profile pick.
        assert list(s.signals) == _expected_user_signals(w, D2)
        assert s.signals[1].entry_price == "233.2500" and s.signals[1].weight == "0.0750"
        assert [(p.symbol, p.rank) for p in s.picks] == [("KO", 1), ("UNH", 2)]
        assert resp.regime == regime_to_pb(w.regimes[D2])

        old = await stubs.strategy.GetStrategy(
            st_pb.GetStrategyRequest(user_id=w.user, as_of="2022-12-27"), timeout=5
        )
        assert (old.served_from, old.strategy.as_of) == ("postgres", "2022-12-27")
        assert list(old.strategy.signals) == _expected_user_signals(w, D1)
        assert old.regime == regime_to_pb(w.regimes[D1])

        # The pipeline's compact Redis value, expanded with the snapshot's book: same strategy.
        r.set(key, _redis_user_value(w, D2), ex=60)
        cached = await stubs.strategy.GetStrategy(
            st_pb.GetStrategyRequest(user_id=w.user), timeout=5
        )
        assert cached.served_from == "redis"
        assert cached.strategy == s and cached.regime == resp.regime
        # A cached value of an older run (its profile strategy is not the latest): PostgreSQL.
        r.set(key, _redis_user_value(w, D1), ex=60)
        fresh = await stubs.strategy.GetStrategy(
            st_pb.GetStrategyRequest(user_id=w.user), timeout=5
        )
        assert (fresh.served_from, fresh.strategy.as_of) == ("postgres", "2022-12-28")
        # Garbage in the cache is a miss, not an error — and not "Redis unavailable": counted
        # as unreadable every time, logged once per value (an error with the key).
        from bloasis import metrics

        unreadable = metrics.CACHE_UNREADABLE.labels("JSONDecodeError")
        before = unreadable._value.get()
        bad = b"{not json " + uuid.uuid4().hex.encode()  # a value no other test wrote
        r.set(key, bad, ex=60)
        with caplog.at_level(logging.ERROR, logger="bloasis.serve.store_access"):
            for _ in range(2):
                junk = await stubs.strategy.GetStrategy(
                    st_pb.GetStrategyRequest(user_id=w.user), timeout=5
                )
                assert junk.served_from == "postgres" and junk.strategy == s
        assert unreadable._value.get() == before + 2
        logged = [x for x in caplog.records if "unreadable cached value" in x.getMessage()]
        assert len(logged) == 1 and key in logged[0].getMessage()
        assert "Redis unavailable" not in caplog.text
        picks = await stubs.strategy.GetStockPicks(
            st_pb.GetStrategyRequest(user_id=w.user), timeout=5
        )
        assert [p.symbol for p in picks.picks] == ["KO", "UNH"]
    finally:
        r.delete(key)


def _user_cache_hits() -> float:
    got = REGISTRY.get_sample_value(
        "bloasis_answer_cache_lookups_total",
        {"method": f"{STRATEGY_SERVICE_NAME}/GetStrategy", "result": "hit"},
    )
    return got or 0.0


async def test_user_strategy_answer_cache(
    stack_settings: Settings, harness: Harness, users_redis: redis.Redis
) -> None:
    """BLOASIS_USER_STRATEGY_CACHE_SECONDS: a user's unfiltered answer is reused in process
    (served_from "snapshot") until its TTL, an UpdatePreferences of that user or a new run."""
    w = _new_world(stack_settings)

    def seed(d: date, first: bool) -> None:
        with engine_for(w.settings.require("database_url")).begin() as conn:
            if first:
                _start_run(conn, w)
            _seed_day(conn, w, w.regimes[d])
            prefs = upsert_preferences(conn, UserPreferences(w.user, "moderate"))
            upsert_user_strategies(conn, [_user_strategy(w, d, prefs.version)])
            outbox.notify_results(conn, f"strategy:{d.isoformat()}")

    await asyncio.to_thread(seed, D1, True)
    # The users' version is set before the servers start: they read it when they load.
    r, version = users_redis, _new_version()
    r.set(USERS_VERSION_KEY, version, ex=300)
    key = user_key(w.user, version)
    try:
        # A TTL no test outlasts, and a 60 s poll: only NOTIFY refreshes the snapshot.
        long = w.settings.model_copy(update={"user_strategy_cache_seconds": 3600})
        srv, _ = await harness.start(long, poll_interval=60.0)
        assert srv.users_version.value == version
        s = _stubs(harness, srv)
        await _until(lambda: srv.refresher.listening, "LISTEN", 5)
        req = st_pb.GetStrategyRequest(user_id=w.user)

        first = await s.strategy.GetStrategy(req, timeout=5)
        assert (first.served_from, first.strategy.as_of) == ("postgres", "2022-12-27")
        assert list(first.strategy.signals) == _expected_user_signals(w, D1)
        # The answer is a body shared by users with the same content, plus this user's ids.
        ids = (first.strategy.user_id, first.strategy.strategy_id)
        assert ids == (w.user, f"user:{w.user}:2022-12-27:{w.settings.model_version}")
        hits = _user_cache_hits()
        again = await s.strategy.GetStrategy(req, timeout=5)
        assert again.served_from == "snapshot"
        assert (again.strategy, again.regime) == (first.strategy, first.regime)
        assert _user_cache_hits() == hits + 1
        # Filtered or dated requests are not cached: read as before.
        dated = await s.strategy.GetStrategy(
            st_pb.GetStrategyRequest(user_id=w.user, as_of="2022-12-27"), timeout=5
        )
        assert dated.served_from == "postgres"
        only = await s.strategy.GetStrategy(
            st_pb.GetStrategyRequest(user_id=w.user, symbols=["CVX"]), timeout=5
        )
        assert only.served_from == "postgres" and [g.symbol for g in only.strategy.signals] == [
            "CVX"
        ]

        # Redis changed behind the server's back: not read while the answer is valid ...
        r.set(key, _redis_user_value(w, D1), ex=60)
        assert (await s.strategy.GetStrategy(req, timeout=5)).served_from == "snapshot"
        # ... but an UpdatePreferences of that user here drops it at once.
        await s.strategy.UpdatePreferences(
            _prefs_req(user_id=w.user, risk_profile="moderate", max_single_position="0.09"),
            timeout=5,
        )
        reread = await s.strategy.GetStrategy(req, timeout=5)
        assert reread.served_from == "redis" and reread.strategy == first.strategy
        assert (await s.strategy.GetStrategy(req, timeout=5)).served_from == "snapshot"

        # A new run (NOTIFY, snapshot swapped) drops every answer: D2 is served at once (the
        # Redis value names D1's profile strategy, no longer the latest: PostgreSQL).
        await asyncio.to_thread(seed, D2, False)

        def swapped() -> bool:
            latest = srv.strategy.snapshot.value
            return latest is not None and latest["moderate"].strategy.as_of == D2

        await _until(swapped, "the snapshot to swap", 10)
        new = await s.strategy.GetStrategy(req, timeout=5)
        assert (new.served_from, new.strategy.as_of) == ("postgres", "2022-12-28")
        assert list(new.strategy.signals) == _expected_user_signals(w, D2)
        assert new.regime == regime_to_pb(w.regimes[D2])

        # A short TTL: past it, a changed Redis value is read again.
        short = w.settings.model_copy(update={"user_strategy_cache_seconds": 0.2})
        srv2, _ = await harness.start(short)
        s2 = _stubs(harness, srv2)
        before = await s2.strategy.GetStrategy(req, timeout=5)
        assert (before.served_from, before.strategy) == ("postgres", new.strategy)
        r.set(key, _redis_user_value(w, D2), ex=60)
        await asyncio.sleep(0.3)
        after = await s2.strategy.GetStrategy(req, timeout=5)
        assert after.served_from == "redis" and after.strategy == new.strategy
    finally:
        r.delete(key)
        await asyncio.to_thread(_drop_users, w)


# --- versioned user keys: the pointer `user-strategies:version` -------------------------------


async def test_user_keys_of_the_version_the_pointer_names_are_served(
    world: tuple[World, Stubs], harness: Harness, users_redis: redis.Redis
) -> None:
    """Two runs' keys side by side: the server serves the version the pointer names, and after
    a switch (NOTIFY or a poke) the new one — its answer cache included."""
    w, _ = world
    r, old, new = users_redis, _new_version(), _new_version()
    a, b = "0.8450", "0.8000"  # the two runs' values of the user, told apart by cash
    write_user_keys(r, old, [(w.user, _redis_user_value(w, D2, cash_weight=a))], 60)
    write_user_keys(r, new, [(w.user, _redis_user_value(w, D2, cash_weight=b))], 60)
    # The answer cache on (the default) and a 60 s poll: only a poke or a NOTIFY refreshes.
    srv, _ = await harness.start(w.settings, poll_interval=60.0)
    s = _stubs(harness, srv)
    req = st_pb.GetStrategyRequest(user_id=w.user)

    async def served() -> tuple[str, str]:
        resp = await s.strategy.GetStrategy(req, timeout=5)
        assert list(resp.strategy.signals) == _expected_user_signals(w, D2)
        return resp.served_from, resp.strategy.cash_weight

    try:
        await _until(lambda: srv.refresher.listening, "LISTEN", 5)
        await _switch_users_version(r, srv, old)
        assert await served() == ("redis", a)
        assert await served() == ("snapshot", a)  # the answer cache
        # Switched in Redis, not yet seen by the server: it still reads the previous version
        # (whose keys live until their TTL), never a mix. (A filtered request is not cached:
        # it reads Redis.)
        r.set(USERS_VERSION_KEY, new, ex=300)
        only = await s.strategy.GetStrategy(
            st_pb.GetStrategyRequest(user_id=w.user, symbols=["KO"]), timeout=5
        )
        assert (only.served_from, only.strategy.cash_weight) == ("redis", a)
        assert srv.users_version.value == old
        # Seen (a poke; no notification): the new version's value, not the cached answer.
        await _switch_users_version(r, srv, new)
        assert await served() == ("redis", b)
        assert await served() == ("snapshot", b)
        # Back to the old version, announced as a run announces its switch: a NOTIFY.
        r.set(USERS_VERSION_KEY, old, ex=300)
        n = srv.refresher.notifications

        def notify() -> None:
            with engine_for(w.settings.require("database_url")).begin() as conn:
                conn.execute(text("SELECT pg_notify('bloasis_results', 'redis keys switched')"))

        await asyncio.to_thread(notify)
        await _until(lambda: srv.refresher.notifications > n, "the notification", 5)
        await _until(srv.refresher.caught_up, "the round after the notification", 5)
        assert srv.users_version.value == old
        assert await served() == ("redis", a)
    finally:
        r.delete(user_key(w.user, old), user_key(w.user, new))


async def test_user_keys_of_another_version_are_never_served(
    world: tuple[World, Stubs], harness: Harness, users_redis: redis.Redis
) -> None:
    """Keys the pointer does not name (another run's, or the unversioned key of before) are
    never read: the answer comes from PostgreSQL."""
    w, _ = world
    r, named, other = users_redis, _new_version(), _new_version()
    unversioned = f"user:{w.user}:strategy"
    srv, _ = await harness.start(w.settings.model_copy(update={"user_strategy_cache_seconds": 0}))
    s = _stubs(harness, srv)
    req = st_pb.GetStrategyRequest(user_id=w.user)
    try:
        await _switch_users_version(r, srv, named)
        write_user_keys(r, other, [(w.user, _redis_user_value(w, D2, cash_weight="0.8000"))], 60)
        r.set(unversioned, _redis_user_value(w, D2, cash_weight="0.7000"), ex=60)
        for _ in range(2):
            resp = await s.strategy.GetStrategy(req, timeout=5)
            assert (resp.served_from, resp.strategy.cash_weight) == ("postgres", "0.8450")
            assert list(resp.strategy.signals) == _expected_user_signals(w, D2)
        picks = await s.strategy.GetStockPicks(req, timeout=5)
        assert picks.served_from == "postgres"
        # The named version's key is served (so the misses above were the version's doing).
        write_user_keys(r, named, [(w.user, _redis_user_value(w, D2, cash_weight="0.8100"))], 60)
        resp = await s.strategy.GetStrategy(req, timeout=5)
        assert (resp.served_from, resp.strategy.cash_weight) == ("redis", "0.8100")
    finally:
        r.delete(user_key(w.user, named), user_key(w.user, other), unversioned)


async def test_without_a_users_version_user_reads_fall_through_to_postgres(
    world: tuple[World, Stubs], harness: Harness, users_redis: redis.Redis
) -> None:
    """No pointer (never set, expired, or deleted): no user key is read at all."""
    w, _ = world
    r, version = users_redis, _new_version()
    srv, _ = await harness.start(w.settings.model_copy(update={"user_strategy_cache_seconds": 0}))
    s = _stubs(harness, srv)
    req = st_pb.GetStrategyRequest(user_id=w.user)
    try:
        write_user_keys(r, version, [(w.user, _redis_user_value(w, D2, cash_weight="0.8000"))], 60)
        await _switch_users_version(r, srv, version)
        assert (await s.strategy.GetStrategy(req, timeout=5)).served_from == "redis"
        await _switch_users_version(r, srv, None)  # the pointer is gone: the version too
        resp = await s.strategy.GetStrategy(req, timeout=5)
        assert (resp.served_from, resp.strategy.cash_weight) == ("postgres", "0.8450")
        assert list(resp.strategy.signals) == _expected_user_signals(w, D2)
        # A server started without a pointer has no version either.
        srv2, _ = await harness.start(
            w.settings.model_copy(update={"user_strategy_cache_seconds": 0})
        )
        assert srv2.users_version.value is None
        got = await _stubs(harness, srv2).strategy.GetStrategy(req, timeout=5)
        assert (got.served_from, got.strategy.cash_weight) == ("postgres", "0.8450")
    finally:
        r.delete(user_key(w.user, version))


# --- sector analysis ---------------------------------------------------------------------------


async def test_sector_analysis_and_candidates(world: tuple[World, Stubs]) -> None:
    w, stubs = world
    latest = await stubs.classification.GetSectorAnalysis(
        cl_pb.GetSectorAnalysisRequest(), timeout=5
    )
    expected = sector_analysis_to_pb(
        _analysis(D2), run_id=w.run_id, model_version=w.mv, computed_at=AT
    )
    expected.served_from = "snapshot"
    assert latest == expected
    assert [s.sector for s in latest.sectors if s.selected] == list(SECTOR_ORDER[:4])
    assert len(latest.sectors) == 11 and latest.sectors[0].score == 91.5

    old = await stubs.classification.GetSectorAnalysis(
        cl_pb.GetSectorAnalysisRequest(as_of="2022-12-27"), timeout=5
    )
    assert (old.served_from, old.as_of, list(old.candidates)) == (
        "postgres",
        "2022-12-27",
        ["KO", "XOM"],
    )

    cands = await stubs.classification.GetCandidateSymbols(
        cl_pb.GetCandidateSymbolsRequest(), timeout=5
    )
    assert (cands.as_of, cands.regime, cands.served_from) == ("2022-12-28", "bear", "snapshot")
    assert [(c.symbol, c.sector) for c in cands.candidates] == list(BOOK)
    some = await stubs.classification.GetCandidateSymbols(
        cl_pb.GetCandidateSymbolsRequest(sectors=["Energy", "Health Care"]), timeout=5
    )
    assert [c.symbol for c in some.candidates] == ["JNJ", "XOM", "UNH", "CVX"]
    old_c = await stubs.classification.GetCandidateSymbols(
        cl_pb.GetCandidateSymbolsRequest(as_of="2022-12-27", sectors=["Energy"]), timeout=5
    )
    assert (old_c.served_from, [(c.symbol, c.sector) for c in old_c.candidates]) == (
        "postgres",
        [("XOM", "Energy")],
    )
    unselected = await stubs.classification.GetCandidateSymbols(
        cl_pb.GetCandidateSymbolsRequest(sectors=["Utilities"]), timeout=5
    )
    assert list(unselected.candidates) == []


# --- preferences -------------------------------------------------------------------------------


async def test_update_then_get_preferences(world: tuple[World, Stubs]) -> None:
    w, stubs = world
    uid = w.prefix + "carol é"
    prefs = st_pb.UserPreferences(
        user_id=uid,
        risk_profile="aggressive",
        preferred_sectors=["Energy"],
        excluded_sectors=["Utilities", "Real Estate"],
        max_single_position="0.125",
    )
    t0 = datetime.now(UTC)
    made = await stubs.strategy.UpdatePreferences(
        st_pb.UpdatePreferencesRequest(preferences=prefs), timeout=5
    )
    assert (made.user_id, made.risk_profile, made.max_single_position) == (
        uid,
        "aggressive",
        "0.1250",  # as stored: NUMERIC(6, 4)
    )
    assert list(made.excluded_sectors) == ["Utilities", "Real Estate"]
    assert made.updated_at.ToDatetime(tzinfo=UTC) >= t0 - timedelta(seconds=5)
    got = await stubs.strategy.GetPreferences(st_pb.GetPreferencesRequest(user_id=uid), timeout=5)
    assert got == made

    # Unset fields take the defaults; every update bumps the version (the next run recomputes).
    again = await stubs.strategy.UpdatePreferences(
        st_pb.UpdatePreferencesRequest(preferences=st_pb.UserPreferences(user_id=uid)), timeout=5
    )
    assert (again.risk_profile, again.max_single_position, list(again.preferred_sectors)) == (
        "moderate",
        "0.1000",
        [],
    )

    def version() -> int:
        with engine_for(w.settings.require("database_url")).connect() as conn:
            return int(
                conn.execute(
                    text("SELECT version FROM user_preferences WHERE user_id = :u"), {"u": uid}
                ).scalar_one()
            )

    assert await asyncio.to_thread(version) == 2
    trailing = await stubs.strategy.UpdatePreferences(
        _prefs_req(user_id=uid, max_single_position="0.05000"), timeout=5
    )
    assert trailing.max_single_position == "0.0500"  # trailing zeros are not extra places
    assert await asyncio.to_thread(version) == 3

    # The domain rules (bloasis.strategy.users.validate_preferences) name the field.
    for bad, field in [
        ({"risk_profile": "yolo"}, "risk_profile"),
        ({"max_single_position": "1.5"}, "max_single_position"),
        ({"max_single_position": "0"}, "max_single_position"),
        ({"preferred_sectors": ["Crypto"]}, "preferred_sectors"),
        ({"excluded_sectors": ["Tech"]}, "excluded_sectors"),
        ({"preferred_sectors": ["Energy"], "excluded_sectors": ["Energy"]}, "preferred_sectors"),
    ]:
        code, details = await _code_of(
            stubs.strategy.UpdatePreferences(
                st_pb.UpdatePreferencesRequest(
                    preferences=st_pb.UserPreferences(user_id=uid, **bad)  # type: ignore[arg-type]
                ),
                timeout=5,
            )
        )
        assert code == INVALID and field in details, (bad, code, details)
    assert await asyncio.to_thread(version) == 3  # rejected updates change nothing


# --- errors ------------------------------------------------------------------------------------

STRATEGY_BAD: list[tuple[dict[str, Any], str]] = [
    ({}, "user_id"),
    ({}, "risk_profile"),
    ({"user_id": "a", "risk_profile": "moderate"}, "risk_profile"),
    ({"risk_profile": "Moderate"}, "risk_profile"),
    ({"risk_profile": "yolo"}, "risk_profile"),
    ({"user_id": "u" * 129}, "user_id"),
    ({"user_id": "bad\nid"}, "user_id"),
    ({"risk_profile": "moderate", "as_of": "2022-12-32"}, "as_of"),
    ({"risk_profile": "moderate", "as_of": "20221228"}, "as_of"),
    ({"risk_profile": "moderate", "as_of": "yesterday"}, "as_of"),
    ({"risk_profile": "moderate", "symbols": [""]}, "symbols"),
    ({"risk_profile": "moderate", "symbols": ["A" * 33]}, "symbols"),
    ({"risk_profile": "moderate", "symbols": ["AAPL;DROP"]}, "symbols"),
    ({"risk_profile": "moderate", "symbols": ["AAPL "]}, "symbols"),
    ({"risk_profile": "moderate", "symbols": ["S"] * 101}, "symbols"),
]


def _prefs_req(**kw: Any) -> st_pb.UpdatePreferencesRequest:
    return st_pb.UpdatePreferencesRequest(preferences=st_pb.UserPreferences(**kw))


PREFS_BAD: list[tuple[st_pb.UpdatePreferencesRequest, str]] = [
    (st_pb.UpdatePreferencesRequest(), "preferences"),
    (_prefs_req(), "user_id"),
    (_prefs_req(user_id="x" * 129), "user_id"),
    (_prefs_req(user_id="tab\there"), "user_id"),
    (_prefs_req(user_id="u", max_single_position="ten percent"), "max_single_position"),
    (_prefs_req(user_id="u", max_single_position="NaN"), "max_single_position"),
    (_prefs_req(user_id="u", max_single_position="1e-1"), "max_single_position"),
    (_prefs_req(user_id="u", max_single_position="0.12345"), "max_single_position"),
    (_prefs_req(user_id="u", max_single_position="9" * 40), "max_single_position"),
    (_prefs_req(user_id="u", preferred_sectors=["Energy"] * 65), "preferred_sectors"),
]


async def test_invalid_arguments_name_the_field(world: tuple[World, Stubs]) -> None:
    _, stubs = world
    for kw, name in STRATEGY_BAD:
        for rpc in (stubs.strategy.GetStrategy, stubs.strategy.GetStockPicks):
            code, details = await _code_of(rpc(st_pb.GetStrategyRequest(**kw), timeout=5))
            assert code == INVALID and name in details, (kw, code, details)
    for req, name in PREFS_BAD:
        code, details = await _code_of(stubs.strategy.UpdatePreferences(req, timeout=5))
        assert code == INVALID and name in details, (req, code, details)
    for user_id in ("", "u" * 129, "nul\x00"):
        code, details = await _code_of(
            stubs.strategy.GetPreferences(st_pb.GetPreferencesRequest(user_id=user_id), timeout=5)
        )
        assert code == INVALID and "user_id" in details, (user_id, details)
    for as_of in ("2022-02-30", "28/12/2022", "２０２２-１２-２８"):
        for call in (
            stubs.classification.GetSectorAnalysis(
                cl_pb.GetSectorAnalysisRequest(as_of=as_of), timeout=5
            ),
            stubs.classification.GetCandidateSymbols(
                cl_pb.GetCandidateSymbolsRequest(as_of=as_of), timeout=5
            ),
        ):
            code, details = await _code_of(call)
            assert code == INVALID and "as_of" in details, (as_of, details)
    for sectors in (["Tech"], ["energy"], ["Energy", ""]):
        code, details = await _code_of(
            stubs.classification.GetCandidateSymbols(
                cl_pb.GetCandidateSymbolsRequest(sectors=sectors), timeout=5
            )
        )
        assert code == INVALID and "sectors" in details, (sectors, details)


async def test_not_found(
    world: tuple[World, Stubs], stack_settings: Settings, harness: Harness
) -> None:
    w, stubs = world
    cases: list[tuple[Any, str]] = [
        (
            stubs.strategy.GetStrategy(
                st_pb.GetStrategyRequest(user_id=w.prefix + "nobody"), timeout=5
            ),
            "unknown user",
        ),
        (
            stubs.strategy.GetStrategy(
                st_pb.GetStrategyRequest(user_id=w.user_no_strategy), timeout=5
            ),
            "next pipeline run computes it",
        ),
        (
            stubs.strategy.GetStrategy(
                st_pb.GetStrategyRequest(user_id=w.user, as_of="2022-12-01"), timeout=5
            ),
            "2022-12-01",
        ),
        (
            stubs.strategy.GetStockPicks(
                st_pb.GetStrategyRequest(risk_profile="moderate", as_of="2021-01-04"), timeout=5
            ),
            "2021-01-04",
        ),
        (
            stubs.strategy.GetPreferences(
                st_pb.GetPreferencesRequest(user_id=w.prefix + "nobody"), timeout=5
            ),
            "unknown user",
        ),
        (
            stubs.classification.GetSectorAnalysis(
                cl_pb.GetSectorAnalysisRequest(as_of="2021-01-04"), timeout=5
            ),
            "2021-01-04",
        ),
        (
            stubs.classification.GetCandidateSymbols(
                cl_pb.GetCandidateSymbolsRequest(as_of="2021-01-04"), timeout=5
            ),
            "2021-01-04",
        ),
    ]
    for call, words in cases:
        code, details = await _code_of(call)
        assert code == NOT_FOUND and words in details, (code, details)

    # A model version with nothing stored.
    empty = stack_settings.model_copy(
        update={"model_version": f"regime-v2-grpcs-{uuid.uuid4().hex[-12:]}"}
    )
    srv, _ = await harness.start(empty)
    e = _stubs(harness, srv)
    for call in (
        e.strategy.GetStrategy(st_pb.GetStrategyRequest(risk_profile="moderate"), timeout=5),
        e.strategy.GetStrategy(st_pb.GetStrategyRequest(user_id=w.user), timeout=5),
        e.classification.GetSectorAnalysis(cl_pb.GetSectorAnalysisRequest(), timeout=5),
        e.classification.GetCandidateSymbols(cl_pb.GetCandidateSymbolsRequest(), timeout=5),
    ):
        code, details = await _code_of(call)
        assert code == NOT_FOUND, (code, details)


# --- NOTIFY refresh ----------------------------------------------------------------------------


async def test_notify_refreshes_strategies_and_sectors(
    stack_settings: Settings, harness: Harness
) -> None:
    w = _new_world(stack_settings)

    def seed(d: date, first: bool) -> None:
        with engine_for(w.settings.require("database_url")).begin() as conn:
            if first:
                _start_run(conn, w)
            _seed_day(
                conn,
                w,
                regime(d, "bear", run_id=w.run_id, model_version=w.mv),
                notify=f"strategy:{d.isoformat()}",
            )

    await asyncio.to_thread(seed, D1, True)
    # A 60 s poll: only LISTEN/NOTIFY can refresh the snapshot within a second.
    srv, _ = await harness.start(w.settings, poll_interval=60.0)
    s = _stubs(harness, srv)
    await _until(lambda: srv.refresher.listening, "LISTEN", 5)

    async def latest() -> tuple[str, str, str, str]:
        r = await s.strategy.GetStrategy(
            st_pb.GetStrategyRequest(risk_profile="moderate"), timeout=5
        )
        a = await s.classification.GetSectorAnalysis(cl_pb.GetSectorAnalysisRequest(), timeout=5)
        return r.strategy.as_of, r.served_from, a.as_of, a.served_from

    assert await latest() == ("2022-12-27", "snapshot", "2022-12-27", "snapshot")
    await asyncio.to_thread(seed, D2, False)
    want = ("2022-12-28", "snapshot", "2022-12-28", "snapshot")

    async def updated() -> bool:
        return await latest() == want

    # How soon after the commit is measured by bench freshness_p99, not asserted here.
    await _until(updated, "the snapshot to update", 3)
    resp = await s.strategy.GetStrategy(
        st_pb.GetStrategyRequest(risk_profile="moderate"), timeout=5
    )
    assert resp.strategy == _expected_profile(w, "moderate", D2)
    assert resp.regime.as_of == "2022-12-28"


# --- health, reflection, client -------------------------------------------------------------


async def _health(ch: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(resp.status)


async def _all_health(ch: grpc.aio.Channel, status: int) -> bool:
    names = (CLASSIFICATION_SERVICE_NAME, STRATEGY_SERVICE_NAME)
    return all([await _health(ch, n) == status for n in names])


async def test_health_and_reflection_list_both_services(world: tuple[World, Stubs]) -> None:
    w, stubs = world
    assert w.server is not None
    assert await _all_health(stubs.channel, SERVING)
    address = w.server.address
    listed = (await _run(GRPCURL, "-plaintext", address, "list")).split()
    assert {CLASSIFICATION_SERVICE_NAME, STRATEGY_SERVICE_NAME} <= set(listed), listed
    described = await _run(GRPCURL, "-plaintext", address, "describe", STRATEGY_SERVICE_NAME)
    for rpc in ("GetStrategy", "GetStockPicks", "GetPreferences", "UpdatePreferences"):
        assert rpc in described
    described = await _run(GRPCURL, "-plaintext", address, "describe", CLASSIFICATION_SERVICE_NAME)
    assert "GetSectorAnalysis" in described and "GetCandidateSymbols" in described
    out = await _run(
        GRPCURL,
        "-plaintext",
        "-d",
        json.dumps({"user_id": w.user, "symbols": ["UNH"]}),
        address,
        f"{STRATEGY_SERVICE_NAME}/GetStrategy",
    )
    body = json.loads(out)
    assert body["strategy"]["signals"][0]["entry_price"] == "233.2500", body


async def test_blocking_client_and_formatting(world: tuple[World, Stubs]) -> None:
    w, _ = world
    assert w.server is not None
    address = w.server.address
    d = await asyncio.to_thread(client.get_strategy, address, risk_profile="moderate")
    assert d["served_from"] == "snapshot" and d["strategy"]["as_of"] == "2022-12-28"
    assert d["strategy"]["signals"][0]["entry_price"] == "229.2500"
    assert d["regime"]["regime"] == "bear"
    out = client.format_strategy(d)
    assert "profile moderate" in out and "Cash        0.7450" in out, out
    row = next(line for line in out.splitlines() if line.startswith("KO "))
    assert row.split()[:3] == ["KO", "Consumer", "Staples"]
    assert "0.0850" in row and "229.2500" in row and "232.2500x0.33" in row, row

    u = await asyncio.to_thread(
        client.get_strategy, address, user_id=w.user, as_of=D1, symbols=["CVX"]
    )
    assert u["served_from"] == "postgres" and u["strategy"]["signals"][0]["symbol"] == "CVX"
    text_u = client.format_strategy(u)
    assert f"user {w.user}" in text_u and "Derived     from moderate:2022-12-27" in text_u

    sec = await asyncio.to_thread(client.get_sectors, address)
    assert sec["as_of"] == "2022-12-28" and sec["served_from"] == "snapshot"
    text_s = client.format_sectors(sec)
    assert "Consumer Staples" in text_s and "KO, JNJ, XOM, PG, UNH, CVX" in text_s, text_s
    cands = await asyncio.to_thread(
        client.get_candidates, address, "2022-12-28", sectors=["Energy"]
    )
    assert [c["symbol"] for c in cands["candidates"]] == ["XOM", "CVX"]

    uid = w.prefix + "dave"
    made = await asyncio.to_thread(
        client.update_preferences,
        address,
        uid,
        risk_profile="conservative",
        excluded_sectors=["Energy"],
        max_single_position=Decimal("0.05"),
    )
    assert made["max_single_position"] == "0.0500" and made["excluded_sectors"] == ["Energy"]
    got = await asyncio.to_thread(client.get_preferences, address, uid)
    assert got == made
    with pytest.raises(client.ClientError) as err:
        await asyncio.to_thread(client.get_strategy, address, risk_profile="nope")
    assert err.value.code == "INVALID_ARGUMENT" and "risk_profile" in err.value.details
    with pytest.raises(client.ClientError) as err:
        await asyncio.to_thread(client.get_preferences, address, w.prefix + "nobody")
    assert err.value.code == "NOT_FOUND"


# --- PostgreSQL outage: snapshot and Redis keep reads going ------------------------------------


def _run_keys(w: World, version: str) -> dict[str, tuple[str, int]]:
    """D2's keys as the pipeline's switch writes them (one MULTI/EXEC, every key a TTL): the
    shared keys and the pointer to the users' `version` (their keys written before it)."""
    analysis = sector_analysis_to_pb(
        _analysis(D2), run_id=w.run_id, model_version=w.mv, computed_at=AT
    )
    keys = {
        REGIME_CURRENT_KEY: (to_json(regime_to_pb(w.regimes[D2])), 120),
        sectors_key("bear"): (to_json(analysis), 120),
        USERS_VERSION_KEY: (version, 120),
    }
    for p in PROFILES:
        keys[strategy_key(p)] = (to_json(_expected_profile(w, p, D2)), 120)
    return keys


@pytest.mark.fault
async def test_reads_survive_a_postgres_outage(
    world: tuple[World, Stubs], stack_state_dir: Path, harness: Harness
) -> None:
    w, warm = world
    assert w.server is not None
    r = make_redis(w.settings.require("redis_url"))
    version = _new_version()
    keys = _run_keys(w, version)
    saved = {k: (r.get(k), r.pttl(k)) for k in (*keys, user_key(w.user, version))}
    write_user_keys(r, version, [(w.user, _redis_user_value(w, D2))], 120)
    write_run_keys(r, keys)
    # The warm server reads the new users' version (what the run's NOTIFY makes it do).
    w.server.refresher.poke()
    await _until(w.server.refresher.caught_up, "the round after the switch", 5)
    assert w.server.users_version.value == version
    expected_sectors = sector_analysis_to_pb(
        _analysis(D2), run_id=w.run_id, model_version=w.mv, computed_at=AT
    )
    profile_req = st_pb.GetStrategyRequest(risk_profile="moderate")
    await _stack("stop", "postgres", stack_state_dir)
    try:
        await _until(lambda: _all_health(warm.channel, NOT_SERVING), "NOT_SERVING", 5)
        # A warm server answers latest reads from its snapshot, users from Redis + its books.
        resp = await warm.strategy.GetStrategy(profile_req, timeout=5)
        assert resp.served_from == "snapshot" and resp.strategy.as_of == "2022-12-28"
        user = await warm.strategy.GetStrategy(st_pb.GetStrategyRequest(user_id=w.user), timeout=5)
        assert user.served_from == "redis"
        assert list(user.strategy.signals) == _expected_user_signals(w, D2)
        cands = await warm.classification.GetCandidateSymbols(
            cl_pb.GetCandidateSymbolsRequest(sectors=["Energy"]), timeout=5
        )
        assert [c.symbol for c in cands.candidates] == ["XOM", "CVX"]
        for call in (
            warm.strategy.GetStrategy(
                st_pb.GetStrategyRequest(risk_profile="moderate", as_of="2022-12-27"), timeout=5
            ),
            warm.strategy.GetPreferences(st_pb.GetPreferencesRequest(user_id=w.user), timeout=5),
            warm.strategy.UpdatePreferences(_prefs_req(user_id=w.prefix + "eve"), timeout=5),
            warm.classification.GetSectorAnalysis(
                cl_pb.GetSectorAnalysisRequest(as_of="2022-12-27"), timeout=5
            ),
        ):
            code, details = await _code_of(call)
            assert code == UNAVAILABLE and "PostgreSQL" in details, (code, details)

        # A fresh server has no snapshot: Redis.
        srv2, _ = await harness.start(w.settings, poll_interval=60.0)
        assert srv2.users_version.value == version  # read from Redis alone
        fresh = _stubs(harness, srv2)
        assert await _all_health(fresh.channel, NOT_SERVING)
        for profile in PROFILES:
            got = await fresh.strategy.GetStrategy(
                st_pb.GetStrategyRequest(risk_profile=profile), timeout=5
            )
            assert got.served_from == "redis"
            assert got.strategy == _expected_profile(w, profile, D2)
            assert got.regime == regime_to_pb(w.regimes[D2])
        picks = await fresh.strategy.GetStockPicks(
            st_pb.GetStrategyRequest(risk_profile="aggressive", symbols=["JNJ"]), timeout=5
        )
        assert picks.served_from == "redis" and [p.symbol for p in picks.picks] == ["JNJ"]
        sec = await fresh.classification.GetSectorAnalysis(
            cl_pb.GetSectorAnalysisRequest(), timeout=5
        )
        expected_sectors.served_from = "redis"
        assert sec == expected_sectors
        # Without a book to expand with (and the candidates' sectors live in the books):
        # these need PostgreSQL.
        for call in (
            fresh.strategy.GetStrategy(st_pb.GetStrategyRequest(user_id=w.user), timeout=5),
            fresh.classification.GetCandidateSymbols(cl_pb.GetCandidateSymbolsRequest(), timeout=5),
        ):
            code, details = await _code_of(call)
            assert code == UNAVAILABLE, (code, details)
    finally:
        await _stack("start", "postgres", stack_state_dir)
        for k, (value, pttl) in saved.items():
            if value is None:
                r.delete(k)
            else:
                r.set(k, value, px=int(pttl) if pttl > 0 else None)
        r.close()

    await _until(lambda: _all_health(warm.channel, SERVING), "SERVING again", 10)
    await _until(lambda: _all_health(fresh.channel, SERVING), "SERVING (fresh server)", 10)
    # PostgreSQL answers again: the fresh server's snapshot loads without waiting for its poll.
    await _until(lambda: srv2.strategy.snapshot.value is not None, "the fresh snapshot", 10)
    got = await fresh.strategy.GetStrategy(profile_req, timeout=5)
    assert got.served_from == "snapshot" and got.strategy == _expected_profile(w, "moderate", D2)


# --- fuzzing -----------------------------------------------------------------------------------

USER = "<the seeded user>"
_text = st.one_of(
    st.text(max_size=30),
    st.dates().map(date.isoformat),
    st.sampled_from(["", "2022-12-28", "2022-12-27", "0001-01-01", "9999-12-31", "2022-02-30"]),
    st.integers(0, 50_000).map(lambda n: "9" * n),  # huge
    st.integers(0, 20_000).map(lambda n: "é\U0001f600" * n),  # huge, multi-byte
)
_symbols = st.lists(
    st.one_of(st.sampled_from(["KO", "xom", "UNH", "BRK.B", "^GSPC", "A-B"]), st.text(max_size=40)),
    max_size=110,
)
_sectors = st.lists(st.one_of(st.sampled_from(GICS_SECTORS), st.text(max_size=25)), max_size=4)
_decimal = st.one_of(
    st.just(""),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["0.05", "1", "1.0000", "0.00001", "-0.1", "1e-2", ".5", "5.", "+0.1"]),
    st.text(max_size=12),
)


@hsettings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    user_id=st.one_of(st.just(USER), _text),
    profile=st.one_of(st.sampled_from([*PROFILES, ""]), st.text(max_size=12)),
    as_of=_text,
    symbols=_symbols,
    new_user=st.one_of(st.just(None), st.text(max_size=140)),
    new_profile=st.one_of(st.sampled_from([*PROFILES, ""]), st.text(max_size=12)),
    preferred=_sectors,
    excluded=_sectors,
    max_position=_decimal,
    sectors=_sectors,
)
async def test_fuzzed_requests_get_only_clean_statuses(
    world: tuple[World, Stubs],
    user_id: str,
    profile: str,
    as_of: str,
    symbols: list[str],
    new_user: str | None,
    new_profile: str,
    preferred: list[str],
    excluded: list[str],
    max_position: str,
    sectors: list[str],
) -> None:
    w, stubs = world
    user_id = w.user if user_id == USER else user_id
    req = st_pb.GetStrategyRequest(
        user_id=user_id, risk_profile=profile, as_of=as_of, symbols=symbols
    )
    prefs = st_pb.UserPreferences(
        # Only ids under this module's prefix can be created (they are deleted at the end).
        user_id="" if new_user is None else w.prefix + "f-" + new_user,
        risk_profile=new_profile,
        preferred_sectors=preferred,
        excluded_sectors=excluded,
        max_single_position=max_position,
    )
    calls = [
        stubs.strategy.GetStrategy(req, timeout=10),
        stubs.strategy.GetStockPicks(req, timeout=10),
        stubs.strategy.UpdatePreferences(
            st_pb.UpdatePreferencesRequest(preferences=prefs), timeout=10
        ),
        stubs.strategy.GetPreferences(st_pb.GetPreferencesRequest(user_id=user_id), timeout=10),
        stubs.classification.GetSectorAnalysis(
            cl_pb.GetSectorAnalysisRequest(as_of=as_of), timeout=10
        ),
        stubs.classification.GetCandidateSymbols(
            cl_pb.GetCandidateSymbolsRequest(as_of=as_of, sectors=sectors), timeout=10
        ),
    ]
    for call in calls:
        code, details = await _code_of(call)
        assert code in (OK, INVALID, NOT_FOUND), (code, details)
        if code == INVALID:
            assert any(f in details for f in FIELDS), details
