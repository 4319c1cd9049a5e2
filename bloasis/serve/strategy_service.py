"""ClassificationService (sector analyses) and StrategyService (strategies, preferences).

They read exactly as MarketRegimeService does (`bloasis.serve.server`): blocking store calls on
the server's thread pool bounded by the RPC deadline, `RequestError` for statuses, and snapshots
kept fresh by the server's one `StoreRefresher` (any `bloasis_results` notification, or the
poll, re-reads every tracked snapshot).

Latest reads (empty `as_of`):
- sector analysis: snapshot -> Redis `sectors:{regime}:analysis` -> PostgreSQL;
- a risk profile's strategy: snapshot (the latest strategy of each profile, with its book and its
  regime) -> Redis `strategy:{profile}:current` -> PostgreSQL;
- a user's strategy: not snapshotted (there may be 100k users): Redis `user:{id}:strategy`
  (compact) expanded with the snapshot's book of the profile strategy it names -> PostgreSQL.
  GetStrategy without a filter first reuses the user's last answer, serialised, for up to
  BLOASIS_USER_STRATEGY_CACHE_SECONDS (served_from "snapshot"); a new run or an UpdatePreferences
  on this server drops it at once.
A given `as_of`, preferences and every write go to PostgreSQL.

`install(server)` registers both services on a `RegimeServer` (health and reflection included).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

import grpc
import redis
from google.protobuf import json_format
from sqlalchemy import Connection

from bloasis.metrics import cache_lookup
from bloasis.pb.v2 import classification_pb2 as cl_pb
from bloasis.pb.v2 import common_pb2, strategy_pb2
from bloasis.publish.cache import read_current_regime, sectors_key, strategy_key, user_key
from bloasis.regime.types import REGIMES, RegimeResult
from bloasis.serve.server import (
    SERVED_FROM_POSTGRES,
    SERVED_FROM_REDIS,
    SERVED_FROM_SNAPSHOT,
    RequestError,
    StoreAccess,
    _show,
    check_user_id,
    invalid,
    memo_put,
    parse_date_field,
    parse_for_fast_path,
)
from bloasis.serve.snapshot import Snapshot, StoreRefresher
from bloasis.store.regimes import regime_at
from bloasis.store.strategies import (
    Stored,
    UserStrategyRecord,
    get_preferences,
    get_profile_strategy,
    get_sector_analysis,
    get_user_strategy,
    upsert_preferences,
)
from bloasis.strategy.compact import expand
from bloasis.strategy.types import GICS_SECTORS, PROFILES, SectorAnalysis, Strategy, UserPreferences
from bloasis.strategy.users import validate_preferences
from bloasis.wire import preferences_to_pb, regime_to_pb, sector_analysis_to_pb, strategy_to_pb

if TYPE_CHECKING:
    from bloasis.serve.server import RegimeServer

log = logging.getLogger(__name__)

CLASSIFICATION_SERVICE: Final = cl_pb.DESCRIPTOR.services_by_name["ClassificationService"]
CLASSIFICATION_SERVICE_NAME: Final = CLASSIFICATION_SERVICE.full_name
STRATEGY_SERVICE: Final = strategy_pb2.DESCRIPTOR.services_by_name["StrategyService"]
STRATEGY_SERVICE_NAME: Final = STRATEGY_SERVICE.full_name

MAX_SYMBOLS: Final = 100
MAX_SECTORS: Final = 64
_SYMBOL_RE = re.compile(r"[A-Za-z0-9.^-]{1,32}")
# A decimal as people write it: no exponent, NaN or infinity (they would pass Decimal()).
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
DECIMAL_MAX_LEN: Final = 32
# user_preferences.max_single_position is NUMERIC(6, 4): more places would be rounded silently.
MAX_POSITION_PLACES: Final = 4
DETAILS_MAX_LEN: Final = 500


# --------------------------------------------------------------------------------------------
# What the snapshots hold, and the blocking loaders that build it.
# --------------------------------------------------------------------------------------------

LatestSectors = tuple[SectorAnalysis, Stored]


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
    conn: Connection,
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


def load_latest_strategies(store: StoreAccess, model_version: str) -> LatestStrategies | None:
    """Blocking: every profile's latest strategy, read in one consistent database snapshot."""
    with store.engine.connect() as conn:
        # One REPEATABLE READ transaction: a run committing mid-load cannot mix into the result.
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        out = {
            p: e
            for p in PROFILES
            if (e := load_profile_strategy(conn, model_version, p)) is not None
        }
    return out or None


