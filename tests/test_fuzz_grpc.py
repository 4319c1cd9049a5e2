"""Bad requests for every RPC over a real channel: hypothesis builds requests of each RPC's type
from its descriptor (random field values, huge and odd unicode strings, out-of-range dates, bad
profiles and sectors, unknown users), and raw bytes (mutated, truncated, unknown fields, wrong
wire types). Only OK, INVALID_ARGUMENT or NOT_FOUND may come back (and UNIMPLEMENTED from v1's
RunRLBacktest): never INTERNAL, never a crash. Then the message size limit (RESOURCE_EXHAUSTED,
server alive after) and per-call deadlines (DEADLINE_EXCEEDED promptly, server resources
released).

test_grpc.py and test_grpc_strategy.py fuzz chosen fields of their RPCs; this module is generic
over the descriptor table (tests/rpcs.py), so it covers every method of v2 (WatchRegime
included) and of v1 (the original contract: SaveRegime and RunAIAnalysis included; a
RunAIAnalysis only ever names users without preferences here, since for a real user it runs a
pipeline, and a RunBacktest, v1 or v2, always names such a user too: a valid one would start a
real backtest).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text

from bloasis.config import Settings
from bloasis.pb.v2 import backtesting_pb2 as bt2
from bloasis.pb.v2 import strategy_pb2 as st_pb
from bloasis.regime.model import resolve_model
from bloasis.serve.server import MAX_RECEIVE_MESSAGE_BYTES, RegimeServer
from bloasis.store.db import engine_for
from bloasis.store.models import Base
from bloasis.strategy.types import GICS_SECTORS, PROFILES
from tests.grpc_harness import Harness
from tests.rpcs import ALL_RPCS, RPCS, Rpc, call
from tests.test_grpc_strategy import World, _drop_users, _new_world, _seed_world

pytestmark = pytest.mark.fuzz

OK = grpc.StatusCode.OK
CLEAN = {OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
MAX_DETAILS = 1000  # error details stay short whatever the input size
NEVER = "never-created"  # a user id suffix no fuzzed UpdatePreferences may create


@pytest.fixture(scope="module")
async def fuzzed(stack_settings: Settings) -> AsyncIterator[tuple[World, RegimeServer, Any]]:
    """The seeded world of test_grpc_strategy (regimes, sectors, strategies, users) under this
    module's own model version, one server, one channel."""
    w = _new_world(stack_settings)
    await asyncio.to_thread(_seed_world, w)
    h = Harness()
    try:
        srv, _ = await h.start(w.settings)
        yield w, srv, h.channel(srv)
    finally:
        await h.close()
        await asyncio.to_thread(_drop_users, w)


# --- request strategies ----------------------------------------------------------------------

_ODD = [
    "", " ", "\x00", "\t", "\u202e", "\u200b", "\ufeff", "NaN", "-1", "null", "%s", "{}", "\\",
    "'; DROP TABLE regimes; --", "../../etc/passwd", "é\U0001f600", "Ⅻ", "٣", "ǅ",
]  # fmt: skip
_DATES = [
    "2022-12-28", "2022-12-27", "2022-12-25", "0001-01-01", "9999-12-31", "2022-02-30",
    "2022-1-1", "+2022-01-01", "20221228", "2022-12-28T00:00:00", "２０２２-１２-２８",
]  # fmt: skip


def _short_text() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=40), st.sampled_from(_ODD))


def _huge_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(0, 300_000).map(lambda n: "9" * n),
        st.integers(0, 60_000).map(lambda n: "é\U0001f600" * n),  # multi-byte, ~360 KB
    )


