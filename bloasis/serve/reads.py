"""What the server reads, once for every API version: the current regime and its history, the
sector analysis, profile and user strategies, preferences — each "latest" read one
`ReadThrough` over snapshot -> Redis -> PostgreSQL, each dated read PostgreSQL.

The v1 and v2 servicers (`bloasis.serve.<service>_v1/_v2`) only parse requests and shape
answers; nothing here knows a wire version beyond the v2 messages the values are kept in (the
Redis values and the snapshot's encoded forms are v2 proto3).

Latest reads (empty `as_of`):
- current regime: snapshot (an operator override from SaveRegime wins over the computed
  regime of the same or an earlier session) -> Redis `market:regime:current` -> PostgreSQL;
- sector analysis: snapshot -> Redis `sectors:{regime}:analysis` -> PostgreSQL;
- a risk profile's strategy: snapshot (every profile's latest with its book and regime) ->
  Redis `strategy:{profile}:current` -> PostgreSQL;
- a user's strategy: not snapshotted (there may be 100k users): Redis
  `user:{id}:strategy@{version}` (compact) of the version the pointer
  `user-strategies:version` names — itself snapshotted (`users_version`), so every user is
  read from one run — expanded with the snapshot's book of the profile strategy it names ->
  PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

import grpc
import redis
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from bloasis import metrics
from bloasis.pb.v2 import classification_pb2 as cl_pb
from bloasis.pb.v2 import common_pb2, strategy_pb2
from bloasis.publish.cache import (
    preferences_key,
    read_current_regime,
    read_users_version,
    sectors_key,
    strategy_key,
    user_key,
)
from bloasis.regime.types import REGIMES, RegimeResult
from bloasis.serve.readthrough import (
    SERVED_FROM_POSTGRES,
    SERVED_FROM_REDIS,
    FnLayer,
    ReadThrough,
    SnapshotLayer,
)
from bloasis.serve.snapshot import Snapshot, StoreRefresher
from bloasis.serve.store_access import UNREADABLE, StoreAccess
from bloasis.serve.validation import RequestError, invalid, not_found, show
from bloasis.store.regimes import current_regime, override_version, regime_at
from bloasis.store.strategies import (
    Stored,
    StoredPreferences,
    UserStrategyRecord,
    get_preferences,
    get_profile_strategy,
    get_sector_analysis,
    get_user_strategy,
    upsert_preferences,
)
from bloasis.strategy.compact import expand
from bloasis.strategy.types import PROFILES, SectorAnalysis, Strategy, UserPreferences
from bloasis.strategy.users import validate_preferences
from bloasis.wire import regime_to_pb, sector_analysis_to_pb, strategy_to_pb

log = logging.getLogger(__name__)

# Distinct stored user values expanded and kept (users with the same derivation share one).
USER_BASES: Final = 50_000
# Users whose write generation is remembered (see `user_version`).
USER_GENERATIONS: Final = 1_000_000
# The fields of a compact user value that make its content (with its signals), beside the
# user's own ids.
_CONTENT_FIELDS: Final = (
    "profile_strategy_id",
    "as_of",
    "risk_profile",
    "cash_weight",
    "rationale",
    "run_id",
    "computed_at",
    "regime",
    "risk_level",
)


def as_of_text(as_of: date | None) -> str:
    return f"as of {as_of.isoformat()}" if as_of is not None else "yet"


def parse_json(raw: object, msg: Any, what: str) -> Any | None:
    """A Redis value as a message, or None (missing, or unreadable: a cache miss, counted and
    logged once per value as unreadable, not as Redis being unavailable)."""
    if not isinstance(raw, bytes | str) or not raw:
        return None
    try:
        return json_format.Parse(raw, msg, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        UNREADABLE.note_value(what, raw, exc)  # counted; logged once per value
        return None


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp as proto3 JSON writes it (`Z`, up to 9 fractional digits)."""
    ts = Timestamp()
    ts.FromJsonString(text)
    return ts.ToDatetime(tzinfo=UTC)


def _preferences_json(p: UserPreferences) -> str:
    return json.dumps(
        {
            "user_id": p.user_id,
            "risk_profile": p.risk_profile,
            "preferred_sectors": list(p.preferred_sectors),
            "excluded_sectors": list(p.excluded_sectors),
            "max_single_position": str(p.max_single_position),
        },
        separators=(",", ":"),
    )