def _by_strategy_id(latest: LatestStrategies | None, strategy_id: str) -> ProfileStrategy | None:
    if latest is None:
        return None
    return next((e for e in latest.values() if e.strategy.strategy_id == strategy_id), None)


def _regime_pb(r: RegimeResult | None) -> common_pb2.MarketRegime | None:
    return regime_to_pb(r) if r is not None else None


def _analysis_pb(got: LatestSectors) -> cl_pb.SectorAnalysis:
    analysis, stored = got
    return sector_analysis_to_pb(
        analysis,
        run_id=stored.run_id,
        model_version=stored.model_version,
        computed_at=stored.computed_at,
    )


def _parse_json(raw: object, msg: Any, what: str) -> Any | None:
    """A Redis value as a message, or None (missing, or not parseable: logged, a cache miss)."""
    if not isinstance(raw, bytes | str) or not raw:
        return None
    try:
        return json_format.Parse(raw, msg, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        log.warning("ignoring unparseable Redis value for %s: %s", what, exc)
        return None


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Request validation (everything checked before the store is touched).
# --------------------------------------------------------------------------------------------


def parse_symbols(raw: Sequence[str]) -> frozenset[str]:
    """Upper-cased symbols to keep (empty: keep all)."""
    if len(raw) > MAX_SYMBOLS:
        raise invalid(f"symbols: at most {MAX_SYMBOLS} symbols per request, got {len(raw)}")
    for s in raw:
        if not _SYMBOL_RE.fullmatch(s):
            raise invalid(
                f"symbols: {_show(s)} is not a symbol (1-32 characters of A-Z a-z 0-9 . ^ -)"
            )
    return frozenset(s.upper() for s in raw)


def parse_profile(field: str, raw: str) -> str:
    if raw not in PROFILES:
        raise invalid(f"{field} must be one of {', '.join(PROFILES)}, got {_show(raw)}")
    return raw


def require_user_id(user_id: str, field: str = "user_id") -> str:
    if not user_id:
        raise invalid(f"{field} is required")
    check_user_id(user_id)
    return user_id


def parse_sectors(field: str, raw: Sequence[str]) -> tuple[str, ...]:
    if len(raw) > MAX_SECTORS:
        raise invalid(f"{field}: at most {MAX_SECTORS} entries, got {len(raw)}")
    for s in raw:
        if s not in GICS_SECTORS:
            raise invalid(
                f"{field}: {_show(s)} is not a GICS sector (one of {', '.join(GICS_SECTORS)})"
            )
    return tuple(raw)


@dataclass(frozen=True)
class StrategyQuery:
    user_id: str  # '' for a risk profile's strategy
    profile: str  # '' for a user's strategy
    as_of: date | None  # None: the latest stored
    symbols: frozenset[str]  # upper-cased; empty: all

    @property
    def who(self) -> str:
        return f"user {self.user_id!r}" if self.user_id else f"the {self.profile} profile"


def parse_strategy_request(req: strategy_pb2.GetStrategyRequest) -> StrategyQuery:
    if req.user_id and req.risk_profile:
        raise invalid("give either user_id or risk_profile, not both")
    if not req.user_id and not req.risk_profile:
        raise invalid("user_id or risk_profile is required")
    if req.user_id:
        check_user_id(req.user_id)
    else:
        parse_profile("risk_profile", req.risk_profile)
    return StrategyQuery(
        req.user_id,
        req.risk_profile,
        parse_date_field("as_of", req.as_of),
        parse_symbols(req.symbols),
    )


def parse_decimal(field: str, raw: str) -> Decimal:
    if len(raw) > DECIMAL_MAX_LEN or not _DECIMAL_RE.fullmatch(raw):
        raise invalid(f"{field} must be a decimal number such as 0.10, got {_show(raw)}")
    try:
        return Decimal(raw)
    except InvalidOperation:  # unreachable after the pattern; kept for safety
        raise invalid(f"{field} must be a decimal number such as 0.10, got {_show(raw)}") from None


def preferences_from_pb(req: strategy_pb2.UpdatePreferencesRequest) -> UserPreferences:
    """The gRPC-level checks; the domain rules are `bloasis.strategy.users.validate_preferences`.

    Empty risk_profile / max_single_position (unset in proto3) take the domain defaults."""
    if not req.HasField("preferences"):
        raise invalid("preferences is required")
    p = req.preferences
    require_user_id(p.user_id, "preferences.user_id")
    defaults = UserPreferences(user_id=p.user_id)
    max_pos = defaults.max_single_position
    if p.max_single_position:
        max_pos = parse_decimal("max_single_position", p.max_single_position)
        exponent = max_pos.normalize().as_tuple().exponent  # trailing zeros are fine
        if isinstance(exponent, int) and -exponent > MAX_POSITION_PLACES:
            raise invalid(
                f"max_single_position has at most {MAX_POSITION_PLACES} decimal places, "
                f"got {_show(p.max_single_position)}"
            )
    for field, values in (
        ("preferred_sectors", p.preferred_sectors),
        ("excluded_sectors", p.excluded_sectors),
    ):
        if len(values) > MAX_SECTORS:  # the domain rules judge the names themselves
            raise invalid(f"{field}: at most {MAX_SECTORS} entries, got {len(values)}")
    return UserPreferences(
        user_id=p.user_id,
        risk_profile=p.risk_profile or defaults.risk_profile,
        preferred_sectors=tuple(p.preferred_sectors),
        excluded_sectors=tuple(p.excluded_sectors),
        max_single_position=max_pos,
    )


def _keep_symbols(pb: strategy_pb2.Strategy, symbols: frozenset[str]) -> None:
    """Restrict picks and signals in place; cash_weight stays the whole strategy's."""
    if not symbols:
        return
    picks = [p for p in pb.picks if p.symbol.upper() in symbols]
    signals = [g for g in pb.signals if g.symbol.upper() in symbols]
    del pb.picks[:]
    pb.picks.extend(picks)
    del pb.signals[:]
    pb.signals.extend(signals)


def _not_found(details: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND, details)


def _as_of_text(as_of: date | None) -> str:
    return f"as of {as_of.isoformat()}" if as_of is not None else "yet"


# --------------------------------------------------------------------------------------------
# ClassificationService.
# --------------------------------------------------------------------------------------------


class ClassificationServicer:
    """The sector analysis of an as-of (latest: snapshot, Redis, PostgreSQL) and its candidates."""

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
        self.refresher = refresher

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
            pb = _parse_json(raw, cl_pb.SectorAnalysis(), key)
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

    async def analysis(self, as_of: date | None, context: Any) -> cl_pb.SectorAnalysis:
        """The analysis (served_from set); NOT_FOUND when none is stored for that date."""
        if as_of is None:
            snap = self.snapshot.value
            cache_lookup("sectors", SERVED_FROM_SNAPSHOT, snap is not None)
            if snap is not None:
                pb = _analysis_pb(snap)
                pb.served_from = SERVED_FROM_SNAPSHOT
                return pb
            cached = await self.store.redis_call(self._read_redis, "reading the sector analysis")
            cache_lookup("sectors", SERVED_FROM_REDIS, cached is not None)
            if cached is not None:
                cached.served_from = SERVED_FROM_REDIS
                return cached
        got = await self.store.call(lambda: self._load(as_of), context, "reading sector analysis")
        if as_of is None:
            cache_lookup("sectors", SERVED_FROM_POSTGRES, got is not None)
        if got is None:
            raise _not_found(
                f"no sector analysis stored {_as_of_text(as_of)} for model {self.model_version}"
                + ("; run the pipeline" if as_of is None else "")
            )
        if as_of is None:
            self.refresher.poke()  # the snapshot missed it: let the refresher (sole writer) load it
        pb = _analysis_pb(got)
        pb.served_from = SERVED_FROM_POSTGRES
        return pb

    async def GetSectorAnalysis(
        self, request: cl_pb.GetSectorAnalysisRequest, context: Any
    ) -> cl_pb.SectorAnalysis:
        return await self.analysis(parse_date_field("as_of", request.as_of), context)

    def _read_book_sectors(self, as_of: date) -> dict[str, str]:
        with self.store.engine.connect() as conn:
            books = [
                got[1]
                for p in PROFILES
                if (got := get_profile_strategy(conn, self.model_version, p, as_of)) is not None
            ]
        return _sectors_of(books)

    async def _candidate_sectors(self, as_of: date, context: Any) -> dict[str, str]:
        """symbol -> sector for the candidates of `as_of`, from the profile books of that as-of.

        The stored analysis keeps candidate symbols only; every candidate is ranked in the
        books, which carry its sector."""
        latest = self.strategies.value or {}
        books = [e.book for e in latest.values() if e.strategy.as_of == as_of]
        if books:
            return _sectors_of(books)
        return await self.store.call(
            lambda: self._read_book_sectors(as_of), context, "reading the candidates' sectors"
        )

    async def GetCandidateSymbols(
        self, request: cl_pb.GetCandidateSymbolsRequest, context: Any
    ) -> cl_pb.GetCandidateSymbolsResponse:
        as_of = parse_date_field("as_of", request.as_of)
        wanted = set(parse_sectors("sectors", request.sectors))
        pb = await self.analysis(as_of, context)
        sectors = await self._candidate_sectors(date.fromisoformat(pb.as_of), context)
        candidates = [
            cl_pb.Candidate(symbol=s, sector=sectors.get(s, ""))
            for s in pb.candidates
            if not wanted or sectors.get(s) in wanted
        ]
        return cl_pb.GetCandidateSymbolsResponse(
            as_of=pb.as_of, regime=pb.regime, candidates=candidates, served_from=pb.served_from
        )


def _sectors_of(books: Iterable[Sequence[dict[str, Any]]]) -> dict[str, str]:
    return {e["symbol"]: e["sector"] for book in books for e in book}


# --------------------------------------------------------------------------------------------
# StrategyService.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    strategy: strategy_pb2.Strategy
    regime: common_pb2.MarketRegime | None
    served_from: str


@dataclass(frozen=True)
class _Expanded:
    """A user's Redis value expanded with the snapshot entry it names (identity-checked)."""

    parsed: tuple[UserStrategyRecord, str]
    entry: ProfileStrategy
    strategy: strategy_pb2.Strategy
    regime: common_pb2.MarketRegime | None


@dataclass(frozen=True)
class _Answer:
    """A user's latest GetStrategy answer, serialised, as served from the cache."""

    body: bytes  # served_from "snapshot"
    strategies: LatestStrategies  # the snapshot values it was built from (identity-checked)
    regime: RegimeResult | None
    expires: float  # time.monotonic()


# Appended to a cached answer: serialised messages concatenate (a later scalar field wins).
_FROM_SNAPSHOT: Final = strategy_pb2.StrategyResponse(
    served_from=SERVED_FROM_SNAPSHOT
).SerializeToString()


class StrategyServicer:
    """Profile and user strategies (latest: snapshot, Redis, PostgreSQL) and preferences."""

    def __init__(
        self,
        model_version: str,
        store: StoreAccess,
        snapshot: Snapshot[LatestStrategies],
        regimes: Snapshot[RegimeResult],
        refresher: StoreRefresher,
        *,
        user_cache_seconds: float = 0.0,
    ) -> None:
        self.model_version = model_version
        self.store = store
        self.snapshot = snapshot
        self.regimes = regimes
        self.refresher = refresher
        # BLOASIS_USER_STRATEGY_CACHE_SECONDS: a user's latest GetStrategy answer, serialised,
        # reused for that long (0: off). An entry is only valid with the very snapshot values
        # it was built from (a new run swaps them), and UpdatePreferences here drops it; other
        # servers' preference updates and Redis edits are seen after at most the TTL.
        self.user_cache_seconds = user_cache_seconds
        self._answers: dict[str, _Answer] = {}
        # Bumped after every UpdatePreferences: a read that overlapped one is not cached.
        self._answers_gen = 0
        # Request bytes -> the user whose cached answer they ask for ("" for other requests).
        self._plain_users: dict[bytes, str] = {}
        # Hot-path memos of the user read (Redis is still read on every call, so a changed value
        # is served at once): the parse of a user's Redis value, keyed by its bytes, and the
        # expansion of a parsed value with a given snapshot entry. Bounded: cleared when full.
        self._parsed: dict[tuple[str, bytes], tuple[UserStrategyRecord, str] | None] = {}
        self._expanded: dict[int, _Expanded] = {}

    def load_latest(self) -> LatestStrategies | None:
        return load_latest_strategies(self.store, self.model_version)

    # --- profile strategies ------------------------------------------------------------------

    def _load_profile(self, profile: str, as_of: date | None) -> ProfileStrategy | None:
        with self.store.engine.connect() as conn:
            return load_profile_strategy(conn, self.model_version, profile, as_of)

    def _read_redis_profile(
        self, client: redis.Redis, profile: str
    ) -> strategy_pb2.Strategy | None:
        key = strategy_key(profile)
        pb = _parse_json(client.get(key), strategy_pb2.Strategy(), key)
        if pb is None or pb.model_version != self.model_version or pb.risk_profile != profile:
            return None
        return pb if _is_date(pb.as_of) else None

    def _regime_at(self, as_of: date) -> RegimeResult | None:
        with self.store.engine.connect() as conn:
            return regime_at(conn, self.model_version, as_of)

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
        try:
            return await self.store.call(
                lambda: self._regime_at(as_of), context, "reading the strategy's regime"
            )
        except RequestError as exc:
            if exc.code != grpc.StatusCode.UNAVAILABLE:
                raise
            log.warning("serving a cached strategy without its regime: %s", exc.details)
            return None

    async def _profile(self, q: StrategyQuery, context: Any) -> Served:
        if q.as_of is None:
            latest = self.snapshot.value or {}
            e = latest.get(q.profile)
            cache_lookup("strategy", SERVED_FROM_SNAPSHOT, e is not None)
            if e is not None:
                return Served(e.to_pb(), _regime_pb(e.regime), SERVED_FROM_SNAPSHOT)
            cached = await self.store.redis_call(
                lambda c: self._read_redis_profile(c, q.profile),
                f"reading the {q.profile} strategy",
            )
            cache_lookup("strategy", SERVED_FROM_REDIS, cached is not None)
            if cached is not None:
                regime = await self._regime_for_cached(date.fromisoformat(cached.as_of), context)
                return Served(cached, _regime_pb(regime), SERVED_FROM_REDIS)
        e = await self.store.call(
            lambda: self._load_profile(q.profile, q.as_of),
            context,
            f"reading the {q.profile} strategy",
        )
        if q.as_of is None:
            cache_lookup("strategy", SERVED_FROM_POSTGRES, e is not None)
        if e is None:
            raise _not_found(
                f"no {q.profile} strategy stored {_as_of_text(q.as_of)} "
                f"for model {self.model_version}"
                + ("; run the pipeline" if q.as_of is None else "")
            )
        if q.as_of is None:
            self.refresher.poke()
        return Served(e.to_pb(), _regime_pb(e.regime), SERVED_FROM_POSTGRES)

    # --- user strategies ---------------------------------------------------------------------

    def _read_redis_user(
        self, raw: bytes | None, user_id: str
    ) -> tuple[UserStrategyRecord, str] | None:
        """The compact `user:{id}:strategy` value as (record, strategy id); malformed: a miss."""
        key = user_key(user_id)
        if raw is None:
            return None
        if (user_id, raw) in self._parsed:  # this user's key holds the same value as before
            return self._parsed[(user_id, raw)]
        return memo_put(self._parsed, (user_id, raw), self._parse_redis_user(raw, key, user_id))

    def _parse_redis_user(
        self, raw: bytes, key: str, user_id: str
    ) -> tuple[UserStrategyRecord, str] | None:
        pb = _parse_json(raw, strategy_pb2.Strategy(), key)
        if pb is None or pb.model_version != self.model_version or pb.user_id != user_id:
            return None
        # The compact form has no picks: signals are in the user's rank order (as `positions_of`
        # stores them), whereas the book's ranks are the profile's.
        positions: list[dict[str, Any]] = [
            {
                "symbol": g.symbol,
                "sector": g.sector,
                "action": g.action,
                "weight": g.weight,
                "rank": rank,
            }
            for rank, g in enumerate(pb.signals, start=1)
        ]
        rec = UserStrategyRecord(
            user_id=user_id,
            as_of=date.fromisoformat(pb.as_of),
            model_version=pb.model_version,
            profile_strategy_id=pb.profile_strategy_id,
            preferences_version=0,  # not in the cached form; unused when serving
            run_id=uuid.UUID(pb.run_id),
            positions=positions,
            cash_weight=Decimal(pb.cash_weight),
            computed_at=pb.computed_at.ToDatetime(tzinfo=UTC),
        )
        return rec, pb.strategy_id

    def _load_user(
        self, user_id: str, as_of: date | None, latest: LatestStrategies | None
    ) -> tuple[UserStrategyRecord, ProfileStrategy]:
        """Blocking: the user's stored strategy and the profile strategy it derives from."""
        with self.store.engine.connect() as conn:
            prefs = get_preferences(conn, user_id)
            if prefs is None:
                raise _not_found(
                    f"unknown user {_show(user_id)}: no preferences stored "
                    "(create them with UpdatePreferences)"
                )
            rec = get_user_strategy(conn, self.model_version, user_id, as_of)
            if rec is None:
                raise _not_found(
                    f"user {_show(user_id)} has no strategy {_as_of_text(as_of)} for model "
                    f"{self.model_version}; the next pipeline run computes it"
                )
            entry = _by_strategy_id(latest, rec.profile_strategy_id)
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
                f"the strategy of user {_show(user_id)} derives from "
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
                f"the strategy of user {_show(rec.user_id)} cannot be expanded: {exc.args[0]}",
            ) from None
        return strategy_to_pb(
            full,
            run_id=rec.run_id,
            model_version=rec.model_version,
            computed_at=rec.computed_at,
            profile_strategy_id=rec.profile_strategy_id,
        )

    async def _user(self, q: StrategyQuery, context: Any) -> Served:
        latest = self.snapshot.value
        if q.as_of is None and latest is not None:
            raw = await self.store.redis_get(
                user_key(q.user_id), f"reading the strategy of {q.who}"
            )
            cached = self._read_redis_user(raw, q.user_id)
            # Only with the book of the very profile strategy it names: the snapshot's is the
            # latest, so an older cached value falls through to PostgreSQL.
            entry = _by_strategy_id(latest, cached[0].profile_strategy_id) if cached else None
            # A hit only when usable: with the book of the profile strategy it names.
            cache_lookup("user_strategy", SERVED_FROM_REDIS, entry is not None)
            if cached is not None and entry is not None:
                memo = self._expanded.get(id(cached))
                if memo is not None and memo.parsed is cached and memo.entry is entry:
                    # Served as is (read-only); a symbol filter edits its own copy.
                    pb = memo.strategy
                    if q.symbols:
                        pb = strategy_pb2.Strategy()
                        pb.CopyFrom(memo.strategy)
                    return Served(pb, memo.regime, SERVED_FROM_REDIS)
                try:
                    pb = self._expand(cached[0], entry, cached[1])
                except RequestError as exc:
                    log.warning("ignoring the cached strategy of %s: %s", q.who, exc.details)
                else:
                    regime_pb = _regime_pb(entry.regime)
                    shared = strategy_pb2.Strategy()
                    shared.CopyFrom(pb)
                    memo_put(
                        self._expanded, id(cached), _Expanded(cached, entry, shared, regime_pb)
                    )
                    return Served(pb, regime_pb, SERVED_FROM_REDIS)
        try:
            rec, profile = await self.store.call(
                lambda: self._load_user(q.user_id, q.as_of, latest),
                context,
                f"reading the strategy of {q.who}",
            )
        except RequestError as exc:
            if q.as_of is None and exc.code == grpc.StatusCode.NOT_FOUND:
                cache_lookup("user_strategy", SERVED_FROM_POSTGRES, False)
            raise
        if q.as_of is None:
            cache_lookup("user_strategy", SERVED_FROM_POSTGRES, True)
        pb = self._expand(rec, profile, user_strategy_id(rec))
        return Served(pb, _regime_pb(profile.regime), SERVED_FROM_POSTGRES)

    # --- RPCs --------------------------------------------------------------------------------

    async def serve(self, request: strategy_pb2.GetStrategyRequest, context: Any) -> Served:
        q = parse_strategy_request(request)
        served = await (self._user(q, context) if q.user_id else self._profile(q, context))
        _keep_symbols(served.strategy, q.symbols)
        return served

    async def GetStrategy(
        self, request: strategy_pb2.GetStrategyRequest, context: Any
    ) -> strategy_pb2.StrategyResponse | bytes:
        if not self._from_user_cache(request):
            s = await self.serve(request, context)
            return strategy_pb2.StrategyResponse(
                strategy=s.strategy, regime=s.regime, served_from=s.served_from
            )
        check_user_id(request.user_id)
        return await self._user_answer(request, context)

    def _cached_answer(self, user_id: str) -> bytes | None:
        """The user's last answer while it is valid (same snapshot values, not expired)."""
        got = self._answers.get(user_id)
        if (
            got is not None
            and got.strategies is self.snapshot.value
            and got.regime is self.regimes.value
            and time.monotonic() < got.expires
        ):
            cache_lookup("user_strategy", SERVED_FROM_SNAPSHOT, True)
            return got.body
        return None

    async def _user_answer(self, request: strategy_pb2.GetStrategyRequest, context: Any) -> bytes:
        """A user's latest strategy (no filter): the in-process answer while valid, else read."""
        user_id = request.user_id
        cached = self._cached_answer(user_id)
        if cached is not None:
            return cached
        cache_lookup("user_strategy", SERVED_FROM_SNAPSHOT, False)
        strategies, regime = self.snapshot.value, self.regimes.value
        now = time.monotonic()
        gen = self._answers_gen
        s = await self.serve(request, context)
        body = strategy_pb2.StrategyResponse(strategy=s.strategy, regime=s.regime)
        raw = body.SerializeToString()
        # Not cached when the snapshots are not loaded (nothing to tie its validity to), nor
        # when an UpdatePreferences overlapped the read.
        if strategies is not None and gen == self._answers_gen:
            answer = _Answer(
                raw + _FROM_SNAPSHOT, strategies, regime, now + self.user_cache_seconds
            )
            memo_put(self._answers, user_id, answer)
        return raw + strategy_pb2.StrategyResponse(served_from=s.served_from).SerializeToString()

    def fast_GetStrategy(self, raw: bytes) -> bytes | None:
        """The user's cached answer without awaiting or parsing, when the request bytes are
        known to ask for a user's latest strategy without filters (`server._fast_path`)."""
        user_id = self._plain_users.get(raw)
        if user_id is None:
            user_id = memo_put(self._plain_users, raw, self._plain_user(raw))
        return self._cached_answer(user_id) if user_id else None

    def _plain_user(self, raw: bytes) -> str:
        """The user whose latest strategy `raw` asks for, when GetStrategy would answer it from
        the user's cached answer; "" for any other request (bad bytes included)."""
        request = parse_for_fast_path(strategy_pb2.GetStrategyRequest, raw)
        return request.user_id if request is not None and self._from_user_cache(request) else ""

    def _from_user_cache(self, request: strategy_pb2.GetStrategyRequest) -> bool:
        """Whether GetStrategy answers `request` from the user's cached answer: a user's latest
        strategy, unfiltered, with the cache on."""
        return (
            self.user_cache_seconds > 0
            and bool(request.user_id)
            and not (request.risk_profile or request.as_of or request.symbols)
        )

    async def GetStockPicks(
        self, request: strategy_pb2.GetStrategyRequest, context: Any
    ) -> strategy_pb2.GetStockPicksResponse:
        s = await self.serve(request, context)
        return strategy_pb2.GetStockPicksResponse(
            strategy_id=s.strategy.strategy_id,
            as_of=s.strategy.as_of,
            picks=s.strategy.picks,
            regime=s.regime,
            served_from=s.served_from,
        )

    def _get_preferences(self, user_id: str) -> strategy_pb2.UserPreferences:
        with self.store.engine.connect() as conn:
            stored = get_preferences(conn, user_id)
        if stored is None:
            raise _not_found(f"unknown user {_show(user_id)}: no preferences stored")
        return preferences_to_pb(stored.prefs, updated_at=stored.updated_at)

    async def GetPreferences(
        self, request: strategy_pb2.GetPreferencesRequest, context: Any
    ) -> strategy_pb2.UserPreferences:
        user_id = require_user_id(request.user_id)
        return await self.store.call(
            lambda: self._get_preferences(user_id), context, "reading preferences"
        )

    def _upsert(self, prefs: UserPreferences) -> strategy_pb2.UserPreferences:
        with self.store.engine.begin() as conn:
            stored = upsert_preferences(conn, prefs)
        return preferences_to_pb(stored.prefs, updated_at=stored.updated_at)

    async def UpdatePreferences(
        self, request: strategy_pb2.UpdatePreferencesRequest, context: Any
    ) -> strategy_pb2.UserPreferences:
        prefs = preferences_from_pb(request)
        errors = validate_preferences(prefs)
        if errors:
            # The domain rules echo values whole: keep the status short whatever the input size.
            details = "; ".join(errors)
            raise invalid(
                details if len(details) <= DETAILS_MAX_LEN else details[:DETAILS_MAX_LEN] + "…"
            )
        try:
            return await self.store.call(
                lambda: self._upsert(prefs), context, "storing preferences"
            )
        finally:
            # Even on a timeout: the upsert may still commit.
            self._answers_gen += 1
            self._answers.pop(prefs.user_id, None)


