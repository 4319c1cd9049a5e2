"""The gRPC server (grpc.aio): reads what the pipeline stored, never computes.

Reads are served from an in-process snapshot kept fresh by PostgreSQL LISTEN/NOTIFY (see
`bloasis.serve.snapshot`); when the snapshot is empty (just started, PostgreSQL down) they fall
back to Redis, then PostgreSQL. `force_refresh` and history reads go to PostgreSQL. Blocking store
calls run on a small thread pool, bounded by the RPC deadline, so the event loop stays free.

Besides `bloasis.market_regime.v2.MarketRegimeService` (and the classification and strategy services
of `bloasis.serve.strategy_service`) the server exposes `grpc.health.v1.Health` (the services
and "" are SERVING while PostgreSQL answers; Redis is optional and does not count for them: the
separate name `bloasis.cache` reports it, NOT_SERVING meaning degraded) and server reflection.

Every API call is counted and timed in `_unary`/`_server_stream` (`bloasis.metrics`; /metrics on
BLOASIS_METRICS_PORT when run by `serve`), and the health loop also checks the served regime
against the freshness SLA (`check_freshness`: one alert event per breach, via the outbox).

Entry points: `serve(settings, ready=...)` runs until SIGTERM/SIGINT or cancellation;
`start_server(settings, "127.0.0.1:0")` starts one in-process (tests) and returns the
`RegimeServer`, whose `.port`/`.address` say where it listens and `.stop()` shuts it down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import json
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final, TypeVar

import grpc
import redis
import redis.asyncio as aredis
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from bloasis import metrics
from bloasis.calendar import session_close
from bloasis.clock import market_now
from bloasis.config import Settings
from bloasis.freshness import Freshness, FreshnessMonitor
from bloasis.pb.v2 import market_regime_pb2 as mr_pb
from bloasis.publish.cache import make_redis, read_current_regime
from bloasis.publish.events import freshness_alert_event
from bloasis.regime.model import resolve_model
from bloasis.regime.types import RegimeResult
from bloasis.serve.auth import ServerSecurity
from bloasis.serve.snapshot import Snapshot, StoreRefresher
from bloasis.store import outbox
from bloasis.store.db import engine_for
from bloasis.store.regimes import latest_regime, regime_history
from bloasis.wire import regime_to_pb

log = logging.getLogger(__name__)

R = TypeVar("R")

MARKET_REGIME_SERVICE: Final = mr_pb.DESCRIPTOR.services_by_name["MarketRegimeService"]
MARKET_REGIME_SERVICE_NAME: Final = MARKET_REGIME_SERVICE.full_name
# Health name for Redis alone: NOT_SERVING there means "degraded" (reads fall back to the
# snapshot and PostgreSQL), while the API services stay SERVING.
CACHE_HEALTH_NAME: Final = "bloasis.cache"

MAX_RECEIVE_MESSAGE_BYTES: Final = 4 * 1024 * 1024
# A full history page (up to 10000 rows of ~600 bytes) must fit; clients use the same limit.
MAX_SEND_MESSAGE_BYTES: Final = 64 * 1024 * 1024
USER_ID_MAX_LEN: Final = 128
DEFAULT_HISTORY_DAYS: Final = 365
PAGE_TOKEN_MAX_LEN: Final = 1024
SHUTDOWN_EXTRA_S: Final = 5.0  # how long past its grace a stopping gRPC server may take
PROBE_DRAIN_S: Final = 2.0  # how long a stopping server waits for health probes in flight

SERVED_FROM_SNAPSHOT: Final = "snapshot"
SERVED_FROM_REDIS: Final = "redis"
SERVED_FROM_POSTGRES: Final = "postgres"

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Connectivity failures: the store is down or unreachable, as opposed to a bug or a bad schema.
_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError, OSError, TimeoutError)


class RequestError(Exception):
    """Raised by servicer code; the RPC wrapper turns it into a gRPC status with these details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def invalid(details: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, details)


def _show(value: str, limit: int = 40) -> str:
    """A bad value echoed back in an error, truncated so huge inputs do not bloat the status."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _now_ts() -> Timestamp:
    # From the integer clock: Timestamp.FromDatetime is pure Python and showed in the profile
    # of the GetCurrentRegime hot path (~25% of the handler).
    ns = time.time_ns()
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


class _ServedAt:
    """GetCurrentRegimeResponse's `served_at`, encoded, to the millisecond: built once per
    millisecond rather than per call (a Timestamp, a message and a serialisation per call
    showed at saturation, where calls arrive in batches within one millisecond)."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: tuple[int, bytes] = (-1, b"")  # (ms since the epoch, the field encoded)

    def field(self) -> bytes:
        ms = time.time_ns() // 1_000_000
        current = self.current
        if current[0] != ms:
            ts = Timestamp(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)
            encoded = mr_pb.GetCurrentRegimeResponse(served_at=ts).SerializeToString()
            # One tuple swapped at once: a reader never pairs one millisecond with another's bytes.
            current = self.current = (ms, encoded)
        return current[1]


SERVED_AT: Final = _ServedAt()

MEMO_SIZE: Final = 4096
K = TypeVar("K")
V = TypeVar("V")


def memo_put(memo: dict[K, V], key: K, value: V) -> V:
    """Store in a memo bounded at MEMO_SIZE (emptied when full: cheap, and a full memo means
    more distinct keys, users or requests, than it is meant for)."""
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value
    return value


