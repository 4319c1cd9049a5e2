"""Per-principal access (bloasis.serve.auth): `sub=` and `admin` token entries and their checks
at start, the rate-limited refusal log, `check_user_access` under every kind of principal, and a
real grpc.aio server (a tiny generic service, not the BLOASIS server) whose handlers see the
principal of the calling token."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from bloasis.config import SettingsError, load_settings
from bloasis.serve import auth
from bloasis.serve.validation import RequestError

pytestmark = pytest.mark.security

# Fresh per run: a value found in a message or a log can only have come from this test.
T_READ = "rd-" + secrets.token_urlsafe(24)
T_WRITE = "wr-" + secrets.token_urlsafe(24)
T_ADMIN = "ad-" + secrets.token_urlsafe(24)
T_BOUND_READ = "br-" + secrets.token_urlsafe(24)
T_BOUND_WRITE = "bw-" + secrets.token_urlsafe(24)
T_WRONG = "no-" + secrets.token_urlsafe(24)
TOKENS = (T_READ, T_WRITE, T_ADMIN, T_BOUND_READ, T_BOUND_WRITE, T_WRONG)
TOKENS_TEXT = (
    f"{T_READ} read reader; {T_WRITE} write writer; {T_ADMIN} admin root; "
    f"{T_BOUND_READ} read alice-ro sub=alice; {T_BOUND_WRITE} write app sub=alice,bob"
)
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def _assert_no_token(text: str) -> None:
    for t in TOKENS:
        assert t not in text, f"token {t[:6]}... leaked into: {text[:300]}"


def _refusals(reason: str) -> float:
    value = REGISTRY.get_sample_value("bloasis_auth_refusals_total", {"reason": reason})
    assert value is not None  # every reason's series exists from import on
    return value


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def refusal_log(monkeypatch: pytest.MonkeyPatch) -> auth.RefusalLog:
    """A fresh module refusal log: these tests must not use up the quota (per minute and reason)
    of the process-wide one that tests/test_security.py reads in caplog."""
    fresh = auth.RefusalLog(auth.log, clock=FakeClock())
    monkeypatch.setattr(auth, "REFUSAL_LOG", fresh)
    return fresh


# --- parsing -------------------------------------------------------------------------------------


def test_entries_with_users_and_the_admin_scope() -> None:
    long_id = "u" * 128  # the longest user id the API accepts
    text = (
        "# TOKEN SCOPE [NAME] [sub=USER1,USER2]\n"
        f"{T_READ} read dashboard\n"
        f"{T_BOUND_WRITE}  write  app  sub=alice,bob,alice   # alice twice: once is kept\n"
        "\n"
        f"{T_ADMIN} admin root\n"
        f"{T_BOUND_READ} read sub=user@example.com,ünï-çødé,{long_id}\n"
    )
    entries = auth.parse_tokens(text, "GRPC_TOKENS_FILE")
    assert [(e.scope, e.name, e.users) for e in entries] == [
        ("read", "dashboard", None),
        ("write", "app", frozenset({"alice", "bob"})),
        ("admin", "root", None),
        # No name: the default one, numbered by entry as before.
        ("read", "grpc_tokens_file:6", frozenset({"user@example.com", "ünï-çødé", long_id})),
    ]
    _assert_no_token(repr(entries))
    app = entries[1].principal
    assert app == auth.Principal("app", "write", frozenset({"alice", "bob"}))
    assert app.can_write and not app.is_admin
    assert app.may_access("bob") and not app.may_access("carol") and not app.may_access("")
    root = entries[2].principal
    assert root.can_write and root.is_admin and root.may_access("anyone")
    reader = entries[0].principal
    assert not reader.can_write and reader.may_access("anyone")

    inline = auth.parse_tokens(TOKENS_TEXT, "GRPC_TOKENS")
    assert [(e.name, e.users) for e in inline][-2:] == [
        ("alice-ro", frozenset({"alice"})),
        ("app", frozenset({"alice", "bob"})),
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (f"{T_READ} read app sub=", "sub= user 1 is empty"),
        (f"{T_READ} read app sub=alice,,bob", "sub= user 2 is empty"),
        (f"{T_READ} read sub=alice,", "sub= user 2 is empty"),
        (f"{T_READ} read app sub=alice, bob", "without spaces"),  # a space after a comma
        (f"{T_READ} read app sub=alice,{'x' * 129}", "sub= user 2 is longer than 128"),
        (f"{T_READ} read app sub=al\x07ice", "sub= user 1 has non-printable"),
        (f"{T_READ} read app sub=al\u200bice", "sub= user 1 has non-printable"),
        (f"{T_ADMIN} admin root sub=alice", "an admin token reaches every user"),
        (f"{T_WRITE} write sub=alice app", "sub= must come once"),
        (f"{T_WRITE} write sub=alice sub=bob", "sub= must come once"),
        (f"{T_WRITE} write app users=alice", "the only one is sub="),
        (f"{T_WRITE} write users=alice", "the only one is sub="),
        (f"{T_WRITE} write app SUB=alice", "the only one is sub="),
        (f"{T_WRITE} write bad/name sub=alice", "the name (third field)"),
        (f"{T_WRITE} write app extra", "expected `TOKEN SCOPE [NAME] [sub=USER1,USER2]`"),
        (f"{T_WRITE} write app sub=a extra", "sub= must come once"),
        (f"{T_WRITE} root", "must be read, write or admin"),
        (f"admin {T_WRITE}", "at least 16"),  # swapped: the token is not echoed as a scope
    ],
)
def test_bad_entries_name_the_setting_and_entry_but_no_value(entry: str, expected: str) -> None:
    with pytest.raises(SettingsError) as err:
        auth.parse_tokens(f"{T_READ} read ok; {entry}", "GRPC_TOKENS")
    msg = str(err.value)
    assert msg.startswith("BLOASIS_GRPC_TOKENS: entry 2: ") and expected in msg, msg
    _assert_no_token(msg)
    for user in ("alice", "bob", "x" * 129):  # user fields are not echoed either
        assert user not in msg, msg


def test_a_bad_line_in_the_tokens_file_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# tokens\n{T_READ} read dashboard\n\n{T_ADMIN} admin root sub=alice\n")
    with pytest.raises(SettingsError) as err:
        auth.load_tokens(load_settings(state_dir=tmp_path, grpc_tokens_file=path))
    msg = str(err.value)
    assert msg.startswith("BLOASIS_GRPC_TOKENS_FILE: line 4: an admin token"), msg
    _assert_no_token(msg)
    # Two entries on one line of a file: the entry number and the line.
    path.write_text(f"{T_READ} read a\n{T_WRITE} write b; {T_ADMIN} admin c sub=x\n")
    with pytest.raises(SettingsError, match=r"GRPC_TOKENS_FILE: entry 3 \(line 2\): an admin"):
        auth.load_tokens(load_settings(state_dir=tmp_path, grpc_tokens_file=path))
    # And good entries from both sources, users included.
    path.write_text(f"{T_BOUND_READ} read ro sub=alice\n")
    s = load_settings(
        state_dir=tmp_path, grpc_tokens_file=path, grpc_tokens=f"{T_ADMIN} admin root"
    )
    got = [e.principal for e in auth.load_tokens(s)]
    assert got == [
        auth.Principal("ro", "read", frozenset({"alice"})),
        auth.Principal("root", "admin", None),
    ]


def test_v1_and_v2_write_methods_need_the_write_scope() -> None:
    expected = {
        "/bloasis.market_regime.MarketRegimeService/SaveRegime",
        "/bloasis.strategy.StrategyService/RunAIAnalysis",
        "/bloasis.strategy.StrategyService/UpdatePreferences",
        "/bloasis.strategy.v2.StrategyService/UpdatePreferences",
        "/bloasis.backtesting.BacktestingService/RunBacktest",
        "/bloasis.backtesting.v2.BacktestingService/RunBacktest",
    }
    assert set(auth.WRITE_METHODS) == expected
    # Each names a method the generated v1/v2 stubs really have (a typo would never match).
    from bloasis.pb.v1 import backtesting_pb2 as v1_bt
    from bloasis.pb.v1 import market_regime_pb2 as v1_mr
    from bloasis.pb.v1 import strategy_pb2 as v1_st
    from bloasis.pb.v2 import backtesting_pb2 as v2_bt
    from bloasis.pb.v2 import strategy_pb2 as v2_st

    real = {
        f"/{svc.full_name}/{m.name}"
        for mod in (v1_mr, v1_st, v2_st, v1_bt, v2_bt)
        for svc in mod.DESCRIPTOR.services_by_name.values()
        for m in svc.methods
    }
    assert not auth.WRITE_METHODS - real, auth.WRITE_METHODS - real


# --- the refusal log ----------------------------------------------------------------------------


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records]
    caplog.clear()
    return out


def test_refusals_are_logged_at_a_bounded_rate_and_always_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    logger = logging.getLogger("tests.auth.refusals")
    caplog.set_level(logging.WARNING, logger=logger.name)
    rl = auth.RefusalLog(logger, limit=3, window=60.0, clock=clock)
    user0, scope0 = _refusals("user"), _refusals("scope")

    for i in range(8):
        rl.refused("user", "refused %d", i)
    rl.refused("scope", "scope refusal")  # another reason has a quota of its own
    assert _messages(caplog) == ["refused 0", "refused 1", "refused 2", "scope refusal"]
    assert (_refusals("user") - user0, _refusals("scope") - scope0) == (8, 1)

    clock.now += 59.9  # the window is not over: nothing to sum up yet
    rl.flush()
    assert _messages(caplog) == []
    clock.now += 0.1
    # The next refusal (of any reason) first sums up the windows that ended; the scope window
    # suppressed nothing, so it has no summary.
    rl.refused("user", "refused %d", 8)
    assert _messages(caplog) == [
        "gRPC auth: 5 more refusals suppressed (reason user, beyond 3 in 60 s)",
        "refused 8",
    ]
    for i in range(9, 13):  # 8, 9, 10 logged in this window; 11 and 12 suppressed
        rl.refused("user", "refused %d", i)
    assert _messages(caplog) == ["refused 9", "refused 10"]
    # A burst that stops is summed up by flush() once its window is over...
    clock.now += 60
    rl.flush()
    assert _messages(caplog) == [
        "gRPC auth: 2 more refusals suppressed (reason user, beyond 3 in 60 s)"
    ]
    # ...or at once with force (shutdown), and never twice.
    rl.refused("user", "a")
    for _ in range(5):
        rl.refused("user", "b")
    rl.flush(force=True)
    rl.flush(force=True)
    assert _messages(caplog) == [
        "a",
        "b",
        "b",
        "gRPC auth: 3 more refusals suppressed (reason user, beyond 3 in 60 s)",
    ]
    assert _refusals("user") - user0 == 19


async def test_a_timer_sums_up_a_burst_that_stops(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    logger = logging.getLogger("tests.auth.refusals.timer")
    caplog.set_level(logging.WARNING, logger=logger.name)
    rl = auth.RefusalLog(logger, limit=1, window=60.0, clock=clock)
    scheduled: list[tuple[float, Callable[[], None]]] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "call_later", lambda delay, cb: scheduled.append((delay, cb)))

    rl.refused("no_token", "first")
    clock.now += 20
    rl.refused("no_token", "second")  # the first suppressed one: a flush is due when it ends
    rl.refused("no_token", "third")  # no second timer
    assert _messages(caplog) == ["first"]
    assert len(scheduled) == 1 and scheduled[0][0] == pytest.approx(40, abs=0.1)
    clock.now += 40
    scheduled[0][1]()
    assert _messages(caplog) == [
        "gRPC auth: 2 more refusals suppressed (reason no_token, beyond 1 in 60 s)"
    ]


# --- check_user_access ---------------------------------------------------------------------------


@contextmanager
def acting_as(principal: auth.Principal | None) -> Iterator[None]:
    token = auth.CURRENT_PRINCIPAL.set(principal)
    try:
        yield
    finally:
        auth.CURRENT_PRINCIPAL.reset(token)


def _principals() -> dict[str, auth.Principal]:
    return {e.name: e.principal for e in auth.parse_tokens(TOKENS_TEXT, "GRPC_TOKENS")}


def _denied(user_id: str, *, write: bool = False) -> str:
    with pytest.raises(RequestError) as err:
        auth.check_user_access(user_id, write=write)
    assert err.value.code == PERMISSION_DENIED
    _assert_no_token(err.value.details)
    return err.value.details


def test_check_user_access_by_principal(
    refusal_log: auth.RefusalLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=auth.log.name)
    p = _principals()
    user0, scope0 = _refusals("user"), _refusals("scope")

    # Auth off: no principal, every user, reads and writes.
    assert auth.current_principal() is None
    for user in ("alice", "carol", ""):
        auth.check_user_access(user)
        auth.check_user_access(user, write=True)

    # Tokens without sub= keep today's behaviour: any user (read tokens still cannot write).
    with acting_as(p["writer"]):
        assert auth.current_principal() == p["writer"]
        auth.check_user_access("carol")
        auth.check_user_access("carol", write=True)
    with acting_as(p["reader"]):
        auth.check_user_access("carol")
        details = _denied("carol", write=True)
        assert (
            details == "token 'reader' has scope read: changing user 'carol' needs the write scope"
        )

    # Admin: every user.
    with acting_as(p["root"]):
        for user in ("alice", "carol"):
            auth.check_user_access(user)
            auth.check_user_access(user, write=True)

    # Bound: its users only.
    with acting_as(p["app"]):
        for user in ("alice", "bob"):
            auth.check_user_access(user)
            auth.check_user_access(user, write=True)
        assert _denied("carol") == "token 'app' may not access user 'carol'"
        assert "'carol'" in _denied("carol", write=True)
        assert "'alice2'" in _denied("alice2")  # exact ids, not prefixes
        huge = "z" * 5000
        assert len(_denied(huge)) < 120  # a huge user id is shown truncated
    with acting_as(p["alice-ro"]):
        auth.check_user_access("alice")
        assert "write scope" in _denied("alice", write=True)
        assert "'bob'" in _denied("bob")

    assert auth.current_principal() is None  # every acting_as reset it
    assert _refusals("user") - user0 == 5
    assert _refusals("scope") - scope0 == 2
    logged = caplog.text
    assert "refused (PERMISSION_DENIED): token 'app' may not access user 'carol'" in logged
    _assert_no_token(logged)


async def test_the_principal_follows_tasks_but_not_other_contexts() -> None:
    """What servicer code may rely on: a task it starts inherits the principal (copied when the
    task is created); code in another context (another call) never sees it."""
    app = _principals()["app"]

    async def current() -> auth.Principal | None:
        return auth.current_principal()

    with acting_as(app):
        child = asyncio.create_task(current())
        other = contextvars.Context().run(auth.current_principal)
    assert auth.current_principal() is None
    assert (await child, other) == (app, None)


# --- a real grpc.aio server -----------------------------------------------------------------------


def _describe(principal: auth.Principal | None) -> bytes:
    if principal is None:
        return b"null"
    users = sorted(principal.users) if principal.users is not None else None
    return json.dumps({"name": principal.name, "scope": principal.scope, "users": users}).encode()


class Probe:
    """A tiny service whose handlers report the principal they see."""

    def __init__(self) -> None:
        self.barrier = asyncio.Barrier(2)
        self.calls = 0

    async def who(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        if request == b"together":  # two calls in flight at once: each sees its own principal
            await self.barrier.wait()
        await asyncio.sleep(0)
        return _describe(auth.current_principal())

    def who_sync(self, request: bytes, context: Any) -> bytes:  # runs in the thread pool
        self.calls += 1
        return _describe(auth.current_principal())

    async def watch(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.calls += 1
        for _ in range(3):  # still current after each yield
            yield _describe(auth.current_principal())
            await asyncio.sleep(0)

    async def access(self, request: bytes, context: Any) -> bytes:
        # What a servicer does (the RPC wrapper in bloasis.serve.handlers maps RequestError).
        user, _, mode = request.decode().partition(":")
        try:
            auth.check_user_access(user, write=mode == "w")
        except RequestError as exc:
            await context.abort(exc.code, exc.details)
        return b'"ok"'

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        out = [
            grpc.method_handlers_generic_handler(
                "tests.Principals",
                {
                    "Who": grpc.unary_unary_rpc_method_handler(self.who),
                    "WhoSync": grpc.unary_unary_rpc_method_handler(self.who_sync),
                    "Watch": grpc.unary_stream_rpc_method_handler(self.watch),
                    "Access": grpc.unary_unary_rpc_method_handler(self.access),
                },
            )
        ]
        # Stand-ins under the real write methods' names, so the write-scope check applies.
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for path in auth.WRITE_METHODS:
            service, _, method = path.lstrip("/").partition("/")
            by_service.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
                self.who
            )
        out += [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]
        return out


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _unary(
    ch: grpc.aio.Channel, path: str, request: bytes, token: str | None
) -> tuple[grpc.StatusCode, Any]:
    md = bearer(token) if token else ()
    try:
        return grpc.StatusCode.OK, json.loads(
            await ch.unary_unary(path)(request, metadata=md, timeout=5)
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()


async def test_handlers_see_the_principal_of_the_calling_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tests.auth.server")
    probe = Probe()
    refusals = auth.RefusalLog(logging.getLogger("tests.auth.server"), clock=FakeClock())
    interceptor = auth.BearerAuthInterceptor(
        auth.parse_tokens(TOKENS_TEXT, "GRPC_TOKENS"), refusals=refusals
    )
    pool = ThreadPoolExecutor(2)
    server = grpc.aio.server(interceptors=[interceptor], migration_thread_pool=pool)
    server.add_generic_rpc_handlers(probe.handlers())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    user0 = _refusals("user")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            who = "/tests.Principals/Who"
            code, got = await _unary(ch, who, b"", T_BOUND_WRITE)
            assert (code, got) == (
                grpc.StatusCode.OK,
                {"name": "app", "scope": "write", "users": ["alice", "bob"]},
            )
            code, got = await _unary(ch, "/tests.Principals/WhoSync", b"", T_ADMIN)
            assert got == {"name": "root", "scope": "admin", "users": None}, (code, got)

            # Two calls in flight together, different tokens: each handler sees its own.
            both = await asyncio.gather(
                _unary(ch, who, b"together", T_READ), _unary(ch, who, b"together", T_BOUND_READ)
            )
            assert [g["name"] for _, g in both] == ["reader", "alice-ro"], both

            stream = ch.unary_stream("/tests.Principals/Watch")(
                b"", metadata=bearer(T_BOUND_READ), timeout=5
            )
            seen = [json.loads(m)["name"] async for m in stream]
            assert seen == ["alice-ro"] * 3

            # No or a wrong token: refused before the handler runs.
            calls = probe.calls
            for token in (None, T_WRONG):
                code, details = await _unary(ch, who, b"", token)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (code, details)
            assert probe.calls == calls

            # check_user_access in a handler: the bound token's users only.
            access = "/tests.Principals/Access"
            assert (await _unary(ch, access, b"alice:r", T_BOUND_READ))[1] == "ok"
            code, details = await _unary(ch, access, b"carol:r", T_BOUND_READ)
            assert code == PERMISSION_DENIED
            assert details == "token 'alice-ro' may not access user 'carol'"
            code, details = await _unary(ch, access, b"alice:w", T_BOUND_READ)
            assert (code, "write scope" in details) == (PERMISSION_DENIED, True)
            assert (await _unary(ch, access, b"bob:w", T_BOUND_WRITE))[1] == "ok"
            for token in (T_ADMIN, T_WRITE, T_READ):  # any user
                assert (await _unary(ch, access, b"carol:r", token))[1] == "ok"

            # Every v1 and v2 write method: read tokens refused, write and admin let through.
            for path in sorted(auth.WRITE_METHODS):
                for token in (T_READ, T_BOUND_READ):
                    code, details = await _unary(ch, path, b"", token)
                    assert code == PERMISSION_DENIED and "write scope" in details, (path, code)
                for token, name in ((T_WRITE, "writer"), (T_ADMIN, "root")):
                    code, got = await _unary(ch, path, b"", token)
                    assert (code, got["name"]) == (grpc.StatusCode.OK, name), (path, got)
    finally:
        await server.stop(0)
        pool.shutdown(wait=False)

    assert auth.current_principal() is None  # nothing leaked into the caller
    assert _refusals("user") - user0 == 1
    logged = caplog.text
    assert "/tests.Principals/Access from ipv4:127.0.0.1:" in logged
    assert "refused (PERMISSION_DENIED): token 'alice-ro' may not access user 'carol'" in logged
    assert "/tests.Principals/Who from" in logged and "unknown bearer token" in logged
    _assert_no_token(logged)
