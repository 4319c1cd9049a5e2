"""Observability against the real embedded stack: /metrics scraped over HTTP after real gRPC calls
and real relays (in process and from the looping `bloasis relay`), JSON log lines of a pipeline
run carrying its run id, and the freshness SLA alert (one per breach, through the outbox to the
broker)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy import Engine, text

from bloasis import calendar, metrics, stack
from bloasis.calendar import session_close
from bloasis.config import Settings
from bloasis.freshness import trading_age_seconds
from bloasis.logs import PREFECT_JSON_LOGGING, configure_logging
from bloasis.metrics import iter_samples, start_metrics_endpoint
from bloasis.pb.v2 import market_regime_pb2 as mr_pb
from bloasis.publish.events import ALERT_TOPIC, FRESHNESS_ALERT
from bloasis.publish.relay import RelayError, relay_pending
from bloasis.serve.server import MARKET_REGIME_SERVICE_NAME, start_server
from bloasis.store import outbox
from bloasis.store.outbox import OutboxEvent
from tests.grpc_harness import Harness
from tests.kafka_util import consume_all
from tests.test_grpc import _seed, _settings

ROOT = Path(__file__).resolve().parent.parent
GET_CURRENT = f"{MARKET_REGIME_SERVICE_NAME}/GetCurrentRegime"
GET_HISTORY = f"{MARKET_REGIME_SERVICE_NAME}/GetRegimeHistory"
WATCH = f"{MARKET_REGIME_SERVICE_NAME}/WatchRegime"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape_sync(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        body = resp.read().decode()
    return {(name, frozenset(labels.items())): value for name, labels, value in iter_samples(body)}


async def _scrape(port: int) -> Samples:
    return await asyncio.to_thread(_scrape_sync, port)


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return _get(after, name, **labels) - _get(before, name, **labels)


async def _until(pred: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def _free_port() -> int:
    return stack._pick_port(set())


# --- gRPC server ---------------------------------------------------------------------------------


async def test_grpc_metrics_scraped_after_real_calls(
    stack_settings: Settings,
    harness: Harness,
) -> None:
    s = _settings(stack_settings)
    await _seed(s, [(date(2024, 3, 1), "bull")])
    srv, stub = await harness.start(s, metrics_port=0, freshness_sla_seconds=0)
    assert srv.metrics is not None and srv.metrics.url.startswith("http://127.0.0.1:")
    port = srv.metrics.port
    # A second server with nothing stored for its model version: NOT_FOUND.
    _, empty_stub = await harness.start(_settings(stack_settings))
    before = await _scrape(port)

    for _ in range(2):
        resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        assert resp.served_from == "snapshot"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.GetRegimeHistory(mr_pb.GetRegimeHistoryRequest(start_date="2024-13-01"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await empty_stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    after = await _scrape(port)
    total = "bloasis_grpc_requests_total"
    assert _delta(before, after, total, method=GET_CURRENT, code="OK") == 2
    assert _delta(before, after, total, method=GET_CURRENT, code="NOT_FOUND") == 1
    assert _delta(before, after, total, method=GET_HISTORY, code="INVALID_ARGUMENT") == 1
    latency = "bloasis_grpc_request_duration_seconds_count"
    assert _delta(before, after, latency, method=GET_CURRENT, code="OK") == 2
    assert _delta(before, after, latency, method=GET_HISTORY, code="INVALID_ARGUMENT") == 1
    assert _get(after, "bloasis_grpc_request_duration_seconds_sum", method=GET_CURRENT, code="OK")
    # Where the latest reads were answered: the first from the snapshot, the second from the
    # answer cache; the empty server missed every layer (Redis holds no regime of its model
    # version).
    lookups = "bloasis_cache_lookups_total"
    assert _delta(before, after, lookups, kind="regime", layer="snapshot", result="hit") == 1
    answers = "bloasis_answer_cache_lookups_total"
    assert _delta(before, after, answers, method=GET_CURRENT, result="hit") == 1
    assert _delta(before, after, lookups, kind="regime", layer="snapshot", result="miss") == 1
    assert _delta(before, after, lookups, kind="regime", layer="redis", result="miss") == 1
    assert _delta(before, after, lookups, kind="regime", layer="postgres", result="miss") == 1
    # Snapshot ages are computed at scrape time from the live snapshots.
    age = after[("bloasis_snapshot_age_seconds", frozenset({("snapshot", "current regime")}))]
    assert age >= 0
    assert (
        "bloasis_snapshot_age_seconds",
        frozenset({("snapshot", "latest sector analysis")}),
    ) in after

    # One WatchRegime stream open: the gauge is up while it is, down once it is cancelled.
    subs = "bloasis_watch_subscribers"
    base = _get(after, subs)
    watch = stub.WatchRegime(mr_pb.WatchRegimeRequest())
    first = await asyncio.wait_for(watch.read(), 5)
    assert first.regime.as_of == "2024-03-01"
    assert _get(await _scrape(port), subs) == base + 1
    watch.cancel()

    async def closed() -> bool:
        now = await _scrape(port)
        return (
            _get(now, subs) == base
            and _delta(after, now, total, method=WATCH, code="CANCELLED") == 1
        )

    await _until(closed, "the watch stream to be counted as ended")


async def test_metrics_endpoint_port_in_use_does_not_stop_serving(
    stack_settings: Settings,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    taken = start_metrics_endpoint("127.0.0.1", 0)
    try:
        s = _settings(stack_settings)
        await _seed(s, [(date(2024, 3, 1), "bull")])
        with caplog.at_level(logging.ERROR, logger="bloasis.serve.server"):
            srv, stub = await harness.start(s, metrics_port=taken.port, freshness_sla_seconds=0)
        assert srv.metrics is None
        assert f"cannot listen on 127.0.0.1:{taken.port}" in caplog.text
        resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        assert resp.regime.as_of == "2024-03-01"
    finally:
        taken.close()


# --- relay ---------------------------------------------------------------------------------------


def _enqueue(engine: Engine, tag: str, n: int) -> list[str]:
    ids = [f"obs-test:{tag}:{i}" for i in range(n)]
    events = [
        OutboxEvent(i, ALERT_TOPIC, "obs-test", json.dumps({"i": i}), {"event_id": i}) for i in ids
    ]
    with engine.begin() as conn:
        assert outbox.enqueue(conn, events) == n
    return ids


async def test_relay_metrics_after_relaying_real_events(
    clean_db: Engine, stack_settings: Settings
) -> None:
    endpoint = start_metrics_endpoint("127.0.0.1", 0)
    try:
        before = await _scrape(endpoint.port)
        ids = _enqueue(clean_db, uuid.uuid4().hex[:8], 7)
        bootstrap = stack_settings.require("kafka_bootstrap_servers")
        stats = await relay_pending(
            clean_db, bootstrap, idempotence=stack_settings.kafka_idempotence, batch_size=3
        )
        assert (stats.published, stats.pending) == (7, 0)
        after = await _scrape(endpoint.port)
        assert _delta(before, after, "bloasis_relay_events_published_total") == 7
        assert _delta(before, after, "bloasis_relay_batches_total") == stats.batches >= 1
        assert _get(after, "bloasis_outbox_backlog") == 0
        assert _get(after, "bloasis_relay_last_success_timestamp_seconds") > time.time() - 3600
        got = {c.headers.get("event_id") for c in await consume_all(bootstrap, ALERT_TOPIC)}
        assert set(ids) <= got

        # A broker that is not there: each failed attempt counted by kind, then the give-up.
        _enqueue(clean_db, uuid.uuid4().hex[:8], 2)
        with pytest.raises(RelayError):
            await relay_pending(
                clean_db, f"127.0.0.1:{_free_port()}", idempotence=False, attempts=2, backoff_s=0
            )
        failed = await _scrape(endpoint.port)
        kinds = {
            dict(labels)["kind"]: v - _get(after, name, **dict(labels))
            for (name, labels), v in failed.items()
            if name == "bloasis_relay_failures_total"
        }
        assert kinds.pop("gave_up") == 1
        assert sum(kinds.values()) == 2, kinds  # two attempts, of whatever error class
        assert _get(failed, "bloasis_outbox_backlog") == 2
    finally:
        endpoint.close()


def test_relay_loop_serves_metrics_and_json_logs(
    clean_db: Engine, stack_settings: Settings, stack_state_dir: Path
) -> None:
    """The long-running `bloasis relay`: relays what arrives, /metrics on its own port, JSON
    log lines, exits 0 on SIGTERM."""
    port = _free_port()
    env = {
        **os.environ,
        "BLOASIS_STATE_DIR": str(stack_state_dir),
        "BLOASIS_RELAY_METRICS_PORT": str(port),
        "BLOASIS_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bloasis.cli", "relay", "--interval", "0.2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def scenario() -> None:
            async def up() -> bool:
                assert proc.poll() is None, proc.communicate()
                try:
                    await _scrape(port)
                    return True
                except OSError:
                    return False

            await _until(up, "the relay's /metrics", timeout=60)
            _enqueue(clean_db, uuid.uuid4().hex[:8], 5)

            async def relayed() -> bool:
                got = await _scrape(port)
                return _get(got, "bloasis_relay_events_published_total") == 5

            await _until(relayed, "5 events relayed by the loop")
            assert _get(await _scrape(port), "bloasis_outbox_backlog") == 0

        asyncio.run(scenario())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    messages = [line["message"] for line in lines]
    assert f"relay metrics on http://127.0.0.1:{port}/metrics" in messages, messages
    assert "published 5 events, 0 pending" in messages, messages


# --- JSON logs of a pipeline run -----------------------------------------------------------------


@pytest.mark.prefect
def test_json_logs_carry_the_pipeline_run_id(
    flow_db: Engine,
) -> None:
    from flows.pipeline import daily_pipeline

    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging("INFO", "json", stream=stream)
    try:
        out = asyncio.run(
            daily_pipeline(as_of=date(2022, 12, 28), trigger="manual", strategies=False)
        )
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert records
    for r in records:
        assert {"ts", "level", "logger", "message"} <= r.keys()
        assert r["ts"].endswith("+00:00")
    ours = [r for r in records if r.get("run_id") == out["run_id"]]
    # The flow's own lines (Prefect's run logger) and the domain's (bloasis.*) both carry it.
    assert any(r["logger"] == "prefect.flow_runs" for r in ours), records
    assert any("cache:" in r["message"] for r in ours)
    with flow_db.connect() as conn:
        stored = conn.execute(
            text("SELECT id FROM pipeline_runs WHERE id = :i"), {"i": out["run_id"]}
        ).scalar_one()
    assert str(stored) == out["run_id"]


# --- the freshness SLA ---------------------------------------------------------------------------


def _alerts(engine: Engine, model_version: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_id FROM outbox WHERE topic = :t AND event_id LIKE :p ORDER BY id"),
            {"t": ALERT_TOPIC, "p": f"{FRESHNESS_ALERT}:{model_version}:%"},
        ).all()
    return [r.event_id for r in rows]


async def test_freshness_alert_once_per_breach(
    engine: Engine,
    stack_settings: Settings,
    harness: Harness,
) -> None:
    s = _settings(stack_settings)
    mv, stale, fresh = s.model_version, date(2024, 3, 1), date(2024, 3, 4)
    await _seed(s, [(stale, "bull")])
    # A health interval longer than the test: the checks below are the only ones.
    srv, _ = await harness.start(s, metrics_port=0, health_interval=3600)
    assert srv.freshness is not None and srv.freshness.sla_seconds == 129600  # the default
    assert srv.metrics is not None
    port = srv.metrics.port

    f = await srv.check_freshness()
    assert f is not None and f.breach and f.new_breach and f.as_of == stale
    assert _alerts(engine, mv) == [f"{FRESHNESS_ALERT}:{mv}:{stale}"]
    scraped = await _scrape(port)
    assert _get(scraped, "bloasis_freshness_breach") == 1
    assert _get(scraped, "bloasis_freshness_sla_seconds") == 129600
    assert _get(scraped, "bloasis_served_regime_age_seconds") == pytest.approx(f.age_seconds)
    close = session_close(stale).timestamp()
    assert _get(scraped, "bloasis_served_regime_as_of_timestamp_seconds") == close

    # The next ticks: still breached, nothing more queued.
    for _ in range(2):
        again = await srv.check_freshness()
        assert again is not None and again.breach and not again.new_breach
    assert len(_alerts(engine, mv)) == 1

    # A newer regime arrives: fresh again just after its close (Friday -> Monday: the weekend
    # does not count), then late again ten days on: a new breach, a second alert.
    await _seed(s, [(fresh, "bear")])
    await srv.refresher.refresh_now()
    assert srv.regime_snapshot.value is not None and srv.regime_snapshot.value.as_of == fresh
    ok = await srv.check_freshness(now=session_close(fresh) + timedelta(hours=1))
    assert ok is not None and not ok.breach and ok.age_seconds == 3600
    assert _get(await _scrape(port), "bloasis_freshness_breach") == 0
    late = session_close(fresh) + timedelta(days=10)
    second = await srv.check_freshness(now=late)
    assert second is not None and second.new_breach
    assert second.age_seconds == pytest.approx(trading_age_seconds(fresh, late))
    assert _alerts(engine, mv) == [
        f"{FRESHNESS_ALERT}:{mv}:{stale}",
        f"{FRESHNESS_ALERT}:{mv}:{fresh}",
    ]

    # Through the outbox to the broker: exactly the two, once each, even after more ticks.
    bootstrap = s.require("kafka_bootstrap_servers")
    await relay_pending(engine, bootstrap, idempotence=s.kafka_idempotence)
    await srv.check_freshness(now=late + timedelta(minutes=1))
    await relay_pending(engine, bootstrap, idempotence=s.kafka_idempotence)
    consumed = [
        c
        for c in await consume_all(bootstrap, ALERT_TOPIC)
        if c.headers.get("event_id", "").startswith(f"{FRESHNESS_ALERT}:{mv}:")
    ]
    assert sorted(c.headers["event_id"] for c in consumed) == _alerts(engine, mv)
    payload = json.loads(
        next(c.value for c in consumed if c.headers["event_id"].endswith(str(fresh)))
    )
    assert payload["alert_type"] == FRESHNESS_ALERT and payload["severity"] == "warning"
    assert payload["as_of"] == fresh.isoformat() and payload["model_version"] == mv
    assert payload["sla_seconds"] == 129600
    assert payload["age_seconds"] == pytest.approx(second.age_seconds, abs=0.01)
    assert payload["regime"]["regime"] == "bear"
    assert all(c.key == FRESHNESS_ALERT for c in consumed)


async def test_freshness_check_off_in_replay_and_when_zero(
    stack_settings: Settings,
    harness: Harness,
) -> None:
    s = _settings(stack_settings)
    await _seed(s, [(date(2024, 3, 1), "bull")])
    off, _ = await harness.start(s, freshness_sla_seconds=0)
    replay, _ = await harness.start(s.model_copy(update={"replay_start": date(2007, 6, 1)}))
    for srv in (off, replay):
        assert srv.freshness is None and await srv.check_freshness() is None

    # The metrics endpoint stops with its server.
    alone = await start_server(s, "127.0.0.1:0", metrics_port=0, grace=0.5)
    try:
        assert alone.metrics is not None
        port = alone.metrics.port
        assert await _scrape(port)
    finally:
        await alone.stop(0)
    with pytest.raises(OSError):
        _scrape_sync(port)


def test_trading_age_pauses_on_weekends_and_holidays() -> None:
    def hours(as_of: date, at: date, hour: float) -> float:
        now = datetime.combine(at, clock(0), calendar.TZ) + timedelta(hours=hour)
        return trading_age_seconds(as_of, now) / 3600

    # Friday's regime on Monday after the close is one trading day (plus 1.5 h) old.
    assert hours(date(2026, 11, 20), date(2026, 11, 23), 17.5) == 25.5
    # Thanksgiving (Thursday) does not count either.
    assert hours(date(2026, 11, 25), date(2026, 11, 27), 17.5) == 25.5
    # A missed run: Monday's regime breaches the 36 h default on Wednesday at 04:00.
    assert hours(date(2026, 11, 23), date(2026, 11, 25), 4) == 36
    # The DST change (2026-11-01) does not skew it.
    assert hours(date(2026, 10, 30), date(2026, 11, 2), 16) == 24
    assert trading_age_seconds(date(2026, 11, 20), session_close(date(2026, 11, 20))) == 0
    # The day after Thanksgiving closes at 13:00 (an early close, from the exchange calendar):
    # at 17:30 that session's regime is 4.5 h old, not 1.5 h.
    assert hours(date(2026, 11, 27), date(2026, 11, 27), 17.5) == 4.5


# --- the hot-path collector (pure logic) ---------------------------------------------------------


@given(
    latencies=st.lists(
        st.one_of(
            st.sampled_from(metrics.LATENCY_BUCKETS),  # exactly on a bound: that bucket (le)
            st.floats(min_value=0, max_value=30, allow_nan=False),
        ),
        max_size=60,
    ),
    streams=st.integers(min_value=0, max_value=5),
    recorded=st.lists(st.booleans(), min_size=60, max_size=60),
)
@hsettings(max_examples=60, deadline=None)
def test_hot_path_histogram_matches_a_direct_count(
    latencies: list[float], streams: int, recorded: list[bool]
) -> None:
    """`grpc_call` and the fast path's pre-bound `unary_ok` recorder count into one series."""
    method = f"/t.S/M{uuid.uuid4().hex}"  # fresh series in the process-wide registry
    ok = metrics.unary_ok(method) if any(recorded[: len(latencies)]) else None
    for x, by_recorder in zip(latencies, recorded, strict=False):
        if by_recorder and ok is not None:
            ok(x)
        else:
            metrics.grpc_call(method, "OK", x)
    for _ in range(streams):
        metrics.grpc_stream(method, "OK")
    out: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for name, labels, value in iter_samples(generate_latest(REGISTRY).decode()):
        if labels.get("method") != method:
            continue
        if name.endswith("_bucket"):
            buckets[float(labels["le"])] = value
        else:
            out[name] = value
    if latencies:
        for bound in (*metrics.LATENCY_BUCKETS, float("inf")):
            assert buckets[bound] == sum(1 for x in latencies if x <= bound)
        assert out["bloasis_grpc_request_duration_seconds_count"] == len(latencies)
        assert out["bloasis_grpc_request_duration_seconds_sum"] == pytest.approx(sum(latencies))
    if latencies or streams:
        assert out["bloasis_grpc_requests_total"] == len(latencies) + streams
    else:
        assert out == {} and buckets == {}