# --------------------------------------------------------------------------------------------
# Store access: blocking calls off the event loop, bounded by the RPC deadline.
# --------------------------------------------------------------------------------------------


class StoreAccess:
    """PostgreSQL (required) and Redis (optional) reads run on a dedicated thread pool."""

    def __init__(
        self, settings: Settings, *, store_timeout: float = 10.0, workers: int = 8
    ) -> None:
        self.settings = settings
        self.store_timeout = store_timeout
        # Dedicated pool: a hung store cannot starve the loop's default executor; it is no larger
        # than the engine's connection pool (5 + 5 overflow).
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bloasis-store")
        self._redis: redis.Redis | None = None
        self._aredis: aredis.Redis | None = None  # the per-call GETs of the hot path
        self._probes: dict[str, asyncio.Future[None]] = {}

    @property
    def engine(self) -> Engine:
        if not self.settings.database_url:
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE, "BLOASIS_DATABASE_URL is not set on the server"
            )
        return engine_for(self.settings.require("database_url"))

    async def call(self, fn: Callable[[], R], context: Any, what: str) -> R:
        """Run `fn` (blocking, PostgreSQL) in a thread; store trouble becomes UNAVAILABLE."""
        remaining = context.time_remaining() if context is not None else None
        timeout = self.store_timeout if remaining is None else min(self.store_timeout, remaining)
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self.executor, fn), max(timeout, 0.0)
            )
        except RequestError:
            raise
        except TimeoutError:
            if remaining is not None and timeout >= remaining:
                raise RequestError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded while {what}"
                ) from None
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE,
                f"PostgreSQL did not answer within {timeout:g}s while {what}; retry later",
            ) from None
        except _UNAVAILABLE_ERRORS as exc:
            log.warning("PostgreSQL unavailable while %s: %s", what, exc)
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE,
                f"PostgreSQL is unavailable while {what} ({type(exc).__name__}); retry later",
            ) from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"PostgreSQL connection lost while {what}; retry later",
                ) from None
            raise

    async def redis_call(self, fn: Callable[[redis.Redis], R], what: str) -> R | None:
        """Run `fn(client)` in a thread; Redis is a cache, so any failure is a miss (logged)."""
        if not self.settings.redis_url:
            return None
        loop = asyncio.get_running_loop()
        try:
            if self._redis is None:
                self._redis = make_redis(self.settings.require("redis_url"), timeout=1.0)
            client = self._redis
            return await asyncio.wait_for(
                loop.run_in_executor(self.executor, fn, client), self.store_timeout
            )
        except Exception as exc:  # a cache must never fail a read
            log.warning("Redis read failed while %s: %s", what, exc)
            return None

    async def redis_get(self, key: str, what: str) -> bytes | None:
        """GET `key` on the event loop (redis.asyncio: no thread hop per call); like
        `redis_call`, any failure is a miss (logged)."""
        if not self.settings.redis_url:
            return None
        try:
            if self._aredis is None:
                self._aredis = aredis.Redis.from_url(
                    self.settings.require("redis_url"),
                    socket_timeout=1.0,
                    socket_connect_timeout=1.0,
                    health_check_interval=30,
                )
            # Bounded by the client's socket timeouts (a wait_for would cost a task per call).
            got = await self._aredis.get(key)
        except Exception as exc:  # a cache must never fail a read
            log.warning("Redis read failed while %s: %s", what, exc)
            return None
        return got if isinstance(got, bytes) else None

    async def aclose(self) -> None:
        """Close the asyncio Redis client and let probes in flight end (before `close`)."""
        pending = [p for p in self._probes.values() if not p.done()]
        if pending:
            # Closing a client under a probe's feet makes it fail inside redis-py's reader.
            await asyncio.wait(pending, timeout=PROBE_DRAIN_S)
        if self._aredis is not None:
            with contextlib.suppress(Exception):
                await self._aredis.aclose()
            self._aredis = None

    async def ping(self, timeout: float) -> bool:
        """True if PostgreSQL answers `SELECT 1` within `timeout`."""
        if not self.settings.database_url:
            return False

        def _select_one() -> None:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        return await self._probe("postgres", _select_one, timeout)

    async def ping_redis(self, timeout: float) -> bool:
        """True if Redis answers PING within `timeout` (False when none is configured)."""
        if not self.settings.redis_url:
            return False
        if self._redis is None:
            self._redis = make_redis(self.settings.require("redis_url"), timeout=1.0)
        client = self._redis

        def _ping() -> None:
            client.ping()

        return await self._probe("redis", _ping, timeout)

    async def _probe(self, name: str, fn: Callable[[], None], timeout: float) -> bool:
        """Run `fn` on the store pool: True if it returns within `timeout`."""
        pending = self._probes.get(name)
        if pending is not None and not pending.done():
            return False  # the previous probe still hangs: the server is not answering
        self._probes[name] = probe = asyncio.get_running_loop().run_in_executor(self.executor, fn)
        # A probe that outlives its timeout may still fail later (a server going away, or its
        # client closed at shutdown): its outcome is already "not answering", so consume the
        # exception rather than have asyncio log "Future exception was never retrieved".
        probe.add_done_callback(_consume_outcome)
        try:
            await asyncio.wait_for(asyncio.shield(probe), timeout)
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()