def _hints(field: str, w: World) -> st.SearchStrategy[str]:
    """Plausible values of a field, so a share of the requests is valid and reaches the store."""
    if field in ("as_of", "start_date", "end_date", "start", "end"):
        return st.one_of(st.dates().map(date.isoformat), st.sampled_from(_DATES))
    if field in ("user_id", "user_ids"):
        return st.sampled_from([w.user, w.user_no_strategy, w.prefix + "nobody", "test"])
    if field in ("risk_profile", "profiles", "strategy_type"):
        return st.sampled_from([*PROFILES, "Moderate", "balanced"])
    if field == "period":
        return st.sampled_from(
            ["1y", "3Y", "max", "0y", "1000y", "2021-01-04:2022-12-28", "2022-12-28:2021-01-04",
             "2021-02-30:2022-01-03", "1990-01-02:2030-01-01", "ytd", "2021-01-04"]
        )  # fmt: skip
    if field in ("backtest_id", "backtest_ids"):
        return st.sampled_from([str(uuid.UUID(int=7)), uuid.UUID(int=7).hex, "{}", "not-a-uuid"])
    if field == "rebalance":
        return st.sampled_from(["daily", "weekly", "monthly", "yearly", "Weekly"])
    if field in ("commission", "slippage", "initial_cash"):
        return st.sampled_from(["0.001", "0", "-0.1", "0.5", "1e-3", "100000", "1e13", "x"])
    if field in ("sectors", "preferred_sectors", "excluded_sectors"):
        return st.sampled_from([*GICS_SECTORS, "energy", "Crypto"])
    if field == "symbols":
        return st.sampled_from(["KO", "xom", "UNH", "BRK.B", "^GSPC", "A-B", "NOPE"])
    if field == "max_single_position":
        return st.sampled_from(["0.05", "0.1000", "1", "0", "-0.1", "1e-2", "0.00001", "Infinity"])
    if field in ("regime", "new_regime"):
        return st.sampled_from(["bull", "bear", "crisis", "sideways", "recovery", "Bull", "boom"])
    if field == "trigger":
        return st.sampled_from(["baseline", "manual", "fomc", "geopolitical", "nope"])
    if field == "timestamp":
        return st.sampled_from(
            ["2022-12-28T14:30:00Z", "2022-12-28T14:30:00", "9999-01-01T00:00:00Z",
             "2022-13-01T00:00:00Z", "yesterday"]
        )  # fmt: skip
    return st.nothing()


def _double_hints(field: str) -> st.SearchStrategy[float]:
    if field == "max_single_position":
        return st.sampled_from([0.05, 0.1, 1.0, 0.0, -0.1, 0.00001, 1.5])
    if field == "confidence":
        return st.sampled_from([0.0, 0.5, 1.0, -0.01, 1.01])
    if field in ("commission", "slippage", "stop_loss", "take_profit"):
        return st.sampled_from([0.0, 0.0005, 0.05, -0.001, 0.2])
    if field == "initial_cash":
        return st.sampled_from([0.0, 100000.0, -1.0, 1e15])
    return st.nothing()


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),  # proto3 enums are open: any int32
}


def _field(f: FieldDescriptor, w: World, depth: int) -> st.SearchStrategy[Any]:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        if f.message_type.full_name == "google.protobuf.Timestamp":
            return st.builds(
                Timestamp,
                seconds=st.integers(-(2**63), 2**63 - 1),
                nanos=st.integers(-(2**31), 2**31 - 1),
            )
        return messages(f.message_type, w, depth + 1)
    if f.type == FieldDescriptor.TYPE_STRING:
        if f.is_repeated:  # many short values (some lists exceed the per-request caps)
            return st.lists(st.one_of(_hints(f.name, w), _short_text()), max_size=130)
        return st.one_of(_hints(f.name, w), _short_text(), _huge_text())
    if f.type == FieldDescriptor.TYPE_BOOL:
        value: st.SearchStrategy[Any] = st.booleans()
    elif f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        value = st.one_of(_double_hints(f.name), st.floats())  # NaN and infinities included
    elif f.type in _INT_RANGES:
        lo, hi = _INT_RANGES[f.type]
        value = st.one_of(st.integers(lo, hi), st.sampled_from([0, -1, 1, lo, hi]))
    else:
        raise NotImplementedError(f"no strategy for {f.full_name} (type {f.type})")
    return st.lists(value, max_size=20) if f.is_repeated else value


