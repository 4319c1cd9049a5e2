"""Prometheus metrics of the gRPC server and the outbox relay, and their HTTP endpoint.

Every metric lives in prometheus_client's default registry (with its process_* and python_*
collectors), so a process exposes one endpoint whatever it runs: `bloasis serve` on
BLOASIS_METRICS_PORT, the looping `bloasis relay` on BLOASIS_RELAY_METRICS_PORT.

Names and labels (README "Metrics and alerts"):
- bloasis_grpc_requests_total{method,code}: API calls as they end (streams included);
- bloasis_grpc_request_duration_seconds{method,code}: unary call latency;
- bloasis_cache_lookups_total{kind,layer,result}: where latest reads were answered
  (layer snapshot|redis|postgres, result hit|miss);
- bloasis_watch_subscribers: open WatchRegime streams;
- bloasis_snapshot_age_seconds{snapshot}: since each in-process snapshot was last confirmed
  against PostgreSQL (computed at scrape time);
- bloasis_served_regime_age_seconds, bloasis_served_regime_as_of_timestamp_seconds,
  bloasis_freshness_sla_seconds, bloasis_freshness_breach, bloasis_freshness_alerts_total:
  the freshness SLA (`bloasis.freshness`);
- bloasis_outbox_backlog, bloasis_relay_events_published_total, bloasis_relay_batches_total,
  bloasis_relay_failures_total{kind}, bloasis_relay_last_success_timestamp_seconds: the relay.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# No `*_created` series next to each counter: nothing here reads them.
disable_created_metrics()

# --- gRPC server -------------------------------------------------------------------------------

WATCH_SUBSCRIBERS: Final = Gauge("bloasis_watch_subscribers", "WatchRegime streams open now")
WATCH_REFUSED: Final = Counter(
    "bloasis_watch_refused", "WatchRegime streams refused: BLOASIS_WATCH_MAX_STREAMS reached"
)
SERVED_REGIME_AGE: Final = Gauge(
    "bloasis_served_regime_age_seconds",
    "Age of the served regime since its session's close, counting exchange trading days only "
    "(what the freshness SLA is compared with)",
)
SERVED_REGIME_AS_OF: Final = Gauge(
    "bloasis_served_regime_as_of_timestamp_seconds",
    "Close (16:00 America/New_York) of the served regime's as-of session, as a Unix time",
)
FRESHNESS_SLA: Final = Gauge(
    "bloasis_freshness_sla_seconds", "BLOASIS_FRESHNESS_SLA_SECONDS (0: the check is off)"
)
FRESHNESS_BREACH: Final = Gauge(
    "bloasis_freshness_breach", "1 while the served regime is older than the freshness SLA"
)
FRESHNESS_ALERTS: Final = Counter(
    "bloasis_freshness_alerts", "Freshness alert events queued (one per breach)"
)

# --- cache reads ------------------------------------------------------------------------------

REDIS_UNAVAILABLE: Final = Counter(
    "bloasis_redis_unavailable",
    "Redis reads that failed because Redis did not answer (served from the next layer)",
    ["what"],
)
CACHE_UNREADABLE: Final = Counter(
    "bloasis_cache_unreadable",
    "Cached values that could not be read (a bad value, or a bug reading it), by error",
    ["error"],
)

# --- pipeline --------------------------------------------------------------------------------

OPTIMISER_FALLBACKS: Final = Counter(
    "bloasis_optimiser_fallbacks",
    "Profile books whose risk-parity proposal fell back to volatility-targeted weights, by "
    "profile and reason (few_assets, solver_failed)",
    ["profile", "reason"],
)

# --- relay -------------------------------------------------------------------------------------

OUTBOX_BACKLOG: Final = Gauge(
    "bloasis_outbox_backlog", "Unpublished outbox events, as last read by the relay"
)
RELAY_PUBLISHED: Final = Counter(
    "bloasis_relay_events_published", "Outbox events the broker acknowledged"
)
RELAY_BATCHES: Final = Counter("bloasis_relay_batches", "Batches the relay committed")
RELAY_FAILURES: Final = Counter(
    "bloasis_relay_failures",
    "Failed relay attempts, by kind (the exception class, or gave_up when a relay ran out of "
    "attempts)",
    ["kind"],
)
RELAY_LAST_SUCCESS: Final = Gauge(
    "bloasis_relay_last_success_timestamp_seconds", "When a relay last finished without error"
)


def record_relay_success(published: int, batches: int, pending: int) -> None:
    RELAY_PUBLISHED.inc(published)
    RELAY_BATCHES.inc(batches)
    OUTBOX_BACKLOG.set(pending)
    RELAY_LAST_SUCCESS.set(datetime.now(UTC).timestamp())


def record_relay_failure(kind: str) -> None:
    RELAY_FAILURES.labels(kind).inc()


# --- the serving hot path: per-call counts, turned into metric families when scraped -----------

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)


class _HotPath(Collector):
    """bloasis_grpc_requests_total, bloasis_grpc_request_duration_seconds and
    bloasis_cache_lookups_total, counted in plain lists on the event loop's thread.

    prometheus_client's labelled children take a lock per update and `labels()` builds a key
    per call: with them the server lost ~9% of its throughput at saturation (measured against
    the same server without metrics); these updates cost a dict lookup and a few additions.
    A scrape copies each row (one C call under the GIL, so never torn) and derives the count
    from the buckets, so the +Inf bucket always equals the count."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], list[float]] = {}  # [sum, bucket counts..., +Inf]
        self.streams: dict[tuple[str, str], int] = {}
        self.lookups: dict[tuple[str, str, bool], int] = {}

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "bloasis_grpc_requests",
            "gRPC API calls handled, by full method name and final status code",
            labels=["method", "code"],
        )
        latency = HistogramMetricFamily(
            "bloasis_grpc_request_duration_seconds",
            "Latency of unary gRPC API calls (streams are counted, not timed), by method and code",
            labels=["method", "code"],
        )
        counts: dict[tuple[str, str], float] = {}
        for key, row in list(self.calls.items()):
            seen = row[:]
            cumulative, buckets = 0.0, []
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), seen[1:], strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            latency.add_metric(list(key), buckets, sum_value=seen[0])
            counts[key] = cumulative
        for key, n in list(self.streams.items()):
            counts[key] = counts.get(key, 0) + n
        for key, n in counts.items():
            requests.add_metric(list(key), n)
        lookups = CounterMetricFamily(
            "bloasis_cache_lookups",
            "Latest-value reads by what was read (regime, sectors, strategy, user_strategy), the "
            "layer consulted (snapshot, redis, postgres) and the result (hit, miss)",
            labels=["kind", "layer", "result"],
        )
        for (kind, layer, hit), n in list(self.lookups.items()):
            lookups.add_metric([kind, layer, "hit" if hit else "miss"], n)
        yield requests
        yield latency
        yield lookups


