"""The pipeline's tier 2 and tier 3 steps as plain functions (tasks/ wraps them).

sectors -> three profile books and strategies -> every user's strategy (in chunks, which the
flow fans out: each loads, derives, stores and caches its own users) -> one small Redis
MULTI/EXEC that switches the run's keys and the users' version.
Each step is idempotent on its natural keys; events go to the outbox in the same transaction.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import redis
from sqlalchemy import Engine

from bloasis.config import Settings
from bloasis.marketdata import DataIssue, MarketData
from bloasis.pipeline import PipelineError
from bloasis.publish.cache import (
    OLD_USERS_VERSION_GRACE_S,
    REGIME_CURRENT_KEY,
    USERS_VERSION_KEY,
    expire_users_version,
    make_redis,
    new_users_version,
    read_users_version,
    sectors_key,
    strategy_key,
    write_run_keys,
    write_user_keys,
)
from bloasis.publish.events import (
    cache_signals_json,
    compact_signals_json,
    signal_fragments,
    strategy_event,
    symbol_signal_events,
    user_cache_json,
    user_event_id,
    user_strategy_event,
)
from bloasis.regime.types import RegimeResult
from bloasis.store import outbox, regimes
from bloasis.store import strategies as store
from bloasis.store.outbox import OutboxEvent
from bloasis.strategy.compact import positions_of
from bloasis.strategy.engine import ProfileBook
from bloasis.strategy.session import decide_session
from bloasis.strategy.types import PROFILES, SectorAnalysis, Strategy
from bloasis.strategy.users import derive_many
from bloasis.wire import regime_to_json, sector_analysis_to_pb, strategy_to_pb, to_json

log = logging.getLogger(__name__)
T = TypeVar("T")


def _regime_id(engine: Engine, regime: RegimeResult) -> int:
    with engine.connect() as conn:
        rid = regimes.regime_id_at(conn, regime.model_version, regime.as_of)
    if rid is None:
        raise PipelineError(f"no stored regime for {regime.as_of} ({regime.model_version})")
    return rid


@dataclass(frozen=True)
class TierOutcome:
    analysis: SectorAnalysis
    books: dict[str, ProfileBook]
    sectors_inserted: bool
    strategies_inserted: int
    events: int  # one StrategySignalEvent per strategy inserted
    quarantined: list[DataIssue] = field(default_factory=list)
    signal_events: int = 0  # the per-symbol events of those strategies (original contract)
    # Profiles already stored for this session whose stored book differs from the one just
    # recomputed (the data was revised since): profile -> what differs. Users derived from
    # the recomputed book could not be expanded with the stored one, so none may be.
    stale_books: dict[str, str] = field(default_factory=dict)
    # Profiles whose optimiser fell back to volatility-targeted weights: profile -> reason.
    optimiser_fallbacks: dict[str, dict[str, str]] = field(default_factory=dict)


def compute_and_store_tiers(
    engine: Engine,
    md: MarketData,
    regime: RegimeResult,
    *,
    run_id: uuid.UUID,
    top_n: int,
    min_history: int = 21,
    quarantine: bool = False,
    historical: bool = False,
) -> TierOutcome:
    """Sector analysis and the three profile strategies for the regime's as-of date
    (`historical`: an older session than the newest in the data; its events say so)."""
    as_of, mv = regime.as_of, regime.model_version
    decided = decide_session(
        md, regime, top_n=top_n, min_history=min_history, quarantine=quarantine
    )
    analysis, books, quarantined = decided.analysis, decided.books, decided.quarantined
    regime_id = _regime_id(engine, regime)
    now = datetime.now(UTC)
    n_strat = 0
    events: list[OutboxEvent] = []
    signal_events: list[OutboxEvent] = []
    stale: dict[str, str] = {}
    with engine.begin() as conn:
        sectors_new = store.insert_sector_analysis(
            conn, analysis, model_version=mv, regime_id=regime_id, run_id=run_id, computed_at=now
        )
        for book in books.values():
            s = book.strategy
            rows = book_rows(book)
            if store.insert_profile_strategy(
                conn,
                s,
                rows,
                model_version=mv,
                regime_id=regime_id,
                run_id=run_id,
                computed_at=now,
            ):
                n_strat += 1
                event = strategy_event(
                    s, run_id=run_id, model_version=mv, computed_at=now, historical=historical
                )
                events.append(event)
                signal_events.extend(
                    symbol_signal_events(
                        s, parent_id=event.event_id, computed_at=now, historical=historical
                    )
                )
            else:
                stored = store.get_stored_book(conn, strategy_id=s.strategy_id, model_version=mv)
                why = book_difference(stored or [], rows)
                if why:
                    stale[book.profile] = why
        n_events = outbox.enqueue(conn, events)
        n_signals = outbox.enqueue(conn, signal_events)
        if sectors_new or n_strat:
            outbox.notify_results(conn, f"strategy:{as_of.isoformat()}")
    fallbacks = {
        p: {"kind": b.optimiser_fallback, "note": b.optimiser_note}
        for p, b in books.items()
        if b.optimiser_fallback
    }
    return TierOutcome(
        analysis, books, sectors_new, n_strat, n_events, quarantined, n_signals, stale, fallbacks
    )


def book_difference(stored: Sequence[dict[str, Any]], fresh: Sequence[dict[str, Any]]) -> str:
    """'' when a stored book equals a recomputed one, else what differs first (JSON-normalised:
    the stored copy went through JSONB)."""
    fresh_n = json.loads(json.dumps(list(fresh)))
    if list(stored) == fresh_n:
        return ""
    before = {e["symbol"]: e for e in stored}
    after = {e["symbol"]: e for e in fresh_n}
    gone, new = sorted(before.keys() - after.keys()), sorted(after.keys() - before.keys())
    parts = [f"only in the stored book {gone}"] * bool(gone) + [
        f"only in the recomputed one {new}"
    ] * bool(new)
    if parts:
        return "symbols " + ", ".join(parts)
    changed = sorted(k for k in before if before[k] != after[k])
    if changed:
        return f"levels or scores differ for {changed[:5]}"
    return "the candidates are ranked in a different order"


def book_rows(book: ProfileBook) -> list[dict[str, Any]]:
    """The ranked candidates with their levels, as the strategy row stores them."""
    return [store.book_entry(p, s) for p, s in book.entries()]


# --- users -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UserChunk:
    """One chunk of derived user strategies with their stored (compact) form."""

    strategies: list[Strategy]
    records: list[store.UserStrategyRecord]
    seconds: float


def derive_chunk(
    books: dict[str, ProfileBook],
    users: Sequence[store.StoredPreferences],
    *,
    run_id: uuid.UUID,
    model_version: str,
    computed_at: datetime,
) -> UserChunk:
    """Pure and picklable: runs in a thread or on a Dask worker."""
    t0 = time.perf_counter()
    strategies = derive_many(books, [u.prefs for u in users], model_version=model_version)
    # Users whose derivation came out the same share one signals tuple: share positions too.
    shared: dict[int, list[dict[str, Any]]] = {}
    records = []
    for u, s in zip(users, strategies, strict=True):
        positions = shared.get(id(s.signals))
        if positions is None:
            positions = shared[id(s.signals)] = positions_of(s)
        records.append(
            store.UserStrategyRecord(
                user_id=u.prefs.user_id,
                as_of=s.as_of,
                model_version=model_version,
                profile_strategy_id=books[s.risk_profile].strategy.strategy_id,
                preferences_version=u.version,
                run_id=run_id,
                positions=positions,
                cash_weight=s.cash_weight,
                computed_at=computed_at,
            )
        )
    return UserChunk(strategies, records, time.perf_counter() - t0)


@dataclass(frozen=True)
class UserSlice:
    """A chunk of users, loaded where it is derived (a Dask worker): ids in [first, before)
    in id order (None: open), or the explicit `ids` of a run over some users."""

    first: str | None = None
    before: str | None = None
    ids: tuple[str, ...] | None = None


def user_slices(engine: Engine, user_ids: Sequence[str] | None, size: int) -> list[UserSlice]:
    """The run's chunks of `size` users, without loading them: a million users are a hundred
    id ranges (each task loads its own), so the flow's process never holds them all."""
    with engine.connect() as conn:
        if user_ids is not None:
            wanted = sorted(set(user_ids))
            missing = sorted(set(wanted) - store.known_users(conn, wanted))
            if missing:
                raise PipelineError(f"unknown users: {', '.join(missing[:10])}")
            return [UserSlice(ids=tuple(wanted[i : i + size])) for i in range(0, len(wanted), size)]
        starts = store.user_id_boundaries(conn, size)
    ends: list[str | None] = [*starts[1:], None] if starts else []
    return [UserSlice(a, b) for a, b in zip(starts, ends, strict=True)]