def messages(desc: Descriptor, w: World, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of type `desc`: each field absent or drawn from its strategy."""
    cls = message_factory.GetMessageClass(desc)
    fields = {f.name: _field(f, w, depth) for f in desc.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))


def _own_users_only(rpc: Rpc, req: Message, w: World) -> Message:
    """UpdatePreferences may only create users under this module's prefix (deleted at the end);
    RunAIAnalysis and RunBacktest only name users without preferences (for a real one they run
    a pipeline or a backtest)."""
    if rpc.name == "UpdatePreferences":
        target = req.preferences if isinstance(req, st_pb.UpdatePreferencesRequest) else req
        uid = target.user_id  # type: ignore[attr-defined]
        if uid and not uid.startswith(w.prefix):
            target.user_id = w.prefix + uid  # type: ignore[attr-defined]
        if target.user_id.startswith(w.prefix + NEVER):  # type: ignore[attr-defined]
            target.user_id = w.prefix + "x"  # type: ignore[attr-defined]
    if rpc.name == "RunAIAnalysis" and req.user_id.startswith(w.prefix):  # type: ignore[attr-defined]
        # Never a user that exists (a fuzzed UpdatePreferences may have created one): a real
        # recompute runs the pipeline, seconds per example, over this module's synthetic
        # strategies (refused as differing books: tests/test_users_only_run.py).
        req.user_id = w.prefix + NEVER  # type: ignore[attr-defined]
    if rpc.name == "RunBacktest":
        # An unknown user is NOT_FOUND after every other check, before any data is loaded: the
        # other fields are fuzzed, no backtest starts (v1: a user's strategy, not a profile's).
        if isinstance(req, bt2.RunBacktestRequest):
            req.user_ids.append(w.prefix + NEVER)
        else:
            req.strategy_type = ""  # type: ignore[attr-defined]
            req.user_id = w.prefix + NEVER  # type: ignore[attr-defined]
    return req


def _clean(rpc: Rpc) -> set[grpc.StatusCode]:
    # RunRLBacktest has no implementation (no reinforcement-learning agent): it says so.
    return CLEAN | {grpc.StatusCode.UNIMPLEMENTED} if rpc.name == "RunRLBacktest" else CLEAN


def _check(rpc: Rpc, code: grpc.StatusCode, details: str) -> None:
    assert code in _clean(rpc), (rpc.name, code, details[:300])
    assert len(details) <= MAX_DETAILS, (rpc.name, len(details))
    if code != OK:
        assert details, (rpc.name, code)  # every refusal says why


_FUZZ = hsettings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@hsettings(_FUZZ, max_examples=300)
@given(rpc=st.sampled_from(ALL_RPCS), data=st.data())
async def test_random_requests_of_every_rpc(
    fuzzed: tuple[World, RegimeServer, Any], rpc: Rpc, data: st.DataObject
) -> None:
    w, _, channel = fuzzed
    req = _own_users_only(rpc, data.draw(messages(rpc.request.DESCRIPTOR, w), label="request"), w)
    code, details = await call(channel, rpc, req, stream_wait=0.2)
    _check(rpc, code, details)


# --- raw bytes ----------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _unknown_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_Mutation = Callable[[bytes, st.DataObject], bytes]


def _truncate(b: bytes, d: st.DataObject) -> bytes:
    return b[: d.draw(st.integers(0, max(len(b) - 1, 0)))]


def _flip(b: bytes, d: st.DataObject) -> bytes:
    if not b:
        return b
    i = d.draw(st.integers(0, len(b) - 1))
    return b[:i] + bytes([b[i] ^ d.draw(st.integers(1, 255))]) + b[i + 1 :]


def _append(b: bytes, d: st.DataObject) -> bytes:
    return b + d.draw(st.binary(max_size=64))


def _unknown(b: bytes, d: st.DataObject) -> bytes:
    return b + _unknown_field(d.draw(st.integers(16, 2**29 - 1)), d.draw(st.binary(max_size=64)))


def _wrong_wire_type(b: bytes, d: st.DataObject) -> bytes:
    # Field 1..6 with a wire type its declaration does not have (varint, 64-bit, group, 32-bit).
    tag = d.draw(st.integers(1, 6)) << 3 | d.draw(st.sampled_from([0, 1, 3, 4, 5]))
    return b + _varint(tag) + d.draw(st.binary(min_size=1, max_size=9))


def _bad_utf8(b: bytes, d: st.DataObject) -> bytes:
    # A string field (1) whose bytes are not UTF-8.
    return _varint(1 << 3 | 2) + _varint(3) + b"\xff\xfe\xc0" + b


_MUTATIONS: list[_Mutation] = [_truncate, _flip, _append, _unknown, _wrong_wire_type, _bad_utf8]


def _foreign_user(rpc: Rpc, payload: bytes, w: World) -> bool:
    """Would these bytes create a user outside this module's prefix (or recompute a real
    user's strategy: a pipeline run; or start a backtest)?"""
    if rpc.name not in ("UpdatePreferences", "RunAIAnalysis", "RunBacktest"):
        return False
    try:
        req = rpc.request.FromString(payload)
    except DecodeError:
        return False
    never = w.prefix + NEVER
    if isinstance(req, bt2.RunBacktestRequest):
        return not any(u.startswith(never) for u in req.user_ids)
    if rpc.name == "RunBacktest":  # v1
        return bool(req.strategy_type) or not req.user_id.startswith(never)  # type: ignore[attr-defined]
    if rpc.name == "RunAIAnalysis":
        return req.user_id.startswith(w.prefix)  # type: ignore[attr-defined]
    target = req.preferences if isinstance(req, st_pb.UpdatePreferencesRequest) else req
    uid = target.user_id  # type: ignore[attr-defined]
    return bool(uid) and not uid.startswith(w.prefix)


@hsettings(_FUZZ, max_examples=200)
@given(rpc=st.sampled_from(ALL_RPCS), data=st.data())
async def test_raw_bytes_of_every_rpc(
    fuzzed: tuple[World, RegimeServer, Any], rpc: Rpc, data: st.DataObject
) -> None:
    w, _, channel = fuzzed
    if data.draw(st.booleans(), label="from scratch"):
        payload = data.draw(st.binary(max_size=400), label="payload")
    else:
        base = _own_users_only(rpc, data.draw(messages(rpc.request.DESCRIPTOR, w)), w)
        payload = base.SerializeToString()
        for mutation in data.draw(st.lists(st.sampled_from(_MUTATIONS), min_size=1, max_size=3)):
            payload = mutation(payload, data)
    if _foreign_user(rpc, payload, w):
        return  # would leave a user behind; any other input is fair
    code, details = await call(channel, rpc, payload, stream_wait=0.2)
    _check(rpc, code, details)


async def test_server_is_healthy_after_fuzzing(fuzzed: tuple[World, RegimeServer, Any]) -> None:
    w, srv, channel = fuzzed
    resp = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    assert srv.regime_snapshot.subscriber_count == 0  # every fuzzed watch was released
    # No fuzzed RunBacktest started a backtest (each named a user that never exists).
    s = w.settings
    mv = resolve_model(s.model_version, s.universe, s.regime_overrides).version
    with engine_for(s.require("database_url")).connect() as conn:
        q = text("SELECT count(*) FROM backtests WHERE model_version = :mv")
        assert conn.execute(q, {"mv": mv}).scalar_one() == 0


# --- message size and deadlines -----------------------------------------------------------------


async def test_requests_over_the_size_limit_are_refused(
    fuzzed: tuple[World, RegimeServer, Any],
) -> None:
    w, srv, channel = fuzzed
    # Unknown fields pad any request type to a chosen size.
    over = _unknown_field(1000, b"x" * MAX_RECEIVE_MESSAGE_BYTES)
    under = _unknown_field(1000, b"x" * (MAX_RECEIVE_MESSAGE_BYTES - 1024))
    for rpc in ALL_RPCS:
        base = _own_users_only(rpc, rpc.request(), w).SerializeToString()
        code, details = await call(channel, rpc, base + over)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (rpc.name, code, details)
        # Just under the limit the request is read (unknown fields are ignored).
        code, details = await call(channel, rpc, base + under, stream_wait=0.2)
        assert code in _clean(rpc), (rpc.name, code, details)
    # A huge field value under the limit is bad input, named, and not echoed back whole.
    rpc = RPCS["GetCurrentRegime"]
    code, details = await call(channel, rpc, rpc.request(user_id="u" * 3_000_000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in details
    assert len(details) < 200
    # The server is alive and serving on the same channel and on a new one.
    code, _ = await call(channel, rpc, rpc.request())
    assert code == OK
    async with grpc.aio.insecure_channel(srv.address) as fresh:
        code, _ = await call(fresh, rpc, rpc.request())
        assert code == OK


async def _lock_the_store(url: str) -> Callable[[], Any]:
    """Lock every table ACCESS EXCLUSIVE (every read waits); returns the release."""

    def take() -> Any:
        conn = engine_for(url).connect()
        tx = conn.begin()
        tables = ", ".join(sorted(Base.metadata.tables))  # names from the schema, not input
        conn.execute(text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
        return conn, tx

    conn, tx = await asyncio.to_thread(take)

    def release() -> None:
        tx.rollback()
        conn.close()

    return release


def _store_bound(w: World) -> dict[str, Message]:
    """For each RPC a request that needs PostgreSQL (no snapshot can answer it)."""
    old = "2022-12-27"  # not the latest: never in a snapshot
    return {
        "GetCurrentRegime": RPCS["GetCurrentRegime"].request(force_refresh=True),
        "GetRegimeHistory": RPCS["GetRegimeHistory"].request(),
        "WatchRegime": RPCS["WatchRegime"].request(skip_current=True),  # waits for a change
        "GetSectorAnalysis": RPCS["GetSectorAnalysis"].request(as_of=old),
        "GetCandidateSymbols": RPCS["GetCandidateSymbols"].request(as_of=old),
        "GetStrategy": RPCS["GetStrategy"].request(risk_profile="moderate", as_of=old),
        "GetStockPicks": RPCS["GetStockPicks"].request(user_id=w.user, as_of=old),
        "GetPreferences": RPCS["GetPreferences"].request(user_id=w.user),
        "UpdatePreferences": st_pb.UpdatePreferencesRequest(
            preferences=st_pb.UserPreferences(user_id=w.prefix + "deadline")
        ),
        # Users are looked up before anything starts (this one never exists).
        "RunBacktest": bt2.RunBacktestRequest(user_ids=[w.prefix + NEVER], start="2022-01-03"),
        "GetBacktestResults": bt2.GetBacktestResultsRequest(backtest_id=str(uuid.uuid4())),
        "CompareStrategies": bt2.CompareStrategiesRequest(backtest_ids=[str(uuid.uuid4())]),
    }


async def test_deadlines_are_honoured(fuzzed: tuple[World, RegimeServer, Any]) -> None:
    w, srv, channel = fuzzed
    deadline_exceeded = grpc.StatusCode.DEADLINE_EXCEEDED
    requests = _store_bound(w)
    assert set(requests) == set(RPCS)
    current = RPCS["GetCurrentRegime"]
    # A store that does not answer (every table locked): each call ends at its tiny deadline,
    # not at the server's store timeout (10 s), and the event loop keeps serving the snapshot.
    release = await _lock_the_store(w.settings.require("database_url"))
    try:
        for name, req in requests.items():
            t0 = time.monotonic()
            code, details = await call(channel, RPCS[name], req, timeout=0.05, stream_wait=5)
            assert code == deadline_exceeded, (name, code, details)
            assert time.monotonic() - t0 < 1.0, name
            t0 = time.monotonic()
            code, _ = await call(channel, current, current.request())
            assert code == OK and time.monotonic() - t0 < 0.5  # the snapshot, not blocked
    finally:
        await asyncio.to_thread(release)
    # Once the store answers again, so do the same requests (the blocked reads were dropped).
    for name in ("GetCurrentRegime", "GetRegimeHistory", "GetStrategy", "GetPreferences"):
        code, details = await call(channel, RPCS[name], requests[name], timeout=5)
        assert code == OK, (name, code, details)

    # A watch with a deadline ends at it, and the server drops its subscription.
    before = srv.regime_snapshot.subscriber_count
    watch = RPCS["WatchRegime"]
    t0 = time.monotonic()
    stream = channel.unary_stream(
        watch.path,
        request_serializer=watch.request.SerializeToString,
        response_deserializer=watch.response.FromString,
    )(watch.request(skip_current=True), timeout=0.5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(stream.read(), 5)
    assert err.value.code() == deadline_exceeded
    assert time.monotonic() - t0 > 0.4  # not before its deadline (how soon after: no bound)
    for _ in range(100):
        if srv.regime_snapshot.subscriber_count == before:
            break
        await asyncio.sleep(0.02)
    assert srv.regime_snapshot.subscriber_count == before


async def test_stop_is_bounded_when_grpc_never_confirms(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """grpcio's aio server can, rarely, wait forever in stop(); RegimeServer.stop still returns."""
    from bloasis.serve import server as server_module

    h = Harness()
    srv, _ = await h.start(stack_settings)
    grpc_server = srv._server
    real_stop = grpc_server.stop

    async def never(grace: float | None) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(server_module, "SHUTDOWN_EXTRA_S", 0.2)
    monkeypatch.setattr(grpc_server, "stop", never)
    t0 = time.monotonic()
    await srv.stop(0)
    assert time.monotonic() - t0 < 2.0
    assert "did not confirm its shutdown" in caplog.text
    await real_stop(0)  # the real one, for this test's own cleanup