@pytest.mark.prefect
def test_flow_runs_configured_by_prefect_log_json_lines_with_the_run_id(
    prefect_harness: None, tmp_path: Path
) -> None:
    # What a worker's flow-run process does: Prefect configures logging from its logging.yml,
    # with the overrides `bloasis up` passes when BLOASIS_LOG_FORMAT=json.
    from prefect.settings import PREFECT_API_URL

    from bloasis.config import load_settings
    from bloasis.local import prefect_env

    assert PREFECT_JSON_LOGGING.items() <= prefect_env(load_settings(log_format="json")).items()
    assert not PREFECT_JSON_LOGGING.keys() & prefect_env(load_settings(log_format="text")).keys()
    script = tmp_path / "flow.py"
    script.write_text(
        "import logging\n"
        "from prefect import flow, get_run_logger\n"
        "import tasks  # registers the run-id source, as the pipeline's modules do\n"
        "@flow\n"
        "async def f():\n"
        "    get_run_logger().info('hello from the flow')\n"
        "    logging.getLogger('bloasis.x').warning('a domain warning')\n"
        "import asyncio\n"
        "asyncio.run(f())\n"
    )
    env = {
        **os.environ,
        **PREFECT_JSON_LOGGING,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    by_message = {x["message"]: x for x in lines}
    hello, warning = by_message["hello from the flow"], by_message["a domain warning"]
    assert hello["logger"] == "prefect.flow_runs" and warning["logger"] == "bloasis.x"
    assert hello["run_id"] == warning["run_id"] and uuid.UUID(hello["run_id"])
