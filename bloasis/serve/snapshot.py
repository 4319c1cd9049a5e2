"""In-process snapshots of the latest stored results, kept fresh by PostgreSQL LISTEN plus polling.

The pipeline runs `pg_notify('bloasis_results', ...)` in the transaction that stores its results,
so a notification means "something committed: re-read". The server never trusts the payload; it
re-reads what it serves from PostgreSQL (the system of record) and only then swaps the snapshot.

- `Snapshot[T]` holds one value (e.g. the current regime) and fans changes out to subscribers.
  Each subscriber has its own bounded queue; when it is full the *oldest* pending change is
  dropped, so a slow watcher never blocks the others (nor the refresher) and still converges on
  the newest value, which is always kept.
- `StoreRefresher` runs one LISTEN connection (psycopg async, autocommit, reconnect with backoff)
  and a refresh loop that re-runs every tracked loader on a notification, after a (re)connect,
  and on a timer as a safety net: every `poll_interval` seconds while LISTEN is down, every
  `listening_poll_interval` seconds while it works.

Nothing here is regime-specific: other services register their own snapshot + loader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import sql

from bloasis.store.outbox import RESULTS_CHANNEL

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Change(Generic[T]):
    """`value` became current; `previous` was current before it (None: nothing was)."""

    value: T
    previous: T | None


class Subscription(Generic[T]):
    """One watcher's view of a snapshot: a bounded queue of changes, newest kept on overflow."""

    def __init__(self, owner: Snapshot[T], maxsize: int) -> None:
        self._owner = owner
        # None in the queue means "the snapshot was closed" (server shutting down).
        self._queue: asyncio.Queue[Change[T] | None] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0
        self.closed = False

    def _offer(self, item: Change[T] | None) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                # Drop-oldest: the watcher is slow; it keeps the newest changes.
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._queue.get_nowait()
                    self.dropped += 1

    async def get(self) -> Change[T] | None:
        """The next change, or None once the snapshot is closed."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        self._owner._unsubscribe(self)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Snapshot(Generic[T]):
    """The latest value read from the store, plus fan-out of its changes to subscribers.

    Only the refresher writes it (from the event loop), so reads are race-free and a slow
    request can never put an older value back.
    """

    def __init__(self, name: str, *, queue_size: int = 16) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.name = name
        self._value: T | None = None
        self._queue_size = queue_size
        self._subs: set[Subscription[T]] = set()
        self._closed = False
        # When the value was last confirmed against the store (None: never).
        self.refreshed_at: datetime | None = None

    @property
    def value(self) -> T | None:
        return self._value

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def set(self, value: T | None) -> Change[T] | None:
        """Replace the value; returns the change (also sent to subscribers) if it differs."""
        self.refreshed_at = datetime.now(UTC)
        if value == self._value:
            return None
        previous, self._value = self._value, value
        if value is None:
            # The store was emptied: stop serving the stale value; there is nothing to announce.
            return None
        change = Change(value, previous)
        for sub in list(self._subs):
            sub._offer(change)
        return change

    def subscribe(self) -> Subscription[T]:
        sub = Subscription(self, self._queue_size)
        if self._closed:
            sub.closed = True
            sub._offer(None)
        else:
            self._subs.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription[T]) -> None:
        sub.closed = True
        self._subs.discard(sub)

    def close(self) -> None:
        """Wake every subscriber with end-of-stream; later subscribers get it at once."""
        self._closed = True
        for sub in list(self._subs):
            sub._offer(None)
            self._unsubscribe(sub)


@dataclass
class _Tracked(Generic[T]):
    snapshot: Snapshot[T]
    loader: Callable[[], T | None]
    failing: bool = False


class StoreRefresher:
    """Keeps tracked snapshots fresh from PostgreSQL: LISTEN/NOTIFY, with polling as a safety net.

    Loaders are blocking callables (SQLAlchemy) run on `executor` (or the default thread pool),
    one at a time, so the event loop stays responsive and refreshes never overlap.
    """

    def __init__(
        self,
        database_url: str | None,
        *,
        channel: str = RESULTS_CHANNEL,
        poll_interval: float = 5.0,
        listening_poll_interval: float = 60.0,
        listen_check_interval: float = 15.0,
        max_backoff: float = 5.0,
        executor: Executor | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self.database_url = database_url
        self.channel = channel
        self.poll_interval = poll_interval
        # While LISTEN works, a notification arrives with every commit and the poll is only a
        # backstop (e.g. a write by hand without NOTIFY): re-reading every snapshot every few
        # seconds was a third of an idle server's CPU, taken from serving at saturation.
        self.listening_poll_interval = max(poll_interval, listening_poll_interval)
        self.listen_check_interval = listen_check_interval
        self.max_backoff = max_backoff
        self._executor = executor
        self._tracked: list[_Tracked[Any]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._round_lock = asyncio.Lock()
        self.listening = False
        self.listen_pid: int | None = None  # the LISTEN connection's backend, while connected
        # Observable progress (tests wait on these rather than sleeping): rounds started and
        # completed (serialised, so round n completes before round n + 1 starts), LISTEN
        # liveness checks made.
        self.notifications = 0
        self.rounds_started = 0
        self.rounds = 0
        self.round_at_poke = 0  # rounds started when the last poke came
        self.liveness_checks = 0

    def track(self, snapshot: Snapshot[T], loader: Callable[[], T | None]) -> None:
        self._tracked.append(_Tracked(snapshot, loader))

    def poke(self) -> None:
        """Ask for a refresh round soon (coalesced with any already pending)."""
        self.round_at_poke = self.rounds_started
        self._wake.set()

    def caught_up(self) -> bool:
        """A round that started after the last poke has completed (what was notified before
        it has been read)."""
        return self.rounds > self.round_at_poke

    async def refresh_now(self) -> None:
        """Run one refresh round of every tracked snapshot; store errors are logged, not raised."""
        async with self._round_lock:
            self.rounds_started += 1
            loop = asyncio.get_running_loop()
            for t in self._tracked:
                try:
                    value = await loop.run_in_executor(self._executor, t.loader)
                except Exception as exc:  # the store being down must not kill the loop
                    if not t.failing:
                        log.warning("refreshing %s failed: %s", t.snapshot.name, _first_line(exc))
                    t.failing = True
                    continue
                if t.failing:
                    log.info("refreshing %s works again", t.snapshot.name)
                    t.failing = False
                change = t.snapshot.set(value)
                if change is not None:
                    log.info("%s changed", t.snapshot.name)
            self.rounds += 1

    async def start(self, *, warm_timeout: float = 5.0) -> None:
        """Load every snapshot once (bounded), then keep them fresh in background tasks."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.refresh_now(), warm_timeout)
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="snapshot-refresh"))
        if self.database_url:
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="snapshot-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for t in self._tracked:
            t.snapshot.close()

    async def _refresh_loop(self) -> None:
        while True:
            interval = self.listening_poll_interval if self.listening else self.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            # Clear before reading: a notify arriving during the round triggers another round.
            self._wake.clear()
            await self.refresh_now()

    async def _listen_loop(self) -> None:
        assert self.database_url
        backoff = 0.1
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection refused/lost: retry with backoff
                if self.listening:
                    backoff = 0.1  # it worked until now: retry quickly
                    log.warning("LISTEN %s connection lost: %s", self.channel, _first_line(exc))
                else:
                    log.debug("LISTEN %s connect failed: %s", self.channel, _first_line(exc))
            finally:
                if self.listening:
                    self.listening = False
                    self.poke()  # a round now, and the short poll interval from then on
            # Meanwhile the refresh loop keeps polling on its timer.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _listen_once(self) -> None:
        assert self.database_url
        conn = await psycopg.AsyncConnection.connect(
            self.database_url,
            autocommit=True,
            connect_timeout=5,
            application_name="bloasis-serve-listen",
            # TCP keepalives notice a silently dropped connection (ignored on unix sockets).
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        async with conn:
            self.listen_pid = conn.info.backend_pid
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.listening = True
            log.info("listening on %s", self.channel)
            # We may have missed notifications while disconnected.
            self.poke()
            # Wait for the socket to be readable, then let psycopg read it. (`notifies(timeout=)`
            # alone wakes every 0.1 s to stay interruptible: 10 wake-ups a second of the event
            # loop, measured at ~12 ms of CPU per second of an idle server.)
            loop = asyncio.get_running_loop()
            readable = asyncio.Event()
            while True:
                loop.add_reader(conn.fileno(), readable.set)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(readable.wait(), self.listen_check_interval)
                finally:
                    loop.remove_reader(conn.fileno())  # psycopg registers its own while reading
                if not readable.is_set():
                    # Idle for a while: prove the connection is alive (raises if it is not).
                    await conn.execute("SELECT 1")
                    self.liveness_checks += 1
                readable.clear()
                # What arrived (or was read with the SELECT): notifications, or the end of the
                # connection, which raises here.
                async for _ in conn.notifies(timeout=0):
                    self.notifications += 1
                    self.poke()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