def load_slice(engine: Engine, part: UserSlice) -> list[store.StoredPreferences]:
    with engine.connect() as conn:
        return store.list_preferences(conn, part.ids, first=part.first, before=part.before)


@dataclass(frozen=True)
class UsersJob:
    """What every chunk of a run's users shares (small: sent with each task)."""

    run_id: uuid.UUID
    model_version: str
    computed_at: datetime
    historical: bool = False
    # The Redis version its user keys are written under (`bloasis.publish.cache`); None: none.
    cache_version: str | None = None
    # One event per signal for each user as well (the original contract's executor input).
    symbol_events: bool = True


@dataclass
class UsersOutcome:
    """A chunk's outcome, or the sum of a run's (`UsersOutcome.total`)."""

    users: int = 0
    written: int = 0
    events: int = 0  # one StrategySignalEvent per user strategy written
    signal_events: int = 0  # their per-symbol events (original contract)
    cached: int = 0  # Redis keys written under the run's cache version
    cache_errors: list[str] = field(default_factory=list)  # Redis unavailable for a chunk
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def total(cls, parts: Sequence[UsersOutcome]) -> UsersOutcome:
        out = cls()
        for p in parts:
            out.users += p.users
            out.written += p.written
            out.events += p.events
            out.signal_events += p.signal_events
            out.cached += p.cached
            out.cache_errors += p.cache_errors
            for k, v in p.timings.items():
                out.timings[k] = out.timings.get(k, 0.0) + v
        return out