def _preferences_from_json(raw: bytes, user_id: str) -> UserPreferences:
    d = json.loads(raw)
    if d["user_id"] != user_id:
        raise ValueError(f"the value is {d['user_id']!r}'s")
    return UserPreferences(
        user_id=user_id,
        risk_profile=d["risk_profile"],
        preferred_sectors=tuple(d["preferred_sectors"]),
        excluded_sectors=tuple(d["excluded_sectors"]),
        max_single_position=Decimal(d["max_single_position"]),
    )


def regime_pb(r: RegimeResult | None) -> common_pb2.MarketRegime | None:
    return regime_to_pb(r) if r is not None else None


# --------------------------------------------------------------------------------------------
# Regime.
# --------------------------------------------------------------------------------------------


class RegimeReads:
    def __init__(
        self,
        model_version: str,
        store: StoreAccess,
        snapshot: Snapshot[RegimeResult],
        refresher: StoreRefresher,
    ) -> None:
        self.model_version = model_version
        self.override_version = override_version(model_version)
        self.store = store
        self.snapshot = snapshot
        self.refresher = refresher
        self.current_rt: ReadThrough[None, RegimeResult] = ReadThrough(
            "regime",
            [
                SnapshotLayer(snapshot, lambda v, _k: v),
                FnLayer(SERVED_FROM_REDIS, self._redis),
                FnLayer(SERVED_FROM_POSTGRES, self._postgres),
            ],
            refresher=refresher,
        )

    def load_current(self) -> RegimeResult | None:
        """Blocking: what is current — the latest computed regime, or an operator override of
        the same or a later session (served until the next computed session)."""
        with self.store.engine.connect() as conn:
            return current_regime(conn, self.model_version)

    async def _redis(self, _key: None, _context: Any) -> RegimeResult | None:
        if not self.store.settings.redis_url:
            return None
        value = await self.store.redis_call(read_current_regime, "reading the current regime")
        if value is not None and value.model_version not in (
            self.model_version,
            self.override_version,
        ):
            return None  # written by another model version: not what this server serves
        return value

    async def _postgres(self, _key: None, context: Any) -> RegimeResult | None:
        return await self.store.call(self.load_current, context, "reading the current regime")

    async def current(
        self, context: Any, *, force_refresh: bool = False
    ) -> tuple[RegimeResult | None, str]:
        return await self.current_rt.get(
            None, context, start=SERVED_FROM_POSTGRES if force_refresh else None
        )

    def not_found(self) -> RequestError:
        return not_found(f"no regime stored yet for model {self.model_version}; run the pipeline")


# --------------------------------------------------------------------------------------------
# Sector analysis.
# --------------------------------------------------------------------------------------------

LatestSectors = tuple[SectorAnalysis, Stored]


def analysis_pb(got: LatestSectors) -> cl_pb.SectorAnalysis:
    analysis, stored = got
    return sector_analysis_to_pb(
        analysis,
        run_id=stored.run_id,
        model_version=stored.model_version,
        computed_at=stored.computed_at,
    )