def _consume_outcome(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


# --------------------------------------------------------------------------------------------
# Request validation and page tokens.
# --------------------------------------------------------------------------------------------


def check_user_id(user_id: str) -> None:
    if len(user_id) > USER_ID_MAX_LEN:
        raise invalid(f"user_id must be at most {USER_ID_MAX_LEN} characters, got {len(user_id)}")
    if not user_id.isprintable():
        raise invalid(
            f"user_id must be printable text (no control characters), got {_show(user_id)}"
        )


def parse_date_field(field: str, raw: str) -> date | None:
    """'' -> None (use the default); otherwise strictly YYYY-MM-DD (3.11's fromisoformat is lax)."""
    if raw == "":
        return None
    if not _DATE_RE.fullmatch(raw):
        raise invalid(f"{field} must be a date as YYYY-MM-DD, got {_show(raw)}")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise invalid(f"{field} {_show(raw)} is not a valid calendar date") from None


def default_start(end: date, max_days: int) -> date:
    try:
        return end - timedelta(days=min(DEFAULT_HISTORY_DAYS, max_days))
    except OverflowError:
        return date.min


def check_span(start: date, end: date, max_days: int) -> None:
    span = (end - start).days
    if span > max_days:
        raise invalid(
            f"start_date {start.isoformat()} .. end_date {end.isoformat()} spans {span} days; "
            f"at most {max_days} days per request"
        )


@dataclass(frozen=True)
class PageToken:
    """Where the previous page stopped, and the query it belongs to (raw request strings)."""

    start_date: str
    end_date: str
    end: date  # the resolved end (the latest as-of when end_date was empty)
    after: date  # the last as-of already returned

    def encode(self) -> str:
        body = {
            "v": 1,
            "s": self.start_date,
            "e": self.end_date,
            "end": self.end.isoformat(),
            "after": self.after.isoformat(),
        }
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageToken:
        bad = invalid("page_token is not a token returned by GetRegimeHistory")
        if len(token) > PAGE_TOKEN_MAX_LEN or not token.isascii():
            raise bad
        try:
            body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if not isinstance(body, dict) or body.get("v") != 1:
                raise bad
            s, e, end, after = body["s"], body["e"], body["end"], body["after"]
            if not all(isinstance(x, str) for x in (s, e, end, after)):
                raise bad
            return cls(s, e, date.fromisoformat(end), date.fromisoformat(after))
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise bad from None


@dataclass(frozen=True)
class HistoryQuery:
    raw_start: str
    raw_end: str
    start: date | None  # None: default from the resolved end
    end: date | None  # None: the latest as-of stored
    after: date | None
    page_size: int


def parse_history_request(
    req: mr_pb.GetRegimeHistoryRequest, *, max_days: int, page_cap: int
) -> HistoryQuery:
    """Everything that can be checked without the store, so bad input never needs PostgreSQL."""
    if req.page_size < 0:
        raise invalid(f"page_size must be >= 0 (0 = server default), got {req.page_size}")
    page_size = min(req.page_size or page_cap, page_cap)
    start = parse_date_field("start_date", req.start_date)
    end = parse_date_field("end_date", req.end_date)
    if start is not None and end is not None:
        if start > end:
            raise invalid(f"start_date {start.isoformat()} is after end_date {end.isoformat()}")
        check_span(start, end, max_days)
    after: date | None = None
    if req.page_token:
        tok = PageToken.decode(req.page_token)
        if (tok.start_date, tok.end_date) != (req.start_date, req.end_date):
            raise invalid(
                "page_token was issued for a different query: repeat the same start_date and "
                f"end_date (token has start_date={_show(tok.start_date)}, "
                f"end_date={_show(tok.end_date)})"
            )
        if end is not None and tok.end != end:
            raise invalid("page_token does not match end_date")
        end, after = tok.end, tok.after
        if start is not None:
            check_span(start, end, max_days)
    return HistoryQuery(req.start_date, req.end_date, start, end, after, page_size)


# --------------------------------------------------------------------------------------------
# MarketRegimeService.
# --------------------------------------------------------------------------------------------


M = TypeVar("M", bound=Message)


def parse_for_fast_path(cls: type[M], raw: bytes) -> M | None:
    """`raw` parsed as `cls`, its user_id valid; None when it is not (bad bytes, a bad user_id):
    a fast path leaves such requests to the full path, which answers them with their errors."""
    try:
        request = cls.FromString(raw)
        check_user_id(request.user_id)
    except (DecodeError, RequestError):
        return None
    return request


class MarketRegimeServicer:
    """Current regime from the snapshot (then Redis, then PostgreSQL); history from PostgreSQL."""

    def __init__(
        self,
        settings: Settings,
        store: StoreAccess,
        snapshot: Snapshot[RegimeResult],
        refresher: StoreRefresher,
    ) -> None:
        self.settings = settings
        # The version the pipeline stores under with the thresholds and universe in this
        # environment (all services of the server serve this one version).
        self.model_version = resolve_model(
            settings.model_version, settings.universe, settings.regime_overrides
        ).version
        self.store = store
        self.snapshot = snapshot
        self.refresher = refresher
        # The snapshot's value and its response (served_from "snapshot", without served_at),
        # serialised: the snapshot swaps values and never mutates them, so each new regime is
        # encoded once, not on every call.
        self._pb_memo: tuple[RegimeResult, bytes] | None = None
        # Request bytes -> whether they ask for the plain current regime (valid user_id, no
        # force_refresh), so the fast path answers them without parsing.
        self._plain_requests: dict[bytes, bool] = {}

    def load_current(self) -> RegimeResult | None:
        """Blocking: the regime with the latest as-of stored for this model version."""
        with self.store.engine.connect() as conn:
            return latest_regime(conn, self.model_version)

    async def _read_current_pg(self, context: Any) -> RegimeResult | None:
        value = await self.store.call(self.load_current, context, "reading the current regime")
        metrics.cache_lookup("regime", SERVED_FROM_POSTGRES, value is not None)
        if value != self.snapshot.value:
            # Fresher than the snapshot (a missed notification?): let the refresher swap it, so
            # the snapshot has a single writer and can never go backwards.
            self.refresher.poke()
        return value

    async def _read_current_redis(self) -> RegimeResult | None:
        value = await self.store.redis_call(read_current_regime, "reading the current regime")
        if value is not None and value.model_version != self.model_version:
            return None  # written by another model version: not what this server serves
        return value

    async def current(self, context: Any) -> tuple[RegimeResult | None, str]:
        value = self.snapshot.value
        metrics.cache_lookup("regime", SERVED_FROM_SNAPSHOT, value is not None)
        if value is not None:
            return value, SERVED_FROM_SNAPSHOT
        if self.settings.redis_url:
            value = await self._read_current_redis()
            metrics.cache_lookup("regime", SERVED_FROM_REDIS, value is not None)
            if value is not None:
                return value, SERVED_FROM_REDIS
        return await self._read_current_pg(context), SERVED_FROM_POSTGRES

    def _not_found(self) -> RequestError:
        return RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"no regime stored yet for model {self.model_version}; run the pipeline",
        )

    async def GetCurrentRegime(self, request: mr_pb.GetCurrentRegimeRequest, context: Any) -> bytes:
        check_user_id(request.user_id)
        if request.force_refresh:
            value, source = await self._read_current_pg(context), SERVED_FROM_POSTGRES
        else:
            value, source = await self.current(context)
        if value is None:
            raise self._not_found()
        if source == SERVED_FROM_SNAPSHOT:
            memo = self._pb_memo
            if memo is None or memo[0] is not value:
                memo = self._pb_memo = (value, self._encode(value, source))
            body = memo[1]
        else:
            body = self._encode(value, source)
        # Serialised messages concatenate (a later field wins / merges): the snapshot's regime
        # is encoded once per value, served_at once per millisecond.
        return body + SERVED_AT.field()

    @staticmethod
    def _encode(value: RegimeResult, source: str) -> bytes:
        body = mr_pb.GetCurrentRegimeResponse(regime=regime_to_pb(value), served_from=source)
        return body.SerializeToString()

    def fast_GetCurrentRegime(self, raw: bytes) -> bytes | None:
        """The answer without awaiting or parsing, when the call is the common one: request
        bytes already known plain, the snapshot's value already encoded (`_fast_path`)."""
        memo = self._pb_memo
        if memo is None or memo[0] is not self.snapshot.value:
            return None
        plain = self._plain_requests.get(raw)
        if plain is None:
            request = parse_for_fast_path(mr_pb.GetCurrentRegimeRequest, raw)
            plain = request is not None and not request.force_refresh
            memo_put(self._plain_requests, raw, plain)
        if not plain:
            return None
        metrics.cache_lookup("regime", SERVED_FROM_SNAPSHOT, True)
        return memo[1] + SERVED_AT.field()

    def read_history(self, q: HistoryQuery) -> tuple[date | None, list[RegimeResult]]:
        """Blocking: (resolved end, up to page_size + 1 rows) — the extra row says "more"."""
        max_days = self.settings.history_max_days
        with self.store.engine.connect() as conn:
            end = q.end
            if end is None:
                latest = latest_regime(conn, self.model_version)
                if latest is None:
                    return None, []
                end = latest.as_of
            if q.start is None:
                start = default_start(end, max_days)
            else:
                start = q.start
                if start > end:
                    return end, []  # only possible with a defaulted end: nothing that late yet
                check_span(start, end, max_days)
            rows = regime_history(
                conn,
                self.model_version,
                start,
                end,
                after=q.after,
                limit=q.page_size + 1,
            )
            return end, rows

    async def GetRegimeHistory(
        self, request: mr_pb.GetRegimeHistoryRequest, context: Any
    ) -> mr_pb.GetRegimeHistoryResponse:
        q = parse_history_request(
            request,
            max_days=self.settings.history_max_days,
            page_cap=self.settings.history_page_size,
        )
        end, rows = await self.store.call(
            lambda: self.read_history(q), context, "reading regime history"
        )
        token = ""
        if end is not None and len(rows) > q.page_size:
            rows = rows[: q.page_size]
            token = PageToken(q.raw_start, q.raw_end, end, rows[-1].as_of).encode()
        return mr_pb.GetRegimeHistoryResponse(
            regimes=[regime_to_pb(r) for r in rows], next_page_token=token, served_at=_now_ts()
        )

    async def WatchRegime(
        self, request: mr_pb.WatchRegimeRequest, context: Any
    ) -> AsyncIterator[mr_pb.RegimeUpdate]:
        # Subscribe before reading the current value, so no change can slip in between.
        with self.snapshot.subscribe() as sub, metrics.WATCH_SUBSCRIBERS.track_inprogress():
            last: RegimeResult | None
            if request.skip_current:
                last = self.snapshot.value
            else:
                try:
                    last, _ = await self.current(context)
                except RequestError as exc:
                    if exc.code != grpc.StatusCode.UNAVAILABLE:
                        raise
                    last = None  # store down and nothing cached: wait for the first regime
                if last is not None:
                    yield mr_pb.RegimeUpdate(regime=regime_to_pb(last), previous_regime="")
            # Compared as messages: a value read from Redis and the same row read from
            # PostgreSQL can differ as Python objects (e.g. absent vs None indicators).
            last_pb = regime_to_pb(last) if last is not None else None
            reported_drops = 0
            while True:
                change = await sub.get()
                if change is None:
                    raise RequestError(
                        grpc.StatusCode.UNAVAILABLE, "server is shutting down; reconnect"
                    )
                if sub.dropped > reported_drops:
                    log.warning("slow WatchRegime client: %d changes dropped", sub.dropped)
                    reported_drops = sub.dropped
                pb = regime_to_pb(change.value)
                if pb == last_pb:
                    continue  # already sent (e.g. read from Redis before the snapshot loaded)
                previous = change.previous if change.previous is not None else last
                yield mr_pb.RegimeUpdate(
                    regime=pb, previous_regime=previous.regime if previous is not None else ""
                )
                last, last_pb = change.value, pb