def per_signals(fn: Callable[[Strategy], T]) -> Callable[[Strategy], T]:
    """`fn` memoised by the identity of the strategy's signals tuple, shared by the users whose
    derivation came out the same (`derive_many`). For one chunk: the tuples stay alive with
    its strategies, so an id is not reused meanwhile."""
    memo: dict[int, T] = {}

    def get(s: Strategy) -> T:
        got = memo.get(id(s.signals))
        if got is None:
            got = memo[id(s.signals)] = fn(s)
        return got

    return get


@dataclass
class StoredChunk:
    outcome: UsersOutcome
    redis: list[tuple[str, str]]  # (user id, compact proto3 JSON) as stored


def store_chunk(
    engine: Engine, chunk: UserChunk, *, historical: bool = False, symbol_events: bool = True
) -> StoredChunk:
    """One chunk's strategies in one transaction: new ones inserted, those computed from older
    preferences replaced; events only for what was written, so a rerun (a chunk retried after
    its worker died, a run repeated) writes nothing twice. The Redis values carry the
    provenance of the stored row (this run's, or the run that wrote it)."""
    out = UsersOutcome(timings={"derive_s": chunk.seconds})
    t0 = time.perf_counter()
    pairs = list(zip(chunk.strategies, chunk.records, strict=True))
    # Users whose derivation came out the same share one signals tuple: serialise it once.
    signals_json = per_signals(compact_signals_json)
    cache_json = per_signals(cache_signals_json)
    fragments = per_signals(signal_fragments)

    def user_event(s: Strategy, r: store.UserStrategyRecord) -> OutboxEvent:
        return user_strategy_event(
            s,
            computed_at=r.computed_at,
            profile_strategy_id=r.profile_strategy_id,
            preferences_version=r.preferences_version,
            signals_json=signals_json(s),
            historical=historical,
        )

    def signal_events(s: Strategy, r: store.UserStrategyRecord) -> list[OutboxEvent]:
        return symbol_signal_events(
            s,
            parent_id=user_event_id(s, r.preferences_version),
            computed_at=r.computed_at,
            historical=historical,
            fragments=fragments(s),
        )

    stored: dict[str, tuple[uuid.UUID, datetime]] = {}
    with engine.begin() as conn:
        written = store.upsert_user_strategies(conn, [r for _, r in pairs])
        t1 = time.perf_counter()
        mine = [(s, r) for s, r in pairs if r.user_id in written]
        out.events = outbox.copy_enqueue(conn, [user_event(s, r) for s, r in mine])
        if symbol_events:
            out.signal_events = outbox.copy_enqueue(
                conn, [e for s, r in mine for e in signal_events(s, r)]
            )
        out.timings["events_s"] = time.perf_counter() - t1
        if written:
            outbox.notify_results(conn, "users")
        if len(written) < len(pairs):
            r0 = pairs[0][1]
            others = [r.user_id for _, r in pairs if r.user_id not in written]
            stored = store.user_provenance(conn, r0.model_version, r0.as_of, others)
    out.timings["store_s"] = time.perf_counter() - t0 - out.timings["events_s"]
    t2 = time.perf_counter()
    values = []
    for s, r in pairs:
        run_id, at = (r.run_id, r.computed_at) if r.user_id in written else stored[r.user_id]
        values.append(
            (
                r.user_id,
                user_cache_json(
                    s,
                    run_id=run_id,
                    model_version=r.model_version,
                    computed_at=at,
                    profile_strategy_id=r.profile_strategy_id,
                    signals_json=cache_json(s),
                ),
            )
        )
    out.timings["redis_json_s"] = time.perf_counter() - t2
    out.users = len(pairs)
    # Rows this run wrote in an earlier attempt at this chunk (its worker died after the
    # commit; Dask ran it again) count as this run's, with the events that commit queued.
    again = {u for u, (rid, _) in stored.items() if rid == pairs[0][1].run_id}
    out.written = len(written) + len(again)
    if again:
        out.events += len(again)
        if symbol_events:
            out.signal_events += sum(len(s.signals) for s, r in pairs if r.user_id in again)
    return StoredChunk(out, values)