class SectorReads:
    def __init__(
        self,
        model_version: str,
        store: StoreAccess,
        snapshot: Snapshot[LatestSectors],
        strategies: Snapshot[LatestStrategies],
        refresher: StoreRefresher,
    ) -> None:
        self.model_version = model_version
        self.store = store
        self.snapshot = snapshot
        self.strategies = strategies
        self.latest_rt: ReadThrough[None, cl_pb.SectorAnalysis] = ReadThrough(
            "sectors",
            [
                SnapshotLayer(snapshot, lambda v, _k: analysis_pb(v)),
                FnLayer(SERVED_FROM_REDIS, self._redis),
                FnLayer(SERVED_FROM_POSTGRES, self._postgres),
            ],
            refresher=refresher,
        )

    def load_latest(self) -> LatestSectors | None:
        """Blocking: the analysis with the latest as-of stored for this model version."""
        return self._load(None)

    def _load(self, as_of: date | None) -> LatestSectors | None:
        with self.store.engine.connect() as conn:
            return get_sector_analysis(conn, self.model_version, as_of)

    def _read_redis(self, client: redis.Redis) -> cl_pb.SectorAnalysis | None:
        # The key names the regime, and a regime-only run may already have moved
        # `market:regime:current` on: read the keys of all five labels in one MGET (no SCAN over
        # a keyspace holding every user) and keep the newest of this model version.
        keys = [sectors_key(label) for label in REGIMES]
        best: cl_pb.SectorAnalysis | None = None
        for key, raw in zip(keys, client.mget(keys), strict=True):
            pb = parse_json(raw, cl_pb.SectorAnalysis(), key)
            if pb is None or pb.model_version != self.model_version or not _is_date(pb.as_of):
                continue
            order = (pb.as_of, pb.computed_at.seconds, pb.computed_at.nanos)
            if best is None or order > (
                best.as_of,
                best.computed_at.seconds,
                best.computed_at.nanos,
            ):
                best = pb
        return best

    async def _redis(self, _key: None, _context: Any) -> cl_pb.SectorAnalysis | None:
        if not self.store.settings.redis_url:
            return None
        return await self.store.redis_call(self._read_redis, "reading the sector analysis")

    async def _postgres(self, _key: None, context: Any) -> cl_pb.SectorAnalysis | None:
        got = await self.store.call(lambda: self._load(None), context, "reading sector analysis")
        return analysis_pb(got) if got is not None else None

    async def analysis(
        self, as_of: date | None, context: Any, *, force_refresh: bool = False
    ) -> cl_pb.SectorAnalysis:
        """The analysis (served_from set); NOT_FOUND when none is stored for that date."""
        if as_of is None:
            start = SERVED_FROM_POSTGRES if force_refresh else None
            pb, source = await self.latest_rt.get(None, context, start=start)
        else:
            got = await self.store.call(
                lambda: self._load(as_of), context, "reading sector analysis"
            )
            pb, source = (analysis_pb(got) if got else None), SERVED_FROM_POSTGRES
        if pb is None:
            raise not_found(
                f"no sector analysis stored {as_of_text(as_of)} for model {self.model_version}"
                + ("; run the pipeline" if as_of is None else "")
            )
        pb.served_from = source
        return pb

    def _read_books(self, as_of: date) -> list[list[dict[str, Any]]]:
        with self.store.engine.connect() as conn:
            return [
                got[1]
                for p in PROFILES
                if (got := get_profile_strategy(conn, self.model_version, p, as_of)) is not None
            ]

    async def books(self, as_of: date, context: Any) -> list[list[dict[str, Any]]]:
        """The profile books (ranked candidates: symbol, sector, scores, levels) of `as_of`:
        the snapshot's when it holds that as-of, else PostgreSQL's."""
        latest = self.strategies.value or {}
        books = [e.book for e in latest.values() if e.strategy.as_of == as_of]
        if books:
            return books
        return await self.store.call(
            lambda: self._read_books(as_of), context, "reading the candidates' books"
        )

    async def candidate_sectors(self, as_of: date, context: Any) -> dict[str, str]:
        """symbol -> sector for the candidates of `as_of`, from the profile books of that as-of.

        The stored analysis keeps candidate symbols only; every candidate is ranked in the
        books, which carry its sector."""
        return sectors_of(await self.books(as_of, context))


def sectors_of(books: Iterable[Sequence[dict[str, Any]]]) -> dict[str, str]:
    return {e["symbol"]: e["sector"] for book in books for e in book}


# --------------------------------------------------------------------------------------------
# Strategies.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileStrategy:
    """A stored profile strategy with what serving it needs: its book and its regime row."""

    strategy: Strategy
    book: list[dict[str, Any]]  # ranked candidates with levels, beyond the top picks
    stored: Stored
    regime: RegimeResult | None  # the regime of the strategy's as-of (None: row missing)

    def to_pb(self) -> strategy_pb2.Strategy:
        return strategy_to_pb(
            self.strategy,
            run_id=self.stored.run_id,
            model_version=self.stored.model_version,
            computed_at=self.stored.computed_at,
        )


# Risk profile -> its latest strategy. Profiles are looked up independently, so a profile whose
# latest run is older than the others' still has its latest strategy served.
LatestStrategies = dict[str, ProfileStrategy]


