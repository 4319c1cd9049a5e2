"""The gRPC server against the real embedded stack, over real grpc.aio channels: snapshot reads
kept fresh by NOTIFY, WatchRegime, paged history, argument errors, health through a PostgreSQL
outage, the Redis fallback, reflection (grpcurl), the blocking client, graceful shutdown.

Every test uses its own model version, so tests never see each other's rows (the server filters
by `settings.model_version`); a fresh model version is an empty database as far as it can tell.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text

from bloasis import stack
from bloasis.config import Settings
from bloasis.pb.v2 import market_regime_pb2 as mr_pb
from bloasis.publish.cache import REGIME_CURRENT_KEY, make_redis, write_current_regime
from bloasis.regime.types import RegimeResult
from bloasis.serve import client
from bloasis.serve.server import (
    MARKET_REGIME_SERVICE_NAME,
    MarketRegimeServicer,
    RegimeServer,
    StoreAccess,
)
from bloasis.serve.snapshot import Snapshot, StoreRefresher
from bloasis.store import outbox, runs
from bloasis.store.db import engine_for
from bloasis.store.regimes import insert_regimes
from tests.factories import regime
from tests.grpc_harness import Harness

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SVC = MARKET_REGIME_SERVICE_NAME
GRPCURL = str(Path(sys.executable).with_name("grpcurl"))
FIELDS = ("start_date", "end_date", "page_size", "page_token", "user_id")


# --- helpers ---------------------------------------------------------------------------------


def _settings(base: Settings, **over: Any) -> Settings:
    return base.model_copy(
        update={"model_version": f"regime-v2-grpc-{uuid.uuid4().hex[-12:]}", **over}
    )


def _results(s: Settings, days: list[tuple[date, str]]) -> list[RegimeResult]:
    run_id = uuid.uuid4()
    return [regime(d, label, run_id=run_id, model_version=s.model_version) for d, label in days]


def _seed_sync(s: Settings, days: list[tuple[date, str]], notify: bool) -> list[RegimeResult]:
    results = _results(s, days)
    with engine_for(s.require("database_url")).begin() as conn:
        runs.start_run(
            conn,
            run_id=results[0].run_id,
            flow="test-grpc",
            trigger="manual",
            as_of=None,
            parameters={},
            data_source="test",
            data_snapshot_hash="0" * 64,
            code_version="t",
            model_version=s.model_version,
        )
        insert_regimes(conn, results)
        if notify:
            # As the pipeline does: delivered to listeners only when this transaction commits.
            outbox.notify_results(conn, json.dumps({"model_version": s.model_version}))
    return results


async def _seed(
    s: Settings, days: list[tuple[date, str]], *, notify: bool = True
) -> list[RegimeResult]:
    # Off the loop: the in-process server shares it and must keep serving meanwhile.
    return await asyncio.to_thread(_seed_sync, s, days, notify)


async def _until(pred: Callable[[], Awaitable[bool] | bool], what: str, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        ok = pred()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def _stack(action: str, service: str, state_dir: Path) -> None:
    """`stack.stop_service`/`start_service`, run in a child process on purpose.

    Starting postgres forks with a uid change (no vfork), which runs gRPC core's fork handlers;
    with gRPC threads busy in this process the forked child segfaults about one time in three
    (unless GRPC_ENABLE_FORK_SUPPORT=0 is set before grpc is imported). A plain child process is
    spawned by vfork and has no gRPC in it.
    """
    code = f"from bloasis import stack; stack.{action}_service({service!r}, {str(state_dir)!r})"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"{action} {service}: {out.decode()}"


async def _code_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
async def shared(stack_settings: Settings) -> AsyncIterator[tuple[RegimeServer, Any, Settings]]:
    """One server with a little data, for argument checks and fuzzing."""
    s = _settings(stack_settings, history_max_days=400, history_page_size=5)
    await _seed(s, [(date(2024, 1, 1) + timedelta(days=i), "bull") for i in range(8)])
    h = Harness()
    try:
        srv, stub = await h.start(s)
        yield srv, stub, s
    finally:
        await h.close()


# --- current regime, snapshot, NOTIFY, watch -------------------------------------------------


async def test_current_regime_is_latest_as_of_from_snapshot(
    stack_settings: Settings, harness: Harness
) -> None:
    s = _settings(stack_settings)
    d = date(2024, 3, 1)
    await _seed(s, [(d, "bull"), (d + timedelta(days=2), "bear")])
    srv, stub = await harness.start(s)

    resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
    assert (resp.regime.as_of, resp.regime.regime) == ("2024-03-03", "bear")
    assert resp.served_from == "snapshot"  # loaded at start-up
    assert resp.regime.model_version == s.model_version
    assert resp.regime.computed_at.seconds > 0 and resp.served_at.seconds > 0
    assert resp.regime.indicators.vix == 15.0 and resp.regime.indicators.HasField("yield_curve")

    # A backfill of an older date, inserted (and notified) later, is not "current".
    await _until(lambda: srv.refresher.listening, "LISTEN", 5)  # else the NOTIFY is missed
    await _seed(s, [(d + timedelta(days=1), "crisis")])
    await _until(lambda: srv.refresher.notifications > 0, "the notification", 3)
    # The round it asked for has read the store: "still the old one" is then a result.
    await _until(srv.refresher.caught_up, "the round after the notification", 3)
    resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(user_id="alice"), timeout=5)
    assert (resp.regime.as_of, resp.served_from) == ("2024-03-03", "snapshot")

    forced = await stub.GetCurrentRegime(
        mr_pb.GetCurrentRegimeRequest(force_refresh=True, user_id="Zoë 42"), timeout=5
    )
    assert (forced.regime.as_of, forced.served_from) == ("2024-03-03", "postgres")
    assert forced.regime == resp.regime


async def test_the_fast_path_answers_as_the_full_path_and_leaves_the_rest_to_it(
    stack_settings: Settings, harness: Harness
) -> None:
    """GetCurrentRegime's fast path (raw request bytes known plain -> the snapshot's encoded
    answer) gives the full path's answer, with served_at to the millisecond; every other
    request, bad ones included, still gets the full path's answer or error, every time."""
    s = _settings(stack_settings)
    await _seed(s, [(date(2024, 3, 1), "bull"), (date(2024, 3, 4), "bear")])
    srv, stub = await harness.start(s)
    ch = harness.channel(srv)
    raw = ch.unary_unary(f"/{SVC}/GetCurrentRegime")  # bytes in, bytes out

    first = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)  # full path
    for _ in range(2):
        for req in (mr_pb.GetCurrentRegimeRequest(), mr_pb.GetCurrentRegimeRequest(user_id="ann")):
            t0 = time.time_ns() // 1_000_000
            resp = await stub.GetCurrentRegime(req, timeout=5)
            t1 = time.time_ns() // 1_000_000
            assert (resp.regime, resp.served_from) == (first.regime, "snapshot")
            served_ms = resp.served_at.seconds * 1000 + resp.served_at.nanos // 1_000_000
            assert resp.served_at.nanos % 1_000_000 == 0 and t0 <= served_ms <= t1
        forced = await stub.GetCurrentRegime(
            mr_pb.GetCurrentRegimeRequest(force_refresh=True), timeout=5
        )
        assert (forced.regime, forced.served_from) == (first.regime, "postgres")
        code, details = await _code_of(
            stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(user_id="u" * 129), timeout=5)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in details
        code, details = await _code_of(raw(b"\x12\x02\xff\xfe", timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid" in details
    # What the answer cache kept: the plain requests' answers, by request bytes; never a
    # force_refresh nor malformed bytes.
    method = f"{MARKET_REGIME_SERVICE_NAME}/GetCurrentRegime"
    cached = {raw for (m, raw) in srv.answer_cache._entries if m == method}
    assert b"" in cached
    assert mr_pb.GetCurrentRegimeRequest(user_id="ann").SerializeToString() in cached
    assert mr_pb.GetCurrentRegimeRequest(force_refresh=True).SerializeToString() not in cached
    assert b"\x12\x02\xff\xfe" not in cached
    assert srv.answer_cache.hits[method] >= 3  # the second round's plain calls, at least

    # A new regime: the fast path serves it at once (never the previous value's bytes).
    await _until(lambda: srv.refresher.listening, "LISTEN", 5)
    await _seed(s, [(date(2024, 3, 5), "crisis")])
    await _until(lambda: srv.refresher.notifications > 0, "the notification", 5)

    async def crisis() -> bool:
        r = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        return (r.regime.as_of, r.regime.regime) == ("2024-03-05", "crisis")

    await _until(crisis, "the new regime", 5)


async def test_a_failing_answer_tag_serves_the_full_path_uncached(
    stack_settings: Settings,
    harness: Harness,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: object, request: object) -> str | None:
        raise RuntimeError("a bug in answer_tag")

    monkeypatch.setattr(MarketRegimeServicer, "answer_tag_GetCurrentRegime", broken)
    s = _settings(stack_settings)
    await _seed(s, [(date(2024, 3, 1), "bull")])
    srv, stub = await harness.start(s)
    for _ in range(3):
        resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        assert (resp.regime.as_of, resp.served_from) == ("2024-03-01", "snapshot")
    assert "answer_tag failed; not caching" in caplog.text
    assert "a bug in answer_tag" in caplog.text
    # Once, not at every call; and nothing was cached.
    assert caplog.text.count("answer_tag failed") == 1
    assert srv.answer_cache.hits[f"{MARKET_REGIME_SERVICE_NAME}/GetCurrentRegime"] == 0


async def test_the_answer_cache_switch_turns_it_off(
    stack_settings: Settings, harness: Harness
) -> None:
    s = _settings(stack_settings).model_copy(update={"answer_cache": False})
    await _seed(s, [(date(2024, 3, 1), "bull")])
    srv, stub = await harness.start(s)
    for _ in range(3):
        resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        assert (resp.regime.as_of, resp.served_from) == ("2024-03-01", "snapshot")
    assert len(srv.answer_cache) == 0 and srv.answer_cache.hits == {}


async def test_notify_updates_snapshot_and_watchers(
    stack_settings: Settings, harness: Harness
) -> None:
    s = _settings(stack_settings)
    await _seed(s, [(date(2024, 4, 1), "bull")])
    # A 60 s poll: only LISTEN/NOTIFY can make the snapshot change within a second.
    srv, stub = await harness.start(s, poll_interval=60.0)
    await _until(lambda: srv.refresher.listening, "LISTEN", 5)

    watch = stub.WatchRegime(mr_pb.WatchRegimeRequest())
    changes_only = stub.WatchRegime(mr_pb.WatchRegimeRequest(skip_current=True))
    first = await asyncio.wait_for(watch.read(), 5)
    assert (first.regime.as_of, first.regime.regime, first.previous_regime) == (
        "2024-04-01",
        "bull",
        "",
    )
    await _until(lambda: srv.regime_snapshot.subscriber_count == 2, "both watchers", 5)

    async def current_as_of() -> str:
        r = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        assert r.served_from == "snapshot"
        return r.regime.as_of

    await _seed(s, [(date(2024, 4, 2), "bear")])
    # How soon after the commit is measured by bench freshness_p99, not asserted here.
    await _until(lambda: _eq(current_as_of(), "2024-04-02"), "the snapshot to update", 3)
    for call in (watch, changes_only):
        upd = await asyncio.wait_for(call.read(), 2)
        assert (upd.regime.as_of, upd.regime.regime, upd.previous_regime) == (
            "2024-04-02",
            "bear",
            "bull",
        )

    # A different result for the same latest as-of is a change too.
    def restate() -> None:
        with engine_for(s.require("database_url")).begin() as conn:
            conn.execute(
                text(
                    "UPDATE regimes SET regime = 'crisis', risk_level = 'high' "
                    "WHERE model_version = :mv AND as_of = :d"
                ),
                {"mv": s.model_version, "d": date(2024, 4, 2)},
            )
            outbox.notify_results(conn, "{}")

    await asyncio.to_thread(restate)
    upd = await asyncio.wait_for(watch.read(), 2)
    assert (upd.regime.as_of, upd.regime.regime, upd.previous_regime) == (
        "2024-04-02",
        "crisis",
        "bear",
    )

    watch.cancel()
    changes_only.cancel()
    await _until(lambda: srv.regime_snapshot.subscriber_count == 0, "watchers to leave", 5)


async def _eq(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


def _notify(url: str) -> None:
    with engine_for(url).begin() as conn:
        outbox.notify_results(conn, "{}")


def _terminate(url: str, pid: int) -> None:
    with engine_for(url).begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


@contextlib.asynccontextmanager
async def _refresher(url: str, **options: Any) -> AsyncIterator[StoreRefresher]:
    """A started refresher tracking one trivial snapshot; stopped at the end."""
    r = StoreRefresher(url, **options)
    r.track(Snapshot[int]("n"), lambda: 1)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def test_an_idle_listen_connection_does_not_wake_the_loop(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LISTEN waits on its socket: nothing runs while nothing arrives (psycopg's
    `notifies(timeout=)` alone re-armed a reader every 0.1 s, 10 loop wake-ups a second), and
    a connection ended by the server is noticed at once, not at the next liveness check."""
    url = stack_settings.require("database_url")
    async with _refresher(url, poll_interval=60.0, listen_check_interval=60.0) as r:
        await _until(lambda: r.listening, "LISTEN", 5)
        await _until(r.caught_up, "the catch-up round after LISTEN", 3)
        loop = asyncio.get_running_loop()
        armed: list[Any] = []
        add_reader = loop.add_reader

        def counting(fd: Any, callback: Callable[..., object], *args: Any) -> None:
            armed.append(fd)
            add_reader(fd, callback, *args)

        monkeypatch.setattr(loop, "add_reader", counting)
        await asyncio.sleep(1.0)
        assert armed == []
        await asyncio.to_thread(_notify, url)
        await _until(lambda: r.notifications == 1, "the notification", 3)

        pid = r.listen_pid
        assert pid is not None
        await asyncio.to_thread(_terminate, url, pid)
        await _until(
            lambda: r.listening and r.listen_pid not in (None, pid), "a new LISTEN connection", 3
        )
        await asyncio.to_thread(_notify, url)
        await _until(lambda: r.notifications == 2, "a notification after reconnecting", 3)


async def test_liveness_checks_lose_no_notification(stack_settings: Settings) -> None:
    """A notification read with a liveness check's SELECT 1 is delivered all the same."""
    url = stack_settings.require("database_url")
    async with _refresher(url, poll_interval=60.0, listen_check_interval=0.02) as r:
        await _until(lambda: r.listening, "LISTEN", 5)
        pid = r.listen_pid
        for _ in range(20):  # one transaction each: not merged by PostgreSQL
            await asyncio.to_thread(_notify, url)
            await asyncio.sleep(0.01)
        await _until(lambda: r.notifications == 20, "20 notifications", 5)
        checks = r.liveness_checks
        await _until(lambda: r.liveness_checks >= checks + 3, "three more liveness checks", 5)
        assert (r.notifications, r.listening, r.listen_pid) == (20, True, pid)


async def test_the_poll_is_a_backstop_while_listen_works(stack_settings: Settings) -> None:
    url = stack_settings.require("database_url")
    # Nothing listens on the second one's port: its LISTEN never connects.
    nowhere = f"postgresql://bloasis@127.0.0.1:{stack._pick_port(set())}/bloasis"
    async with (
        _refresher(url, poll_interval=0.1, listening_poll_interval=60.0) as works,
        _refresher(nowhere, poll_interval=0.1, listening_poll_interval=60.0) as down,
    ):
        await _until(lambda: works.listening, "LISTEN", 5)
        await _until(works.caught_up, "the catch-up round after LISTEN", 3)
        a, b = works.rounds, down.rounds
        # No LISTEN: a round every 0.1 s. Meanwhile the one with LISTEN polls not once.
        await _until(lambda: down.rounds >= b + 5, "five polling rounds without LISTEN", 5)
        assert works.rounds == a
        # LISTEN lost: a round at once (not after the 60 s backstop).
        pid = works.listen_pid
        assert pid is not None
        await asyncio.to_thread(_terminate, url, pid)
        await _until(lambda: works.rounds > a, "a round on losing LISTEN", 2)


async def test_slow_watcher_keeps_newest_changes() -> None:
    snap: Snapshot[int] = Snapshot("n", queue_size=2)
    slow, fast = snap.subscribe(), snap.subscribe()
    got_fast = []
    for n in range(1, 6):
        snap.set(n)
        change = await fast.get()  # keeps up
        assert change is not None
        got_fast.append((change.value, change.previous))
    assert got_fast == [(1, None), (2, 1), (3, 2), (4, 3), (5, 4)]
    # The slow one lost the oldest changes but still ends on the newest one.
    assert [(c.value, c.previous) for c in [await slow.get(), await slow.get()] if c] == [
        (4, 3),
        (5, 4),
    ]
    assert slow.dropped == 3
    snap.close()
    assert await slow.get() is None and await fast.get() is None


# --- history ---------------------------------------------------------------------------------


async def _walk(stub: Any, **kw: Any) -> tuple[list[str], int]:
    req = mr_pb.GetRegimeHistoryRequest(**kw)
    as_ofs: list[str] = []
    pages = 0
    while True:
        resp = await stub.GetRegimeHistory(req, timeout=5)
        pages += 1
        as_ofs += [r.as_of for r in resp.regimes]
        if not resp.next_page_token:
            return as_ofs, pages
        req.page_token = resp.next_page_token


async def test_history_oldest_first_and_paging(stack_settings: Settings, harness: Harness) -> None:
    s = _settings(stack_settings, history_page_size=10)
    days = [date(2022, 1, 3) + timedelta(days=7 * i) for i in range(110)]
    labels = ["bull"] * 40 + ["bear"] * 30 + ["recovery"] * 40
    await _seed(s, list(zip(days, labels, strict=True)))
    _, stub = await harness.start(s)
    iso = [d.isoformat() for d in days]

    rows, pages = await _walk(stub, start_date="2022-01-01", end_date="2024-12-31")
    assert rows == iso and pages == 11  # oldest first, each row once, default size 10
    rows, pages = await _walk(stub, start_date="2022-01-01", end_date="2024-12-31", page_size=7)
    assert rows == iso and pages == 16
    first = await stub.GetRegimeHistory(
        mr_pb.GetRegimeHistoryRequest(start_date="2022-01-01", page_size=5000), timeout=5
    )
    assert len(first.regimes) == 10 and first.next_page_token  # capped at the server's size

    # Defaults: end = the latest as-of, start = end - 365 days.
    rows, _ = await _walk(stub)
    assert rows == [d.isoformat() for d in days if d >= days[-1] - timedelta(days=365)]
    rows, _ = await _walk(stub, start_date=iso[100])
    assert rows == iso[100:]
    rows, _ = await _walk(stub, end_date=iso[60])
    assert rows == [d.isoformat() for d in days[:61] if d >= days[60] - timedelta(days=365)]
    rows, _ = await _walk(stub, start_date="2030-01-01")  # later than anything stored
    assert rows == []
    rows, _ = await _walk(stub, start_date=iso[5], end_date=iso[5])
    assert rows == [iso[5]]

    # A page size may change between pages; the range may not.
    resp = await stub.GetRegimeHistory(
        mr_pb.GetRegimeHistoryRequest(start_date=iso[0], end_date=iso[-1], page_size=3), timeout=5
    )
    resp2 = await stub.GetRegimeHistory(
        mr_pb.GetRegimeHistoryRequest(
            start_date=iso[0], end_date=iso[-1], page_size=4, page_token=resp.next_page_token
        ),
        timeout=5,
    )
    assert [r.as_of for r in resp2.regimes] == iso[3:7]


async def test_history_survives_new_rows_between_pages(
    stack_settings: Settings, harness: Harness
) -> None:
    # With end_date empty the token pins the end resolved on the first page, so a regime
    # committed mid-walk neither shifts the range nor invalidates the token.
    s = _settings(stack_settings, history_page_size=2)
    days = [date(2024, 6, 3) + timedelta(days=i) for i in range(5)]
    await _seed(s, [(d, "sideways") for d in days])
    _, stub = await harness.start(s)
    resp = await stub.GetRegimeHistory(mr_pb.GetRegimeHistoryRequest(), timeout=5)
    await _seed(s, [(date(2024, 6, 20), "bull")])
    rows = [r.as_of for r in resp.regimes]
    req = mr_pb.GetRegimeHistoryRequest(page_token=resp.next_page_token)
    while req.page_token:
        resp = await stub.GetRegimeHistory(req, timeout=5)
        rows += [r.as_of for r in resp.regimes]
        req.page_token = resp.next_page_token
    assert rows == [d.isoformat() for d in days]


HISTORY_BAD: list[tuple[dict[str, Any], str]] = [
    ({"start_date": "2024-13-01"}, "start_date"),
    ({"start_date": "20240101"}, "start_date"),  # 3.11's fromisoformat would take it
    ({"start_date": "2024-01-01 "}, "start_date"),
    ({"start_date": "２０２４-０１-０１"}, "start_date"),  # non-ASCII digits
    ({"end_date": "yesterday"}, "end_date"),
    ({"end_date": "2023-02-29"}, "end_date"),
    ({"start_date": "2024-02-01", "end_date": "2024-01-01"}, "start_date"),
    ({"start_date": "2020-01-01", "end_date": "2024-01-01"}, "start_date"),  # > 400 days
    ({"start_date": "2020-01-01"}, "start_date"),  # > 400 days before the latest as-of
    ({"page_size": -1}, "page_size"),
    ({"page_token": "not a token"}, "page_token"),
    ({"page_token": base64.urlsafe_b64encode(b"{}").decode()}, "page_token"),
    ({"page_token": "x" * 5000}, "page_token"),
]


async def test_invalid_arguments_name_the_field(
    shared: tuple[RegimeServer, Any, Settings],
) -> None:
    srv, stub, _ = shared
    for kw, name in HISTORY_BAD:
        code, details = await _code_of(
            stub.GetRegimeHistory(mr_pb.GetRegimeHistoryRequest(**kw), timeout=5)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (kw, code, details)
        assert name in details, (kw, details)

    # A real token replayed with a different range.
    first = await stub.GetRegimeHistory(
        mr_pb.GetRegimeHistoryRequest(start_date="2024-01-01", page_size=1), timeout=5
    )
    assert first.next_page_token
    code, details = await _code_of(
        stub.GetRegimeHistory(
            mr_pb.GetRegimeHistoryRequest(
                start_date="2024-01-02", page_token=first.next_page_token
            ),
            timeout=5,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details

    for user_id in ("u" * 129, "bad\nid", "nul\x00", "\u200bzero-width-is-format"):
        code, details = await _code_of(
            stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(user_id=user_id), timeout=5)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in details, user_id

    # Bytes that are not a valid message (bad UTF-8 in user_id): INVALID_ARGUMENT, not INTERNAL.
    ch = grpc.aio.insecure_channel(srv.address)
    try:
        raw = ch.unary_unary(
            f"/{SVC}/GetCurrentRegime",
            request_serializer=lambda b: b,
            response_deserializer=mr_pb.GetCurrentRegimeResponse.FromString,
        )
        code, details = await _code_of(raw(b"\x12\x02\xff\xfe", timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    finally:
        await ch.close()


async def test_not_found_when_nothing_is_stored(stack_settings: Settings, harness: Harness) -> None:
    s = _settings(stack_settings)  # nothing stored for this model version
    srv, stub = await harness.start(s)
    for force in (False, True):
        code, details = await _code_of(
            stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(force_refresh=force), timeout=5)
        )
        assert code == grpc.StatusCode.NOT_FOUND, details
        assert s.model_version in details
    resp = await stub.GetRegimeHistory(mr_pb.GetRegimeHistoryRequest(), timeout=5)
    assert list(resp.regimes) == [] and resp.next_page_token == ""
    with pytest.raises(client.ClientError) as err:
        await asyncio.to_thread(client.get_regime, srv.address)
    assert err.value.code == "NOT_FOUND"

    # The first regime to arrive is picked up (no stale "nothing" cached).
    await _seed(s, [(date(2024, 7, 1), "recovery")])
    await _until(lambda: srv.regime_snapshot.value is not None, "the first regime", 3)
    resp2 = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
    assert (resp2.regime.as_of, resp2.served_from) == ("2024-07-01", "snapshot")


# --- health, outage, Redis fallback ------------------------------------------------------------


async def _health(ch: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(resp.status)


async def _all_health(ch: grpc.aio.Channel, status: int) -> bool:
    return all([await _health(ch, name) == status for name in ("", SVC)])


async def test_a_probe_failing_after_its_timeout_is_consumed_and_awaited_at_close(
    stack_settings: Settings,
) -> None:
    # Regression: a Redis PING outliving its timeout failed later inside redis-py ("I/O operation
    # on closed file" once the client was closed at stop) and asyncio logged "Future exception
    # was never retrieved" with a traceback from the server's thread.
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx))
    try:
        store = StoreAccess(stack_settings)
        release = threading.Event()

        def hangs_then_fails() -> None:
            release.wait(5)
            raise ValueError("I/O operation on closed file.")

        assert await store._probe("redis", hangs_then_fails, timeout=0.05) is False
        probe = store._probes["redis"]
        loop.call_later(0.2, release.set)
        await store.aclose()  # waits for the probe in flight before closing the clients
        assert probe.done()
        store.close()
        del store, probe
        gc.collect()
        await asyncio.sleep(0)
        assert unretrieved == []
    finally:
        loop.set_exception_handler(None)


@pytest.mark.fault
async def test_health_follows_postgres_and_reads_survive_an_outage(
    stack_settings: Settings, stack_state_dir: Path, harness: Harness
) -> None:
    s = _settings(stack_settings)
    (stored,) = await _seed(s, [(date(2024, 5, 1), "bull")])
    srv, stub = await harness.start(s, poll_interval=60.0)
    ch = harness.channel(srv)
    assert await _all_health(ch, SERVING)
    code, _ = await _code_of(_health(ch, "no.such.Service"))
    assert code == grpc.StatusCode.NOT_FOUND
    await _until(lambda: srv.refresher.listening, "LISTEN", 5)

    r = make_redis(s.require("redis_url"))
    saved = r.get(REGIME_CURRENT_KEY)
    saved_ttl = r.ttl(REGIME_CURRENT_KEY)
    await _stack("stop", "postgres", stack_state_dir)
    try:
        await _until(lambda: _all_health(ch, NOT_SERVING), "NOT_SERVING", 5)
        resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        assert (resp.regime.as_of, resp.served_from) == ("2024-05-01", "snapshot")
        for call in (
            stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(force_refresh=True), timeout=5),
            stub.GetRegimeHistory(mr_pb.GetRegimeHistoryRequest(), timeout=5),
        ):
            code, details = await _code_of(call)
            assert code == grpc.StatusCode.UNAVAILABLE and "PostgreSQL" in details, details
        # Bad input is still bad input, store or no store.
        code, _ = await _code_of(
            stub.GetRegimeHistory(mr_pb.GetRegimeHistoryRequest(page_size=-1), timeout=5)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT

        # A fresh server knows nothing yet: it answers from Redis.
        write_current_regime(r, stored, 60)  # as the pipeline's cache step would
        srv2, stub2 = await harness.start(s, poll_interval=60.0)
        ch2 = harness.channel(srv2)
        assert await _all_health(ch2, NOT_SERVING)
        resp = await stub2.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        assert (resp.regime.as_of, resp.served_from) == ("2024-05-01", "redis")
        code, _ = await _code_of(
            stub2.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(force_refresh=True), timeout=5)
        )
        assert code == grpc.StatusCode.UNAVAILABLE
        watch2 = stub2.WatchRegime(mr_pb.WatchRegimeRequest())
        first = await asyncio.wait_for(watch2.read(), 5)
        assert (first.regime.as_of, first.previous_regime) == ("2024-05-01", "")
    finally:
        await _stack("start", "postgres", stack_state_dir)
        if saved is not None:
            r.set(REGIME_CURRENT_KEY, saved, ex=max(int(saved_ttl), 1))
        else:
            r.delete(REGIME_CURRENT_KEY)
        r.close()

    await _until(lambda: _all_health(ch, SERVING), "SERVING again", 10)
    await _until(lambda: _all_health(ch2, SERVING), "SERVING again (fresh server)", 10)
    # Both LISTEN connections come back, so a new regime arrives by NOTIFY (the poll is 60 s).
    await _until(lambda: srv.refresher.listening and srv2.refresher.listening, "re-LISTEN", 10)
    await _seed(s, [(date(2024, 5, 2), "bear")])
    await _until(lambda: _eq(_as_of(stub), "2024-05-02"), "the snapshot after the outage", 2)
    upd = await asyncio.wait_for(watch2.read(), 3)
    assert (upd.regime.as_of, upd.previous_regime) == ("2024-05-02", "bull")
    resp = await stub2.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
    assert (resp.regime.as_of, resp.served_from) == ("2024-05-02", "snapshot")
    watch2.cancel()


@pytest.mark.fault
async def test_redis_outage_does_not_stop_reads(
    stack_settings: Settings, stack_state_dir: Path, harness: Harness
) -> None:
    s = _settings(stack_settings)  # nothing stored yet: every read tries Redis first
    await _stack("stop", "redis", stack_state_dir)
    try:
        srv, stub = await harness.start(s)
        assert await _all_health(harness.channel(srv), SERVING)  # Redis does not count
        code, details = await _code_of(
            stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
        )
        assert code == grpc.StatusCode.NOT_FOUND, details  # fell through to PostgreSQL
        await _seed(s, [(date(2024, 9, 2), "sideways")])
        await _until(lambda: _eq(_as_of(stub), "2024-09-02"), "the snapshot", 3)
    finally:
        await _stack("start", "redis", stack_state_dir)


async def _as_of(stub: Any) -> str:
    resp = await stub.GetCurrentRegime(mr_pb.GetCurrentRegimeRequest(), timeout=5)
    return str(resp.regime.as_of)


# --- reflection, client, shutdown ---------------------------------------------------------------


async def _run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_reflection_lists_and_describes_services(
    shared: tuple[RegimeServer, Any, Settings],
) -> None:
    srv, _, _ = shared
    listed = (await _run(GRPCURL, "-plaintext", srv.address, "list")).split()
    assert {SVC, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(listed)
    described = await _run(GRPCURL, "-plaintext", srv.address, "describe", SVC)
    for rpc in ("GetCurrentRegime", "GetRegimeHistory", "stream .bloasis.market_regime"):
        assert rpc in described
    # And an operator's call, by reflection alone.
    out = await _run(
        GRPCURL, "-plaintext", "-d", '{"user_id": "ops"}', srv.address, f"{SVC}/GetCurrentRegime"
    )
    body = json.loads(out)
    assert body["served_from"] == "snapshot" and body["regime"]["as_of"] == "2024-01-08", body

    # The reflection client sees the same list.
    ch = grpc.aio.insecure_channel(srv.address)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        resp = await call.read()
        names = {x.name for x in resp.list_services_response.service}
        assert SVC in names and "grpc.health.v1.Health" in names
        call.cancel()
    finally:
        await ch.close()


async def test_blocking_client_and_formatting(
    shared: tuple[RegimeServer, Any, Settings],
) -> None:
    srv, _, s = shared
    d = await asyncio.to_thread(client.get_regime, srv.address, force_refresh=True)
    assert d["as_of"] == "2024-01-08" and d["served_from"] == "postgres"
    assert d["model_version"] == s.model_version and d["indicators"]["vix"] == 15.0
    text_ = client.format_regime(d)
    for part in ("bull", "Confidence  0.80", "Risk        low", "2024-01-08", "bull on", "VIX"):
        assert part in text_, text_

    rows = await asyncio.to_thread(
        client.get_history, srv.address, date(2024, 1, 1), date(2024, 1, 31)
    )
    assert [r["as_of"] for r in rows] == [f"2024-01-0{i}" for i in range(1, 9)]  # 2 pages
    hist = client.format_history(rows, summary=True)
    assert hist.splitlines()[0].split() == ["2024-01-01", "bull", "0.80", "low"]
    assert "2024-01-01..2024-01-08 bull (8 days)" in hist
    spells = client.regime_spells(
        [{"as_of": "a", "regime": "bear"}, {"as_of": "b", "regime": "bear"}, {"as_of": "c"}]
    )
    assert spells == [("a", "b", "bear", 2), ("c", "c", "?", 1)]

    gen = client.watch(srv.address)
    try:
        first = await asyncio.to_thread(next, gen)
        assert first["as_of"] == "2024-01-08" and first["previous_regime"] == ""
    finally:
        await asyncio.to_thread(gen.close)

    with pytest.raises(client.ClientError) as err:
        await asyncio.to_thread(client.get_history, srv.address, date(2024, 2, 1), date(2024, 1, 1))
    assert err.value.code == "INVALID_ARGUMENT" and "start_date" in str(err.value)
    with pytest.raises(client.ClientError) as err:
        await asyncio.to_thread(client.get_regime, "127.0.0.1:1", timeout=2)
    assert err.value.code == "UNAVAILABLE"


async def test_stop_ends_watch_streams_promptly(stack_settings: Settings, harness: Harness) -> None:
    s = _settings(stack_settings)
    await _seed(s, [(date(2024, 8, 1), "bull")])
    srv, stub = await harness.start(s, grace=5.0)
    watch = stub.WatchRegime(mr_pb.WatchRegimeRequest())
    await asyncio.wait_for(watch.read(), 5)
    t0 = time.monotonic()
    await srv.stop()
    # Watchers are told to reconnect instead of holding shutdown for the whole grace period.
    assert time.monotonic() - t0 < 2.0
    code, details = await _code_of(watch.read())
    assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details


def test_serve_exits_cleanly_on_sigterm(stack_settings: Settings) -> None:
    env = {
        **os.environ,
        "BLOASIS_DATABASE_URL": stack_settings.require("database_url"),
        "BLOASIS_REDIS_URL": stack_settings.require("redis_url"),
        "BLOASIS_STATE_DIR": str(stack_settings.state_dir),
    }
    code = (
        "import asyncio\n"
        "from bloasis.config import load_settings\n"
        "from bloasis.serve.server import serve\n"
        "asyncio.run(serve(load_settings(), address='127.0.0.1:0',"
        " ready=lambda a: print('READY', a, flush=True)))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY 127.0.0.1:"), line
        address = line.split()[1]
        with grpc.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            status = health.Check(health_pb2.HealthCheckRequest(service=SVC), timeout=5)
            assert status.status == SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- fuzzing ---------------------------------------------------------------------------------

_text = st.one_of(
    st.text(max_size=30),
    st.dates().map(date.isoformat),
    st.sampled_from(
        ["", "0000-01-01", "0001-01-01", "9999-12-31", "2024-02-30", "2024-1-1", "+2024-01-01"]
    ),
    st.integers(0, 200_000).map(lambda n: "9" * n),  # huge
    st.integers(0, 50_000).map(lambda n: "é\U0001f600" * n),  # huge, multi-byte
)


def _token(parts: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


_page_token = st.one_of(
    st.just(""),
    st.text(max_size=50),
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.fixed_dictionaries(
        {"v": st.integers(0, 2), "s": _text, "e": _text, "end": _text, "after": _text}
    ).map(_token),
    st.fixed_dictionaries(
        {"v": st.just(1), "s": st.just(""), "e": st.just(""), "end": _text, "after": _text}
    ).map(_token),
)


@hsettings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    start=_text,
    end=_text,
    page_size=st.integers(-(2**31), 2**31 - 1),
    page_token=_page_token,
    user_id=_text,
    force=st.booleans(),
)
async def test_fuzzed_requests_get_only_clean_statuses(
    shared: tuple[RegimeServer, Any, Settings],
    start: str,
    end: str,
    page_size: int,
    page_token: str,
    user_id: str,
    force: bool,
) -> None:
    _, stub, _ = shared
    ok = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    calls = [
        stub.GetRegimeHistory(
            mr_pb.GetRegimeHistoryRequest(
                start_date=start, end_date=end, page_size=page_size, page_token=page_token
            ),
            timeout=10,
        ),
        stub.GetCurrentRegime(
            mr_pb.GetCurrentRegimeRequest(user_id=user_id, force_refresh=force), timeout=10
        ),
    ]
    for call in calls:
        code, details = await _code_of(call)
        assert code in ok, (code, details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert any(f in details for f in FIELDS), details
