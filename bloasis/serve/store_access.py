"""Store access for serving: blocking PostgreSQL and Redis calls off the event loop, bounded
by the RPC deadline; PostgreSQL trouble becomes UNAVAILABLE (or DEADLINE_EXCEEDED), a Redis
failure is a cache miss — Redis unavailable and a value unreadable told apart."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import grpc
import redis
import redis.asyncio as aredis
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from bloasis import metrics
from bloasis.config import Settings
from bloasis.publish.cache import make_redis
from bloasis.serve.validation import RequestError
from bloasis.store.db import engine_for

log = logging.getLogger(__name__)

R = TypeVar("R")

PROBE_DRAIN_S: Final = 2.0  # how long a stopping server waits for health probes in flight
# Connectivity failures: the store is down or unreachable, as opposed to a bug or a bad schema.
_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError, OSError, TimeoutError)


# Redis itself failing (down, unreachable, timing out, refusing): a cache miss, logged.
REDIS_UNAVAILABLE = (redis.exceptions.RedisError, OSError, TimeoutError)


class UnreadableValues:
    """Cached values that could not be read: each occurrence counted
    (`bloasis_cache_unreadable`), each distinct one — the key and a digest of the value (its
    version) — logged once, with the reason, so a bad writer or a reading bug is seen once and
    not drowned in a log line per request."""

    def __init__(self, limit: int = 10_000) -> None:
        self._seen: set[tuple[str, str]] = set()
        self.limit = limit

    def note(self, key: str, version: str, exc: BaseException) -> None:
        metrics.CACHE_UNREADABLE.labels(type(exc).__name__).inc()
        mark = (key, version)
        if mark in self._seen:
            return
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen.add(mark)
        log.error("unreadable cached value %s (version %s): %r", key, version, exc, exc_info=exc)

    def note_value(self, key: str, raw: bytes | str, exc: BaseException) -> None:
        data = raw.encode() if isinstance(raw, str) else raw
        self.note(key, hashlib.blake2b(data, digest_size=6).hexdigest(), exc)


UNREADABLE: Final = UnreadableValues()


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
        self._redis_lock = threading.Lock()
        self._aredis: aredis.Redis | None = None  # the per-call GETs of the hot path
        self._probes: dict[str, asyncio.Future[None]] = {}

    @property
    def engine(self) -> Engine:
        if not self.settings.database_url:
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE, "BLOASIS_DATABASE_URL is not set on the server"
            )
        return engine_for(self.settings.require("database_url"))

    async def call(
        self,
        fn: Callable[[], R],
        context: Any,
        what: str,
        *,
        executor: ThreadPoolExecutor | None = None,
        limit: float | None = None,
        source: str = "PostgreSQL",
    ) -> R:
        """Run `fn` (blocking, PostgreSQL) in a thread (`executor`, default the store pool),
        within `limit` seconds (default BLOASIS_STORE_TIMEOUT) and the call's deadline; store
        trouble becomes UNAVAILABLE. `source`: what the messages name as not answering (the
        work `fn` waits for)."""
        remaining = context.time_remaining() if context is not None else None
        bound = self.store_timeout if limit is None else limit
        timeout = bound if remaining is None else min(bound, remaining)
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(executor or self.executor, fn), max(timeout, 0.0)
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
                f"{source} did not answer within {timeout:g}s while {what}; retry later",
            ) from None
        except _UNAVAILABLE_ERRORS as exc:
            log.warning("%s unavailable while %s: %s", source, what, exc)
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE,
                f"{source} is unavailable while {what} ({type(exc).__name__}); retry later",
            ) from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"PostgreSQL connection lost while {what}; retry later",
                ) from None
            raise

    async def redis_call(self, fn: Callable[[redis.Redis], R], what: str) -> R | None:
        """Run `fn(client)` in a thread; Redis is a cache, so a failure is a miss. Redis being
        unavailable (connection, timeout) and a value `fn` could not read (a bad value, or a
        bug in reading it) are told apart: logged and counted separately."""
        if not self.settings.redis_url:
            return None
        loop = asyncio.get_running_loop()
        try:
            client = self.sync_redis()
            return await asyncio.wait_for(
                loop.run_in_executor(self.executor, fn, client), self.store_timeout
            )
        except REDIS_UNAVAILABLE as exc:
            metrics.REDIS_UNAVAILABLE.labels(what).inc()
            log.warning("Redis unavailable while %s: %s", what, exc)
            return None
        except Exception as exc:  # not Redis's fault: the value, or the code reading it
            UNREADABLE.note(what, type(exc).__name__, exc)
            return None

    async def redis_get(self, key: str, what: str) -> bytes | None:
        """GET `key` on the event loop (redis.asyncio: no thread hop per call); like
        `redis_call`, any failure is a miss (logged)."""
        if not self.settings.redis_url:
            return None
        try:
            # Bounded by the client's socket timeouts (a wait_for would cost a task per call).
            got = await self._async_redis().get(key)
        except REDIS_UNAVAILABLE as exc:  # a cache must never fail a read
            metrics.REDIS_UNAVAILABLE.labels(what).inc()
            log.warning("Redis unavailable while %s: %s", what, exc)
            return None
        return got if isinstance(got, bytes) else None

    async def redis_set(self, key: str, value: str, ttl: int, what: str) -> bool:
        """SET with a TTL (seconds) on the event loop; False (logged) when Redis fails."""
        if not self.settings.redis_url:
            return False
        try:
            await self._async_redis().set(key, value, ex=max(int(ttl), 1))
        except REDIS_UNAVAILABLE as exc:  # a cache write is best effort
            log.warning("Redis write failed while %s: %s", what, exc)
            return False
        return True

    async def redis_delete(self, key: str, what: str) -> bool:
        if not self.settings.redis_url:
            return False
        try:
            await self._async_redis().delete(key)
        except REDIS_UNAVAILABLE as exc:
            log.warning("Redis delete failed while %s: %s", what, exc)
            return False
        return True

    def sync_redis(self) -> redis.Redis:
        """The blocking Redis client (made once; calls on the store pool: `redis_call`, the
        health probe, snapshot loaders). Raises when BLOASIS_REDIS_URL is not set."""
        if self._redis is None:
            with self._redis_lock:  # the event loop and a loader thread may both be first
                if self._redis is None:
                    self._redis = make_redis(self.settings.require("redis_url"), timeout=1.0)
        return self._redis

    def _async_redis(self) -> aredis.Redis:
        if self._aredis is None:
            self._aredis = aredis.Redis.from_url(
                self.settings.require("redis_url"),
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
                health_check_interval=30,
            )
        return self._aredis

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
        client = self.sync_redis()

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