def cache_user_keys(
    redis_url: str, version: str, values: Sequence[tuple[str, str]], ttl: int
) -> tuple[int, str | None]:
    """Write a chunk's user keys under the run's version; (written, error). Redis being down
    is not the run's failure (PostgreSQL has the results; readers fall through to it), but it
    is reported: the run's summary counts the keys not written."""
    client = make_redis(redis_url, timeout=30)
    try:
        return write_user_keys(client, version, values, ttl), None
    except (redis.RedisError, OSError) as exc:
        log.warning("Redis unavailable, %d user keys not written: %s", len(values), exc)
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


def derive_store_cache(
    engine: Engine,
    books: dict[str, ProfileBook],
    part: UserSlice,
    job: UsersJob,
    *,
    redis_url: str | None,
    ttl: int,
) -> UsersOutcome:
    """One chunk of a run's users end to end (a task: on a Dask worker, its own connections):
    load, derive, store with its events, write its Redis keys. Only counts go back."""
    t0 = time.perf_counter()
    users = load_slice(engine, part)
    load_s = time.perf_counter() - t0
    if not users:
        return UsersOutcome(timings={"load_s": load_s})
    at = job.computed_at
    chunk = derive_chunk(books, users, run_id=job.run_id, model_version=job.model_version,
                         computed_at=at)  # fmt: skip
    del users
    got = store_chunk(engine, chunk, historical=job.historical, symbol_events=job.symbol_events)
    out = got.outcome
    out.timings["load_s"] = load_s
    if job.cache_version and redis_url:
        t1 = time.perf_counter()
        out.cached, error = cache_user_keys(redis_url, job.cache_version, got.redis, ttl)
        if error:
            out.cache_errors.append(error)
        out.timings["cache_s"] = time.perf_counter() - t1
    return out