def load_profile_strategy(
    conn: Any,
    model_version: str,
    profile: str,
    as_of: date | None = None,
    *,
    strategy_id: str | None = None,
) -> ProfileStrategy | None:
    """Blocking: the profile's strategy of `as_of` (latest when None), with book and regime.

    With `strategy_id`, None unless the stored strategy has that id (the regime is then only
    read for the match)."""
    got = get_profile_strategy(conn, model_version, profile, as_of)
    if got is None:
        return None
    strategy, book, stored = got
    if strategy_id is not None and strategy.strategy_id != strategy_id:
        return None
    return ProfileStrategy(strategy, book, stored, regime_at(conn, model_version, strategy.as_of))


def by_strategy_id(latest: LatestStrategies | None, strategy_id: str) -> ProfileStrategy | None:
    if latest is None:
        return None
    return next((e for e in latest.values() if e.strategy.strategy_id == strategy_id), None)


@dataclass(frozen=True)
class Served:
    strategy: strategy_pb2.Strategy
    regime: common_pb2.MarketRegime | None
    served_from: str


@dataclass(frozen=True)
class UserServed:
    """A user's latest strategy in two parts: `base`, the expanded strategy without the user's
    ids — read-only and shared by every user whose stored value has the same content (users
    with the same derivation: `key`) — and the ids. Answers are built the same way (a shared
    body and a small per-user tail: serialised messages concatenate and nested ones merge), so
    100,000 users' answers fit in memory."""

    base: strategy_pb2.Strategy
    strategy_id: str
    user_id: str
    regime: common_pb2.MarketRegime | None
    served_from: str
    key: tuple[object, ...] | None  # None: not shared (read from PostgreSQL)

    def full(self) -> strategy_pb2.Strategy:
        """A fresh, whole copy the caller may edit."""
        pb = strategy_pb2.Strategy()
        pb.CopyFrom(self.base)
        pb.strategy_id, pb.user_id = self.strategy_id, self.user_id
        return pb


class SharedBodies:
    """Serialised bodies built from a `UserServed.base` (and its regime), kept while that base
    is the one served: every user with the same content shares the bytes. Bounded: the oldest
    dropped first."""

    def __init__(self, build: Callable[[UserServed], bytes], size: int = USER_BASES) -> None:
        self.build = build
        self.size = size
        self._memo: dict[int, tuple[strategy_pb2.Strategy, object, bytes]] = {}

    def get(self, u: UserServed) -> bytes:
        if u.key is None:
            return self.build(u)  # read from PostgreSQL: nobody shares it
        got = self._memo.get(id(u.base))
        if got is not None and got[0] is u.base and got[1] is u.regime:
            return got[2]
        body = self.build(u)
        if len(self._memo) >= self.size:
            del self._memo[next(iter(self._memo))]
        self._memo[id(u.base)] = (u.base, u.regime, body)
        return body


@dataclass(frozen=True)
class _Base:
    """An expansion of a user value's content with the snapshot entry it names."""

    entry: ProfileStrategy
    base: strategy_pb2.Strategy
    regime: common_pb2.MarketRegime | None


def user_strategy_id(user_id: str, as_of: str, model_version: str) -> str:
    """The deterministic id of a user strategy (user, ISO as-of, model version): neither the
    user_strategies rows nor the Redis values store it; this is
    `bloasis.strategy.users.user_strategy_id` without the book (a test pins the two together)."""
    return f"user:{user_id}:{as_of}:{model_version}"


