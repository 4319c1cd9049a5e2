"""The gRPC server (grpc.aio): reads what the pipeline stored, never computes (SaveRegime and
RunAIAnalysis, the write methods of v1, store what an operator or a user asked for; RunBacktest
starts a backtest in a background thread and answers at once).

One server, one port, both API versions:
- v2 (`bloasis.<service>.v2`): `market_regime_v2`, `classification_v2`, `strategy_v2`,
  `backtesting_v2`;
- v1 (`bloasis.<service>`, the original BLOASIS contract served exactly): `market_regime_v1`,
  `classification_v1`, `strategy_v1`, `backtesting_v1`, adapters over the same reads;
- `grpc.health.v1.Health` (the services and "" are SERVING while PostgreSQL answers; Redis is
  optional and does not count for them: the separate name `bloasis.cache` reports it,
  NOT_SERVING meaning degraded) and server reflection.

Reads: `bloasis.serve.reads` (one read-through path per value: snapshot kept fresh by
PostgreSQL LISTEN/NOTIFY, Redis, PostgreSQL), with `bloasis.serve.answer_cache` in front of
the hot methods. Handlers, statuses and metrics: `bloasis.serve.handlers`. Request checks and
errors: `bloasis.serve.validation`. Store calls: `bloasis.serve.store_access`.

Entry points: `serve(settings, ready=...)` runs until SIGTERM/SIGINT or cancellation;
`start_server(settings, "127.0.0.1:0")` starts one in-process (tests) and returns the
`RegimeServer`, whose `.port`/`.address` say where it listens and `.stop()` shuts it down.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from bloasis import metrics
from bloasis.calendar import session_close
from bloasis.clock import market_now
from bloasis.config import Settings
from bloasis.freshness import Freshness, FreshnessMonitor
from bloasis.publish.events import freshness_alert_event
from bloasis.regime.model import resolve_model
from bloasis.regime.types import RegimeResult
from bloasis.serve import (
    backtesting_v1,
    backtesting_v2,
    classification_v1,
    classification_v2,
    market_regime_v1,
    market_regime_v2,
    strategy_v1,
    strategy_v2,
)
from bloasis.serve.answer_cache import AnswerCache
from bloasis.serve.auth import ServerSecurity
from bloasis.serve.handlers import GenericOnly, add_services
from bloasis.serve.market_regime_v2 import MarketRegimeServicer, WatchLimit
from bloasis.serve.reads import (
    LatestSectors,
    LatestStrategies,
    RegimeReads,
    SectorReads,
    StrategyReads,
)
from bloasis.serve.snapshot import Snapshot, StoreRefresher
from bloasis.serve.store_access import StoreAccess
from bloasis.serve.validation import RequestError
from bloasis.store import outbox

log = logging.getLogger(__name__)

MARKET_REGIME_SERVICE: Final = market_regime_v2.SERVICE
MARKET_REGIME_SERVICE_NAME: Final = MARKET_REGIME_SERVICE.full_name
# Health name for Redis alone: NOT_SERVING there means "degraded" (reads fall back to the
# snapshot and PostgreSQL), while the API services stay SERVING.
CACHE_HEALTH_NAME: Final = "bloasis.cache"

MAX_RECEIVE_MESSAGE_BYTES: Final = 4 * 1024 * 1024
# A full history page (up to 10000 rows of ~600 bytes) must fit; clients use the same limit.
MAX_SEND_MESSAGE_BYTES: Final = 64 * 1024 * 1024
SHUTDOWN_EXTRA_S: Final = 5.0  # how long past its grace a stopping gRPC server may take


async def _bounded(aw: Awaitable[Any], what: str, timeout: float = SHUTDOWN_EXTRA_S) -> None:
    try:
        await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        log.warning("%s did not stop within %.1fs; going on", what, timeout)
    except (asyncio.CancelledError, Exception):
        pass  # cancelled or failed while stopping: stopped either way


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
        self.answer_cache = AnswerCache(
            enabled=settings.answer_cache,
            max_entries=settings.answer_cache_entries,
            max_bytes=settings.answer_cache_mb << 20,
        )
        self._compose(settings)
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

    def _compose(self, settings: Settings) -> None:
        """The reads (one per value), the snapshots they keep fresh, and every service of both
        API versions over them."""
        # The version the pipeline stores under with the thresholds and universe in this
        # environment (every service of the server serves this one version).
        model_version = resolve_model(
            settings.model_version, settings.universe, settings.regime_overrides
        ).version
        self.model_version = model_version
        self.regime_snapshot: Snapshot[RegimeResult] = self.snapshot("current regime")
        sectors: Snapshot[LatestSectors] = self.snapshot("latest sector analysis")
        strategies: Snapshot[LatestStrategies] = self.snapshot("latest profile strategies")
        # The version of the Redis user keys (the pointer `user-strategies:version`): read from
        # Redis, not PostgreSQL, but refreshed the same way (a run switching its keys notifies).
        self.users_version: Snapshot[str] = self.snapshot("user strategies version")
        regimes = RegimeReads(model_version, self.store, self.regime_snapshot, self.refresher)
        sector_reads = SectorReads(model_version, self.store, sectors, strategies, self.refresher)
        strategy_reads = StrategyReads(
            model_version,
            self.store,
            strategies,
            self.regime_snapshot,
            self.users_version,
            self.refresher,
            prefs_ttl=settings.user_strategy_cache_seconds,
        )
        self.reads = (regimes, sector_reads, strategy_reads)
        # Strategies before sectors: GetCandidateSymbols joins the latest analysis with the
        # latest books.
        self.refresher.track(self.regime_snapshot, regimes.load_current)
        self.refresher.track(strategies, strategy_reads.load_latest)
        self.refresher.track(sectors, sector_reads.load_latest)
        if settings.redis_url:
            # Last: Redis being down (a loader failing after its timeout) never delays the
            # PostgreSQL snapshots of a round. Without Redis the version stays None.
            self.refresher.track(self.users_version, strategy_reads.load_users_version)
        watch_limit = WatchLimit(settings.watch_max_streams)
        self.market_regime = MarketRegimeServicer(
            regimes,
            history_max_days=settings.history_max_days,
            history_page_size=settings.history_page_size,
            watch_limit=watch_limit,
        )
        self.classification = classification_v2.ClassificationServicer(sector_reads)
        self.strategy = strategy_v2.StrategyServicer(
            strategy_reads, user_cache_seconds=settings.user_strategy_cache_seconds
        )
        self.add_service(MARKET_REGIME_SERVICE, self.market_regime)
        self.add_service(classification_v2.SERVICE, self.classification)
        self.add_service(strategy_v2.SERVICE, self.strategy)
        self.market_regime_v1 = market_regime_v1.MarketRegimeServicer(self.market_regime, settings)
        self.classification_v1 = classification_v1.ClassificationServicer(sector_reads)
        self.strategy_v1 = strategy_v1.StrategyServicer(
            self.strategy, settings, user_cache_seconds=settings.user_strategy_cache_seconds
        )
        self.add_service(market_regime_v1.SERVICE, self.market_regime_v1)
        self.add_service(classification_v1.SERVICE, self.classification_v1)
        self.add_service(strategy_v1.SERVICE, self.strategy_v1)
        # Backtests: started in background threads, read from their stored rows (both versions
        # share the runner: one limit on backtests running in this process).
        self.backtests = backtesting_v2.Backtests(settings, self.store)
        self.backtesting = backtesting_v2.BacktestingServicer(self.backtests)
        self.backtesting_v1 = backtesting_v1.BacktestingServicer(self.backtests)
        self.add_service(backtesting_v2.SERVICE, self.backtesting)
        self.add_service(backtesting_v1.SERVICE, self.backtesting_v1)

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
        add_services(self._server, self.services, self.answer_cache)
        generated = GenericOnly(self._server)
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
            if self._cache_status is not None:
                # Back: re-read the user keys' version now, not at the next poll.
                self.refresher.poke()
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
            await _bounded(self.market_regime_v1.drain(), "SaveRegime's relays")
            self.backtests.close()
            for task in self._tasks:
                await _bounded(task, f"task {task.get_name()}")
            await _bounded(self.store.aclose(), "the async Redis client")
            self.store.close()
            self.answer_cache.close()
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
    "StoreAccess",
    "serve",
    "start_server",
)