_HOT: Final = _HotPath()
REGISTRY.register(_HOT)


def cache_lookup(kind: str, layer: str, hit: bool) -> None:
    lookups = _HOT.lookups
    lookups[(kind, layer, hit)] = lookups.get((kind, layer, hit), 0) + 1


def _call_row(method: str, code: str) -> list[float]:
    row = _HOT.calls.get((method, code))
    if row is None:
        row = _HOT.calls[(method, code)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
    return row


def grpc_call(method: str, code: str, seconds: float) -> None:
    """A unary call ended with `code` (a grpc.StatusCode name) after `seconds`."""
    row = _call_row(method, code)
    row[0] += seconds
    row[1 + bisect_left(LATENCY_BUCKETS, seconds)] += 1


def unary_ok(method: str) -> Callable[[float], None]:
    """`grpc_call(method, "OK", seconds)` with the row looked up once, for a hot path."""
    row = _call_row(method, "OK")

    def record(seconds: float) -> None:
        row[0] += seconds
        row[1 + bisect_left(LATENCY_BUCKETS, seconds)] += 1

    return record


def grpc_stream(method: str, code: str) -> None:
    """A server stream ended with `code` (counted, not timed)."""
    streams = _HOT.streams
    streams[(method, code)] = streams.get((method, code), 0) + 1


# --- snapshot ages, computed when scraped --------------------------------------------------------


class _SnapshotAges(Collector):
    """Seconds since each live snapshot was confirmed against the store. Snapshots are held
    weakly (tests start many servers in one process); one name seen twice reports the oldest."""

    def __init__(self) -> None:
        self._snapshots: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def track(self, snapshot: Any) -> None:
        with self._lock:
            self._snapshots.add(snapshot)

    def forget(self, snapshot: Any) -> None:
        with self._lock:
            self._snapshots.discard(snapshot)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "bloasis_snapshot_age_seconds",
            "Seconds since the in-process snapshot was last confirmed against its store "
            "(PostgreSQL; Redis for the user strategies version)",
            labels=["snapshot"],
        )
        now = datetime.now(UTC)
        ages: dict[str, float] = {}
        with self._lock:
            snapshots = list(self._snapshots)
        for snap in snapshots:
            at = snap.refreshed_at
            if at is not None:
                ages[snap.name] = max(ages.get(snap.name, 0.0), (now - at).total_seconds())
        for name, age in sorted(ages.items()):
            family.add_metric([name], age)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # no fixed series: never checked for name clashes, collected on each scrape


SNAPSHOT_AGES: Final = _SnapshotAges()
REGISTRY.register(SNAPSHOT_AGES)


# --- the HTTP endpoint ------------------------------------------------------------------------


@dataclass
class MetricsEndpoint:
    """A running /metrics endpoint (a daemon thread); `close()` frees its port."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_endpoint(host: str = "127.0.0.1", port: int = 0) -> MetricsEndpoint:
    """Serve the default registry over HTTP on host:port (0: a free port, as tests want);
    `.port` is the port bound. Raises OSError when the port is taken."""
    server, thread = start_http_server(port, addr=host)
    return MetricsEndpoint(host, int(server.server_port), server, thread)


def iter_samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition (tests, status)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, dict(sample.labels), float(sample.value)