class StrategyReads:
    """Profile and user strategies; `served` strategies are fresh messages the caller may edit."""

    def __init__(
        self,
        model_version: str,
        store: StoreAccess,
        snapshot: Snapshot[LatestStrategies],
        regimes: Snapshot[RegimeResult],
        users_version: Snapshot[str],
        refresher: StoreRefresher,
        *,
        prefs_ttl: float = 0,
    ) -> None:
        """`users_version`: the version of the Redis user keys to read (the pointer
        `user-strategies:version`, kept fresh with `load_users_version`); while its value is
        None, users are read from PostgreSQL."""
        self.model_version = model_version
        self.store = store
        self.snapshot = snapshot
        self.regimes = regimes
        self.users_version = users_version
        self.refresher = refresher
        self.profile_rt: ReadThrough[str, Served] = ReadThrough(
            "strategy",
            [
                SnapshotLayer(snapshot, self._from_snapshot),
                FnLayer(SERVED_FROM_REDIS, self._profile_redis),
                FnLayer(SERVED_FROM_POSTGRES, self._profile_postgres),
            ],
            refresher=refresher,
        )
        self.user_rt: ReadThrough[str, UserServed] = ReadThrough(
            "user_strategy",
            [
                FnLayer(SERVED_FROM_REDIS, self._user_redis),
                FnLayer(SERVED_FROM_POSTGRES, self._user_postgres),
            ],
        )
        # The user read's memo (Redis is still read on every call, so a changed value is served
        # at once): the expansion of a stored value's content (everything but the user's ids)
        # with the snapshot entry it names. Bounded: the oldest dropped first.
        self._bases: dict[tuple[object, ...], _Base] = {}
        # Per user, bumped by every write here (preferences, a recompute): answers cached for
        # a user are only valid at the generation they were read at (`user_version`).
        self._user_gen: dict[str, int] = {}
        # Bumped when that table is emptied (bounded): answers read before then never match.
        self._gen_epoch = 0
        self.prefs_ttl = int(prefs_ttl)

    def user_version(self, user_id: str) -> tuple[object, ...] | None:
        """The data a user's latest answer depends on (the answer cache's version): the
        snapshot values (the Redis user keys' version among them), the user's write generation
        here, and the count of result notifications (a users-only run elsewhere changes no
        snapshot, but it notifies, and notifies again once its Redis keys are switched); None
        while nothing is loaded."""
        strategies = self.snapshot.value
        if strategies is None:
            return None
        gen = self._user_gen.get(user_id, 0)
        return (
            strategies,
            self.regimes.value,
            self.users_version.value,
            gen,
            self._gen_epoch,
            self.refresher.notifications,
        )

    def user_changed(self, user_id: str) -> None:
        """A write for `user_id` happened (or may have: call it on failures too)."""
        if len(self._user_gen) >= USER_GENERATIONS:
            # Bounded: forget every generation, and move the epoch so that no answer read
            # before (at any generation) matches again.
            self._user_gen.clear()
            self._gen_epoch += 1
        self._user_gen[user_id] = self._user_gen.get(user_id, 0) + 1

    # --- preferences -------------------------------------------------------------------------

    def get_preferences(self, user_id: str) -> StoredPreferences:
        """Blocking: the user's preferences; NOT_FOUND for an unknown user."""
        with self.store.engine.connect() as conn:
            stored = get_preferences(conn, user_id)
        if stored is None:
            raise not_found(f"unknown user {show(user_id)}: no preferences stored")
        return stored

    def upsert_preferences(self, prefs: UserPreferences) -> StoredPreferences:
        with self.store.engine.begin() as conn:
            return upsert_preferences(conn, prefs)

    async def update_preferences(self, prefs: UserPreferences, context: Any) -> StoredPreferences:
        """Check the domain rules (INVALID_ARGUMENT naming the fields) and store (v1 and v2)."""
        errors = validate_preferences(prefs)
        if errors:
            raise invalid("; ".join(errors))
        try:
            return await self.store.call(
                lambda: self.upsert_preferences(prefs), context, "storing preferences"
            )
        finally:
            # Even on a timeout: the upsert may still commit.
            await self.preferences_changed(prefs.user_id)

    async def preferences_changed(self, user_id: str) -> None:
        """After a change (or an attempt): answers and the Redis copy of `user_id`'s
        preferences are dropped (the next read takes them from PostgreSQL)."""
        self.user_changed(user_id)
        await self.store.redis_delete(preferences_key(user_id), "dropping cached preferences")

    async def preferences(self, user_id: str, context: Any) -> UserPreferences:
        """The user's preferences for a strategy answer: Redis `user:{id}:preferences`, else
        PostgreSQL (NOT_FOUND for an unknown user), copied to Redis for the next reads. A
        change through the API drops the copy; a change it misses (written to PostgreSQL
        directly, or a read racing a change) lasts at most the TTL,
        BLOASIS_USER_STRATEGY_CACHE_SECONDS: the bound the answer cache already has."""
        key = preferences_key(user_id)
        raw = await self.store.redis_get(key, "reading cached preferences")
        if raw:
            try:
                return _preferences_from_json(raw, user_id)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring an unreadable Redis value for %s: %r", key, exc)
        stored = await self.store.call(
            lambda: self.get_preferences(user_id), context, "reading preferences"
        )
        if self.prefs_ttl > 0:
            await self.store.redis_set(
                key, _preferences_json(stored.prefs), self.prefs_ttl, "caching preferences"
            )
        return stored.prefs

    def load_users_version(self) -> str | None:
        """Blocking (the `users_version` snapshot's loader): the version the pointer
        `user-strategies:version` names, None when it is not set. Redis failing raises (the
        refresher logs it and keeps the version it had)."""
        return read_users_version(self.store.sync_redis())

    def load_latest(self) -> LatestStrategies | None:
        """Blocking: every profile's latest strategy, read in one consistent database snapshot."""
        with self.store.engine.connect() as conn:
            # One REPEATABLE READ transaction: a run committing mid-load cannot mix into it.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            out = {
                p: e
                for p in PROFILES
                if (e := load_profile_strategy(conn, self.model_version, p)) is not None
            }
        return out or None

    # --- profile strategies ------------------------------------------------------------------

    @staticmethod
    def _from_snapshot(latest: LatestStrategies, profile: str) -> Served | None:
        e = latest.get(profile)
        return None if e is None else Served(e.to_pb(), regime_pb(e.regime), "")

    def _load_profile(self, profile: str, as_of: date | None) -> ProfileStrategy | None:
        with self.store.engine.connect() as conn:
            return load_profile_strategy(conn, self.model_version, profile, as_of)

    def _read_redis_profile(
        self, client: redis.Redis, profile: str
    ) -> strategy_pb2.Strategy | None:
        key = strategy_key(profile)
        pb = parse_json(client.get(key), strategy_pb2.Strategy(), key)
        if pb is None or pb.model_version != self.model_version or pb.risk_profile != profile:
            return None
        return pb if _is_date(pb.as_of) else None

    async def _regime_for_cached(self, as_of: date, context: Any) -> RegimeResult | None:
        """The regime of a strategy read from Redis: the regime snapshot, Redis, then PostgreSQL
        (when that is down too the strategy is still served, without its regime)."""
        current = self.regimes.value
        if current is not None and current.as_of == as_of:
            return current
        cached = await self.store.redis_call(read_current_regime, "reading the current regime")
        if cached is not None and (cached.model_version, cached.as_of) == (
            self.model_version,
            as_of,
        ):
            return cached

        def _at() -> RegimeResult | None:
            with self.store.engine.connect() as conn:
                return regime_at(conn, self.model_version, as_of)

        try:
            return await self.store.call(_at, context, "reading the strategy's regime")
        except RequestError as exc:
            if exc.code != grpc.StatusCode.UNAVAILABLE:
                raise
            log.warning("serving a cached strategy without its regime: %s", exc.details)
            return None

    async def _profile_redis(self, profile: str, context: Any) -> Served | None:
        if not self.store.settings.redis_url:
            return None
        cached = await self.store.redis_call(
            lambda c: self._read_redis_profile(c, profile), f"reading the {profile} strategy"
        )
        if cached is None:
            return None
        regime = await self._regime_for_cached(date.fromisoformat(cached.as_of), context)
        return Served(cached, regime_pb(regime), "")

    async def _profile_postgres(self, profile: str, context: Any) -> Served | None:
        e = await self.store.call(
            lambda: self._load_profile(profile, None), context, f"reading the {profile} strategy"
        )
        return None if e is None else Served(e.to_pb(), regime_pb(e.regime), "")

    async def profile(self, profile: str, as_of: date | None, context: Any) -> Served:
        if as_of is None:
            got, source = await self.profile_rt.get(profile, context)
        else:
            e = await self.store.call(
                lambda: self._load_profile(profile, as_of),
                context,
                f"reading the {profile} strategy",
            )
            got = None if e is None else Served(e.to_pb(), regime_pb(e.regime), "")
            source = SERVED_FROM_POSTGRES
        if got is None:
            raise not_found(
                f"no {profile} strategy stored {as_of_text(as_of)} "
                f"for model {self.model_version}" + ("; run the pipeline" if as_of is None else "")
            )
        return Served(got.strategy, got.regime, source)

    # --- user strategies ---------------------------------------------------------------------

    def _content(
        self, raw: bytes, user_id: str, redis_key: str
    ) -> tuple[tuple[object, ...], dict[str, Any]] | None:
        """The compact value of `redis_key` (`user:{id}:strategy@{version}`): its content key
        and fields; None (a miss) when it is unreadable or not this user's value of this model
        version."""
        try:
            d = json.loads(raw)
        except ValueError as exc:
            UNREADABLE.note_value(redis_key, raw, exc)  # counted; logged once per value
            return None
        if (
            not isinstance(d, dict)
            or d.get("model_version") != self.model_version
            or d.get("user_id") != user_id
            or not isinstance(d.get("signals"), list)
        ):
            return None
        key = (
            *(str(d.get(k, "")) for k in _CONTENT_FIELDS),
            json.dumps(d["signals"], sort_keys=True, separators=(",", ":")),
        )
        return key, d

    def _record(self, d: dict[str, Any], user_id: str) -> UserStrategyRecord:
        # The compact form has no picks: signals are in the user's rank order (as `positions_of`
        # stores them), whereas the book's ranks are the profile's.
        positions: list[dict[str, Any]] = [
            {
                "symbol": g["symbol"],
                "sector": g.get("sector", ""),
                "action": g["action"],
                "weight": g["weight"],
                "rank": rank,
            }
            for rank, g in enumerate(d["signals"], start=1)
        ]
        return UserStrategyRecord(
            user_id=user_id,
            as_of=date.fromisoformat(d["as_of"]),
            model_version=d["model_version"],
            profile_strategy_id=d["profile_strategy_id"],
            preferences_version=0,  # not in the cached form; unused when serving
            run_id=uuid.UUID(d["run_id"]),
            positions=positions,
            cash_weight=Decimal(d["cash_weight"]),
            computed_at=_timestamp(d["computed_at"]),
        )

    def _load_user(
        self, user_id: str, as_of: date | None, latest: LatestStrategies | None
    ) -> tuple[UserStrategyRecord, ProfileStrategy]:
        """Blocking: the user's stored strategy and the profile strategy it derives from."""
        with self.store.engine.connect() as conn:
            prefs = get_preferences(conn, user_id)
            if prefs is None:
                raise not_found(
                    f"unknown user {show(user_id)}: no preferences stored "
                    "(create them with UpdatePreferences)"
                )
            rec = get_user_strategy(conn, self.model_version, user_id, as_of)
            if rec is None:
                raise not_found(
                    f"user {show(user_id)} has no strategy {as_of_text(as_of)} for model "
                    f"{self.model_version}; the next pipeline run computes it"
                )
            entry = by_strategy_id(latest, rec.profile_strategy_id)
            # Not in the snapshot (an older as-of): find it among that date's profile strategies,
            # the user's current profile first (the preferences may have changed since).
            ordered = sorted(PROFILES, key=lambda p: p != prefs.prefs.risk_profile)
            while entry is None and ordered:
                entry = load_profile_strategy(
                    conn,
                    self.model_version,
                    ordered.pop(0),
                    rec.as_of,
                    strategy_id=rec.profile_strategy_id,
                )
        if entry is None:
            raise RequestError(
                grpc.StatusCode.INTERNAL,
                f"the strategy of user {show(user_id)} derives from "
                f"{rec.profile_strategy_id!r}, which is not stored",
            )
        return rec, entry

    def _expand(
        self, rec: UserStrategyRecord, entry: ProfileStrategy, strategy_id: str
    ) -> strategy_pb2.Strategy:
        try:
            full = expand(
                strategy_id=strategy_id,
                user_id=rec.user_id,
                positions=rec.positions,
                cash_weight=rec.cash_weight,
                profile=entry.strategy,
                book=entry.book,
            )
        except KeyError as exc:  # a position missing from the book: stored data is inconsistent
            raise RequestError(
                grpc.StatusCode.INTERNAL,
                f"the strategy of user {show(rec.user_id)} cannot be expanded: {exc.args[0]}",
            ) from None
        return strategy_to_pb(
            full,
            run_id=rec.run_id,
            model_version=rec.model_version,
            computed_at=rec.computed_at,
            profile_strategy_id=rec.profile_strategy_id,
        )

    async def _user_redis(self, user_id: str, _context: Any) -> UserServed | None:
        latest = self.snapshot.value
        # Only the keys of the version the server knows, so no answer mixes two runs' users.
        # Right after a switch, before its NOTIFY is processed, that is still the previous
        # run's version: its keys live on until their TTL, so they are served meanwhile.
        version = self.users_version.value
        if latest is None or version is None or not self.store.settings.redis_url:
            # Without the snapshot's books a compact value cannot be expanded; without a
            # version there are no keys to read: PostgreSQL.
            return None
        redis_key = user_key(user_id, version)
        raw = await self.store.redis_get(redis_key, f"reading the strategy of user {user_id!r}")
        content = self._content(raw, user_id, redis_key) if raw else None
        if content is None:
            return None
        key, d = content
        strategy_id = str(
            d.get("strategy_id")
            or user_strategy_id(user_id, str(d.get("as_of")), self.model_version)
        )
        memo = self._bases.get(key)
        # Only with the book of the very profile strategy it names: the snapshot's is the
        # latest, so an older cached value falls through to PostgreSQL.
        if memo is not None and memo.entry is by_strategy_id(
            latest, memo.entry.strategy.strategy_id
        ):
            return UserServed(memo.base, strategy_id, user_id, memo.regime, "", key)
        try:
            rec = self._record(d, user_id)
        except (KeyError, TypeError, ValueError) as exc:
            UNREADABLE.note(redis_key, str(key), exc)  # the content key: its version
            return None
        entry = by_strategy_id(latest, rec.profile_strategy_id)
        if entry is None:
            return None
        try:
            pb = self._expand(rec, entry, "")
        except RequestError as exc:
            log.warning("ignoring the cached strategy of user %r: %s", user_id, exc.details)
            return None
        pb.ClearField("user_id")
        base = _Base(entry, pb, regime_pb(entry.regime))
        bases = self._bases
        if len(bases) >= USER_BASES:
            del bases[next(iter(bases))]
        bases[key] = base
        return UserServed(pb, strategy_id, user_id, base.regime, "", key)

    async def _user_postgres(self, user_id: str, context: Any) -> UserServed | None:
        return await self._user_at(user_id, None, context)

    async def _user_at(self, user_id: str, as_of: date | None, context: Any) -> UserServed:
        latest = self.snapshot.value
        rec, profile = await self.store.call(
            lambda: self._load_user(user_id, as_of, latest),
            context,
            f"reading the strategy of user {user_id!r}",
        )
        pb = self._expand(rec, profile, "")
        pb.ClearField("user_id")
        sid = user_strategy_id(rec.user_id, rec.as_of.isoformat(), rec.model_version)
        return UserServed(pb, sid, user_id, regime_pb(profile.regime), SERVED_FROM_POSTGRES, None)

    async def user_parts(self, user_id: str, context: Any) -> UserServed:
        """A user's latest strategy (Redis, then PostgreSQL), in parts (`UserServed`)."""
        try:
            found, source = await self.user_rt.get(user_id, context)
        except RequestError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                metrics.cache_lookup("user_strategy", SERVED_FROM_POSTGRES, False)
            raise
        assert found is not None  # the PostgreSQL layer raises NOT_FOUND instead of None
        return dataclasses.replace(found, served_from=source)

    async def user(self, user_id: str, as_of: date | None, context: Any) -> Served:
        """A user's strategy (latest when `as_of` is None), whole, a copy the caller may edit."""
        got = await (
            self._user_at(user_id, as_of, context)
            if as_of is not None
            else self.user_parts(user_id, context)
        )
        return Served(got.full(), got.regime, got.served_from)


__all__: Sequence[str] = (
    "LatestSectors",
    "LatestStrategies",
    "ProfileStrategy",
    "RegimeReads",
    "SectorReads",
    "Served",
    "StrategyReads",
)