def user_strategy_id(rec: UserStrategyRecord) -> str:
    """The deterministic id of a user strategy (user, as-of, model version). user_strategies
    rows do not store it; this is `bloasis.strategy.users.user_strategy_id` without the book
    (a test pins the two together)."""
    return f"user:{rec.user_id}:{rec.as_of.isoformat()}:{rec.model_version}"


# --------------------------------------------------------------------------------------------
# Registration.
# --------------------------------------------------------------------------------------------


def install(server: RegimeServer) -> tuple[ClassificationServicer, StrategyServicer]:
    """Add both services to `server` (before start): snapshots tracked by its refresher."""
    model_version = server.market_regime.model_version
    sectors: Snapshot[LatestSectors] = server.snapshot("latest sector analysis")
    strategies: Snapshot[LatestStrategies] = server.snapshot("latest profile strategies")
    classification = ClassificationServicer(
        model_version, server.store, sectors, strategies, server.refresher
    )
    strategy = StrategyServicer(
        model_version,
        server.store,
        strategies,
        server.regime_snapshot,
        server.refresher,
        user_cache_seconds=server.settings.user_strategy_cache_seconds,
    )
    # Strategies first: GetCandidateSymbols joins the latest analysis with the latest books.
    server.refresher.track(strategies, strategy.load_latest)
    server.refresher.track(sectors, classification.load_latest)
    server.add_service(CLASSIFICATION_SERVICE, classification)
    server.add_service(STRATEGY_SERVICE, strategy)
    return classification, strategy


__all__: Sequence[str] = (
    "CLASSIFICATION_SERVICE_NAME",
    "STRATEGY_SERVICE_NAME",
    "ClassificationServicer",
    "StrategyServicer",
    "install",
)