def is_current(engine: Engine, model_version: str, as_of: date) -> bool:
    """The session is the current one (its regime is what `market:regime:current` shows, an
    operator override included): only then are its users' Redis keys written."""
    with engine.connect() as conn:
        current = regimes.current_regime(conn, model_version)
    return current is not None and current.as_of == as_of


def users_cache_version(
    redis_url: str | None, run_id: uuid.UUID, *, every_user: bool
) -> str | None:
    """The version a run writes its user keys under: a new one when it derives every user (the
    switch then names it); the current one for a run over some users (their keys replace the
    current ones in place). None without Redis, or when it cannot be read (the keys are then
    not written; readers use PostgreSQL)."""
    if not redis_url:
        return None
    if every_user:
        return new_users_version(run_id)
    client = make_redis(redis_url)
    try:
        return read_users_version(client) or new_users_version(run_id)
    except (redis.RedisError, OSError) as exc:
        log.warning("Redis unavailable, the users' keys will not be written: %s", exc)
        return None
    finally:
        client.close()


def publish_run(
    engine: Engine,
    settings: Settings,
    *,
    model_version: str,
    as_of: date,
    with_strategies: bool,
    users_version: str | None = None,
) -> str:
    """Switch the run's Redis keys in one small MULTI/EXEC, values as stored: regime, sectors,
    profile strategies and the pointer to `users_version`, whose user keys the run's chunks
    wrote before (`derive_store_cache`). An older as-of than what is current only refreshes
    the current regime key (current stays current)."""
    with engine.connect() as conn:
        current = regimes.current_regime(conn, model_version)  # an operator override included
        if current is None:
            return "nothing stored"
        values = {REGIME_CURRENT_KEY: (regime_to_json(current), settings.regime_ttl_seconds)}
        is_current = current.as_of == as_of
        if is_current and with_strategies:
            got = store.get_sector_analysis(conn, model_version, as_of)
            if got is not None:
                analysis, prov = got
                pb = sector_analysis_to_pb(
                    analysis,
                    run_id=prov.run_id,
                    model_version=model_version,
                    computed_at=prov.computed_at,
                )
                values[sectors_key(analysis.regime)] = (to_json(pb), settings.sectors_ttl_seconds)
            for profile in PROFILES:
                row = store.get_profile_strategy(conn, model_version, profile, as_of)
                if row is not None:
                    strat, _, prov = row
                    spb = strategy_to_pb(
                        strat,
                        run_id=prov.run_id,
                        model_version=model_version,
                        computed_at=prov.computed_at,
                    )
                    values[strategy_key(profile)] = (to_json(spb), settings.strategy_ttl_seconds)
    if is_current and users_version is not None:
        values[USERS_VERSION_KEY] = (users_version, settings.strategy_ttl_seconds)
    client = make_redis(settings.require("redis_url"), timeout=30)
    expired = 0
    try:
        previous = read_users_version(client) if USERS_VERSION_KEY in values else None
        write_run_keys(client, values)
    except redis.RedisError as exc:
        client.close()
        log.warning("Redis unavailable, keys will be repaired by the next run: %s", exc)
        return "redis unavailable"
    try:
        if previous and previous != users_version:
            expired = expire_users_version(client, previous)
    except redis.RedisError as exc:
        # The switch is done: the old version's keys just live out their own TTL.
        log.warning("the previous user keys (%s) keep their TTL: %s", previous, exc)
    finally:
        client.close()
    # Servers drop the answers they cached from the old keys (bloasis.serve.answer_cache):
    # the run's commit notified them before these keys switched.
    with engine.begin() as conn:
        outbox.notify_results(conn, "redis keys switched")
    what = "current" if is_current else f"older than current {current.as_of}: regime key only"
    old = f"; the previous version's {expired} user keys expire in {OLD_USERS_VERSION_GRACE_S} s"
    return f"{len(values)} Redis keys switched ({what}){old if expired else ''}"