# --------------------------------------------------------------------------------------------
# Generic plumbing: method handlers built from the service descriptor.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Malformed:
    """A request whose bytes did not parse (e.g. bad UTF-8): answered with INVALID_ARGUMENT."""

    type_name: str
    error: str


def _lenient_deserializer(cls: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    # grpc turns a deserializer exception into a bare INTERNAL; bad bytes are bad input.
    def deserialize(data: bytes) -> Message | _Malformed:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return _Malformed(cls.DESCRIPTOR.full_name, str(exc))

    return deserialize


def _malformed_details(m: _Malformed) -> str:
    return f"request is not a valid {m.type_name}: {m.error}"[:500]


def _status_of(context: Any) -> grpc.StatusCode:
    """The code an abort set on `context` (servicer code may call `context.abort` itself)."""
    try:
        code = context.code()
    except Exception:
        return grpc.StatusCode.UNKNOWN
    if isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:  # some grpc versions report the integer value
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


def _failure(exc: BaseException, context: Any, method: str) -> tuple[grpc.StatusCode, str | None]:
    """What a handler raised -> (the call's status, details to abort with; None: re-raise as
    is). One mapping for unary calls and streams; the success path never comes here."""
    if isinstance(exc, RequestError):
        return exc.code, exc.details
    if isinstance(exc, grpc.aio.AbortError):
        return _status_of(context), None
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED, None  # the client went away
    log.exception("%s failed", method)
    return grpc.StatusCode.INTERNAL, f"{method} failed; see the server log"


def _unary(
    fn: Callable[[Any, Any], Awaitable[Any]], method: str
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handler(request: Any, context: Any) -> Any:
        # Every API call ends here, so it is counted (and timed) here, once.
        t0 = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            if isinstance(request, _Malformed):
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, _malformed_details(request))
            try:
                response = await fn(request, context)
                code = grpc.StatusCode.OK
                return response
            except (Exception, asyncio.CancelledError) as exc:
                code, details = _failure(exc, context, method)
                if details is None:
                    raise
                await context.abort(code, details)
        finally:
            metrics.grpc_call(method, code.name, time.perf_counter() - t0)

    return handler


def _fast_path(
    fast: Callable[[bytes], bytes | None],
    full: Callable[[Any, Any], Awaitable[Any]],
    method: str,
    request_deserializer: Callable[[bytes], Any],
    response_serializer: Callable[[Any], bytes],
) -> Callable[[bytes, Any], Awaitable[bytes]]:
    """A unary method whose servicer also has `fast_<Method>(request bytes) -> response bytes |
    None`: a synchronous answer from in-process state for the common call (None: not this
    one), tried before `full` (the `_unary` handler: parse, serve, serialise, map errors).

    At saturation the server's main thread is the bottleneck, and a call answered here costs
    one coroutine and a few dict lookups: no request parsed, no response built, no await."""
    record = metrics.unary_ok(method)
    failures = 0

    async def handler(raw: bytes, context: Any) -> bytes:
        nonlocal failures
        t0 = time.perf_counter()
        try:
            body = fast(raw)
        except Exception:
            # A bug, likely on every call: its traceback once, not thousands of times a second.
            failures += 1
            if failures == 1:
                log.exception("%s: the fast path failed; serving the full way", method)
            body = None
        if body is not None:
            record(time.perf_counter() - t0)
            return body
        return response_serializer(await full(request_deserializer(raw), context))

    return handler


def _server_stream(
    fn: Callable[[Any, Any], AsyncIterator[Any]], method: str
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def handler(request: Any, context: Any) -> AsyncIterator[Any]:
        # Counted when the stream ends; not timed (a watch lasts as long as its client wants).
        code = grpc.StatusCode.UNKNOWN
        try:
            if isinstance(request, _Malformed):
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, _malformed_details(request))
            try:
                async for item in fn(request, context):
                    yield item
                code = grpc.StatusCode.OK
            except (Exception, asyncio.CancelledError, GeneratorExit) as exc:
                code, details = _failure(exc, context, method)
                if details is None:
                    raise
                await context.abort(code, details)
        finally:
            metrics.grpc_stream(method, code.name)

    return handler


async def _bounded(aw: Awaitable[Any], what: str, timeout: float = SHUTDOWN_EXTRA_S) -> None:
    try:
        await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        log.warning("%s did not stop within %.1fs; going on", what, timeout)
    except (asyncio.CancelledError, Exception):
        pass  # cancelled or failed while stopping: stopped either way


def _serializer(cls: type[Message]) -> Callable[[Message | bytes], bytes]:
    """A handler may return its response already serialised (hot paths serialise once per
    stored value, not once per call); bytes pass through."""
    to_bytes = cls.SerializeToString

    def serialize(m: Message | bytes) -> bytes:
        return m if type(m) is bytes else to_bytes(m)

    return serialize


def method_handlers(service: ServiceDescriptor, servicer: object) -> dict[str, Any]:
    """`servicer`'s handler (methods named as in the .proto) for every method of `service`, by
    full method path ("/package.Service/Method")."""
    handlers: dict[str, Any] = {}
    for m in service.methods:
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        fn = getattr(servicer, m.name)
        deserialize, serialize = _lenient_deserializer(req_cls), _serializer(resp_cls)
        kwargs = {"request_deserializer": deserialize, "response_serializer": serialize}
        full = f"{service.full_name}/{m.name}"
        if m.client_streaming:
            raise NotImplementedError(f"{full}: client streaming is not supported")
        if m.server_streaming:
            handler = grpc.unary_stream_rpc_method_handler(_server_stream(fn, full), **kwargs)
        elif (fast := getattr(servicer, f"fast_{m.name}", None)) is not None:
            # Raw bytes in and out: the fast path parses and serialises nothing.
            handler = grpc.unary_unary_rpc_method_handler(
                _fast_path(fast, _unary(fn, full), full, deserialize, serialize)
            )
        else:
            handler = grpc.unary_unary_rpc_method_handler(_unary(fn, full), **kwargs)
        handlers[f"/{full}"] = handler
    return handlers


class _MethodTable(grpc.GenericRpcHandler):
    """Every method of the server's own services, found with one dict lookup."""

    def __init__(self, handlers: dict[str, Any]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._handlers.get(handler_call_details.method)


class _GenericOnly:
    """What generated `add_*Servicer_to_server` functions see of the server: their handlers
    are added as generic handlers only, never as "registered" methods.

    grpc.aio's server loop keeps one pending request per registered method and waits on all of
    them (`asyncio.wait`) for every incoming call: with all ~15 methods registered, the server
    lost ~5% of its throughput at saturation (measured against the same server with none)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        pass  # the generic handler added with them serves these methods


def add_services(
    server: grpc.aio.Server, services: Sequence[tuple[ServiceDescriptor, object]]
) -> None:
    """Serve every (descriptor, servicer) pair: one table of all their methods."""
    table: dict[str, Any] = {}
    for descriptor, servicer in services:
        table |= method_handlers(descriptor, servicer)
    server.add_generic_rpc_handlers((_MethodTable(table),))


# --------------------------------------------------------------------------------------------
# The server.
# --------------------------------------------------------------------------------------------


class RegimeServer:
    """The BLOASIS gRPC server: services, health, reflection, snapshot refresher, shutdown."""

    def __init__(
        self,
        settings: Settings,
        *,
        poll_interval: float = 5.0,
        health_interval: float = 2.0,
        watch_queue_size: int = 16,
        grace: float = 5.0,
        store_timeout: float = 10.0,
        max_receive_message_bytes: int = MAX_RECEIVE_MESSAGE_BYTES,
        max_send_message_bytes: int = MAX_SEND_MESSAGE_BYTES,
        metrics_port: int | None = None,
        freshness_sla_seconds: int | None = None,
    ) -> None:
        """`metrics_port`: serve /metrics on BLOASIS_METRICS_HOST there (0: a free port; None:
        no endpoint, as embedded servers and tests want; `serve` passes BLOASIS_METRICS_PORT).
        `freshness_sla_seconds`: None takes BLOASIS_FRESHNESS_SLA_SECONDS; 0 turns it off."""
        self.settings = settings
        self.metrics_port = metrics_port
        self.metrics: metrics.MetricsEndpoint | None = None
        sla = settings.freshness_sla_seconds
        sla = sla if freshness_sla_seconds is None else freshness_sla_seconds
        # Replay walks history on purpose: its regimes are old by design, not late.
        self.freshness = (
            FreshnessMonitor(sla) if sla > 0 and settings.replay_start is None else None
        )
        self._freshness_failing = False
        self.health_interval = health_interval
        self.grace = grace
        self.store = StoreAccess(settings, store_timeout=store_timeout)
        self.refresher = StoreRefresher(
            settings.value_of("database_url"),
            poll_interval=poll_interval,
            executor=self.store.executor,
        )
        self.watch_queue_size = watch_queue_size
        self._started = False
        self.services: list[tuple[ServiceDescriptor, object]] = []
        self.snapshots: list[Snapshot[Any]] = []
        self.regime_snapshot: Snapshot[RegimeResult] = self.snapshot("current regime")
        self.market_regime = MarketRegimeServicer(
            settings, self.store, self.regime_snapshot, self.refresher
        )
        self.refresher.track(self.regime_snapshot, self.market_regime.load_current)
        self.add_service(MARKET_REGIME_SERVICE, self.market_regime)
        # Imported here: those services build on this module's helpers (a top-level import
        # would be circular).
        from bloasis.serve.strategy_service import install

        self.classification, self.strategy = install(self)
        self.health = health.aio.HealthServicer()
        # TLS and bearer tokens as configured (bloasis.serve.auth); bad ones fail here, at start.
        self.security = ServerSecurity.from_settings(settings)
        self._server = grpc.aio.server(
            interceptors=self.security.interceptors,
            options=[
                ("grpc.max_receive_message_length", max_receive_message_bytes),
                ("grpc.max_send_message_length", max_send_message_bytes),
                # Ping idle connections so dead WatchRegime clients are noticed.
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                # Keep pinging while a watch stream is idle (no data for hours is normal).
                ("grpc.http2.max_pings_without_data", 0),
                # Accept client keepalive pings down to every 10 s.
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                ("grpc.http2.max_ping_strikes", 2),
                # Fail loudly if another server already holds the port, unless this process
                # is one of a group sharing it (`bloasis serve --processes N`).
                ("grpc.so_reuseport", 1 if settings.grpc_reuseport else 0),
            ],
        )
        self._health_status: int | None = None
        self._cache_status: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._stopping = False
        self.port = 0
        self.address = ""

    @property
    def service_names(self) -> list[str]:
        return [d.full_name for d, _ in self.services]

    def snapshot(self, name: str) -> Snapshot[Any]:
        """A new snapshot closed on shutdown; `self.refresher.track(snap, loader)` keeps it fresh.

        With `add_service` this is how ClassificationService/StrategyService plug in: same
        NOTIFY-driven refresh, same watcher fan-out, same health and reflection entries.
        """
        snap: Snapshot[Any] = Snapshot(name, queue_size=self.watch_queue_size)
        self.snapshots.append(snap)
        metrics.SNAPSHOT_AGES.track(snap)
        return snap

    def add_service(self, descriptor: ServiceDescriptor, servicer: object) -> None:
        """Serve `servicer` for `descriptor` (before `start`); it gets health and reflection."""
        if self._started:
            raise RuntimeError("add services before start()")
        self.services.append((descriptor, servicer))

    async def start(self, address: str | None = None) -> None:
        if self._started:
            raise RuntimeError("server already started")
        add_services(self._server, self.services)
        generated = _GenericOnly(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, generated)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(
                [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
            ),
            generated,
        )
        self._started = True
        address = address or self.settings.grpc_address
        host = address.rpartition(":")[0]
        try:
            port = self.security.add_port(self._server, address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if not port:
            raise OSError(f"cannot listen on {address}")
        self.port, self.address = port, f"{host}:{port}"
        # Health and the first snapshot load before accepting calls, so the very first answers
        # reflect the store (bounded: a down store only delays start-up by the ping timeout).
        await self._check_health()
        await self.refresher.start(warm_timeout=self.store.store_timeout)
        self._tasks.append(asyncio.create_task(self._health_loop(), name="health-check"))
        if self.metrics_port is not None:
            self._start_metrics(self.metrics_port)
        metrics.FRESHNESS_SLA.set(self.freshness.sla_seconds if self.freshness else 0)
        await self._server.start()
        log.info("gRPC server listening on %s", self.address)

    def _start_metrics(self, port: int) -> None:
        host = self.settings.metrics_host
        try:
            self.metrics = metrics.start_metrics_endpoint(host, port)
        except OSError as exc:
            # The API matters more than its metrics: serve on, and say so loudly.
            log.error(
                "metrics endpoint not started: cannot listen on %s:%d (%s); "
                "set BLOASIS_METRICS_PORT to a free port (0: off)",
                host,
                port,
                exc,
            )
            return
        log.info("metrics on %s", self.metrics.url)

    async def check_freshness(self, now: datetime | None = None) -> Freshness | None:
        """Compare the served regime with the freshness SLA (`bloasis.freshness`); a new
        breach queues ONE alert event on `alert-events` through the outbox and logs a warning.
        Run by the health loop; None when nothing is served or the check is off."""
        served = self.regime_snapshot.value
        if served is None:
            return None
        if now is None:  # the market's clock: the wall clock, or a live replay's (a file read)
            wall = self.settings.market_clock == "wall"
            now = (
                market_now(self.settings)
                if wall
                else await asyncio.to_thread(market_now, self.settings)
            )
        metrics.SERVED_REGIME_AS_OF.set(session_close(served.as_of).timestamp())
        if self.freshness is None:
            return None
        # The exchange calendar is built on first use (about a second): never on the event loop.
        f = await asyncio.to_thread(self.freshness.assess, served.as_of, now)
        metrics.SERVED_REGIME_AGE.set(f.age_seconds)
        metrics.FRESHNESS_BREACH.set(1 if f.breach else 0)
        if not f.new_breach:
            return f
        event = freshness_alert_event(
            served, age_seconds=f.age_seconds, sla_seconds=f.sla_seconds, occurred_at=now
        )

        def _enqueue() -> int:
            with self.store.engine.begin() as conn:
                return outbox.enqueue(conn, [event])

        try:
            queued = await self.store.call(_enqueue, None, "queueing a freshness alert")
        except RequestError as exc:
            if not self._freshness_failing:
                log.warning("freshness alert not queued (%s); retrying", exc.details)
            self._freshness_failing = True
            return f
        self._freshness_failing = False
        self.freshness.reported_breach(served.as_of)
        if queued:  # 0: another server (or this one before a restart) queued it already
            metrics.FRESHNESS_ALERTS.inc()
        log.warning(
            "freshness SLA breached: the served regime as of %s is %.1f h old (trading days), "
            "over %.1f h; alert %s",
            served.as_of.isoformat(),
            f.age_seconds / 3600,
            f.sla_seconds / 3600,
            event.event_id if queued else f"{event.event_id} was already queued",
        )
        return f

    async def _check_cache_health(self) -> None:
        ok = await self.store.ping_redis(timeout=max(1.0, self.health_interval))
        resp = health_pb2.HealthCheckResponse
        status = resp.SERVING if ok else resp.NOT_SERVING
        if status == self._cache_status:
            return
        if ok:
            log.info("Redis answers: %s SERVING", CACHE_HEALTH_NAME)
        else:
            log.warning("Redis is not answering: %s NOT_SERVING (reads degrade)", CACHE_HEALTH_NAME)
        self._cache_status = status
        await self.health.set(CACHE_HEALTH_NAME, status)

    async def _check_health(self) -> None:
        await self._check_cache_health()
        ok = await self.store.ping(timeout=max(1.0, self.health_interval))
        resp = health_pb2.HealthCheckResponse
        status = resp.SERVING if ok else resp.NOT_SERVING
        if status == self._health_status:
            return
        if self._health_status is not None:
            if ok:
                log.info("PostgreSQL answers again: SERVING")
            else:
                log.warning("PostgreSQL is not answering: NOT_SERVING")
        self._health_status = status
        for name in ("", *self.service_names):
            await self.health.set(name, status)
        if ok:
            self.refresher.poke()  # the store is back: catch up without waiting for the timer

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self._check_health()
            except Exception:  # keep checking whatever happens
                log.exception("health check failed")
            try:
                await self.check_freshness()
            except Exception:
                log.exception("freshness check failed")

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: NOT_SERVING, end watch streams, finish in-flight calls within `grace`."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            # Every wait here is bounded: a stop that hangs (SIGTERM in production, a test's
            # teardown) is worse than one that leaves a stuck task behind.
            await _bounded(self.health.enter_graceful_shutdown(), "health")
            for task in self._tasks:
                task.cancel()
            for snap in self.snapshots:
                snap.close()  # watchers end with UNAVAILABLE "shutting down; reconnect"
                metrics.SNAPSHOT_AGES.forget(snap)
            if self.metrics is not None:
                await _bounded(asyncio.to_thread(self.metrics.close), "the metrics endpoint")
            if self._started:
                await self._stop_grpc(self.grace if grace is None else grace)
            await _bounded(self.refresher.stop(), "the store refresher")  # closes LISTEN
            for task in self._tasks:
                await _bounded(task, f"task {task.get_name()}")
            await _bounded(self.store.aclose(), "the async Redis client")
            self.store.close()
        finally:
            self._stopped.set()
            log.info("gRPC server stopped")

    async def _stop_grpc(self, grace: float) -> None:
        # grpcio's aio server can, rarely, wait forever for a pending registered-method request
        # that shutdown never completes (seen at test teardown); the port is closed by then, so
        # bound the wait and go on stopping the rest.
        bound = grace + SHUTDOWN_EXTRA_S
        try:
            await asyncio.wait_for(self._server.stop(grace), bound)
        except TimeoutError:
            log.warning("gRPC server did not confirm its shutdown within %.1fs; going on", bound)

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()


async def start_server(
    settings: Settings, address: str = "127.0.0.1:0", **options: Any
) -> RegimeServer:
    """Start a server in this event loop (tests, embedding); `options` go to `RegimeServer`."""
    server = RegimeServer(settings, **options)
    try:
        await server.start(address)
    except BaseException:
        await server.stop(0)
        raise
    return server


async def serve(
    settings: Settings,
    *,
    ready: Callable[[str], None] | None = None,
    address: str | None = None,
    **options: Any,
) -> None:
    """Run until SIGTERM/SIGINT or cancellation; `ready(address)` is called once listening.
    /metrics is served on BLOASIS_METRICS_HOST:BLOASIS_METRICS_PORT (0: off)."""
    options.setdefault("metrics_port", settings.metrics_port or None)
    server = await start_server(settings, address or settings.grpc_address, **options)
    # Everything loaded so far (modules, snapshots) lives as long as the process: out of the
    # cyclic GC's reach, so its collections, triggered by per-call garbage, do not rescan it.
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread / not supported: cancellation still stops us
    try:
        if ready is not None:
            ready(server.address)
        await stop.wait()
        log.info("signal received: shutting down (grace %.1fs)", server.grace)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop()


__all__: Sequence[str] = (
    "MARKET_REGIME_SERVICE_NAME",
    "MarketRegimeServicer",
    "RegimeServer",
    "RequestError",
    "add_services",
    "serve",
    "start_server",
)
