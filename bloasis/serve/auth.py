"""gRPC transport security, bearer-token auth and per-user access for the server (README
"Security").

- TLS: `BLOASIS_GRPC_TLS_CERT` + `BLOASIS_GRPC_TLS_KEY` (PEM files, both or neither) make the
  server listen with TLS; the pair is loaded and checked at start.
- Tokens: `BLOASIS_GRPC_TOKENS_FILE` (one `TOKEN SCOPE [NAME] [sub=USER1,USER2]` a line, `#`
  comments) and/or `BLOASIS_GRPC_TOKENS` (the same entries separated by `;`). Any token
  configured turns auth on: every call then needs `authorization: Bearer TOKEN` metadata.
  Health and reflection stay open (load balancers, grpcurl).
- Scopes: `read` allows every read; `write` also the methods in WRITE_METHODS; `admin` implies
  write and read and reaches every user.
- Users: `sub=USER1,USER2` binds a read or write token to those user ids (comma-separated, no
  spaces; an id there cannot contain whitespace, `,`, `;` or `#`, and has at most 128 printable
  characters). Servicer code calls `check_user_access(user_id)` (`write=True` before changing a
  user's data): PERMISSION_DENIED when the calling token is bound and `user_id` is not one of
  its users. A token without `sub=` keeps the behaviour it had before users existed: it may read
  (and, with the write scope, change) any user. An admin token reaches every user; `sub=` on it
  is an error. Market-wide data (regimes, classifications) is not per user: `sub=` does not
  limit it. With auth off there is no principal and every user is allowed.
- While a method's code runs, the interceptor makes the calling token's `Principal` (name,
  scope, users; never the token) current: `current_principal()` / `CURRENT_PRINCIPAL`.
- Tokens are kept as SHA-256 digests and a presented token is compared with every one of them
  by `hmac.compare_digest`: equal-length inputs, no early exit, so timing reveals neither a
  token's prefix nor which entry matched.
- Refused calls are counted (`bloasis_auth_refusals_total{reason}`) and logged as warnings, at
  most REFUSAL_LOG_LIMIT a minute per reason, then one "N more refusals suppressed" line.

Nothing here logs or echoes a token: failures name the method, the peer, the token's name and
the reason only.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import inspect
import logging
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

import grpc
from prometheus_client import Counter

from bloasis.config import ENV_PREFIX, Settings, SettingsError
from bloasis.serve.validation import USER_ID_MAX_LEN, RequestError, show

log = logging.getLogger(__name__)

SCOPE_READ: Final = "read"
SCOPE_WRITE: Final = "write"
SCOPE_ADMIN: Final = "admin"
SCOPES: Final = (SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN)
_WRITING_SCOPES: Final = frozenset({SCOPE_WRITE, SCOPE_ADMIN})
# Callable without a token: probes and schema discovery must work for operators and balancers.
OPEN_SERVICES: Final = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# Methods that change state (v1 and v2): they need a token with the write or admin scope.
WRITE_METHODS: Final = frozenset(
    {
        "/bloasis.market_regime.MarketRegimeService/SaveRegime",
        "/bloasis.strategy.StrategyService/RunAIAnalysis",
        "/bloasis.strategy.StrategyService/UpdatePreferences",
        "/bloasis.strategy.v2.StrategyService/UpdatePreferences",
        # Starts a computation (CPU for seconds to minutes, a stored row).
        "/bloasis.backtesting.BacktestingService/RunBacktest",
        "/bloasis.backtesting.v2.BacktestingService/RunBacktest",
    }
)
TOKEN_MIN_LEN: Final = 16
# RFC 6750 b64token: what may follow "Bearer " in an authorization header.
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
SUB_PREFIX: Final = "sub="
_FORMAT: Final = "`TOKEN SCOPE [NAME] [sub=USER1,USER2]`"
AUTH_HEADER: Final = "authorization"

# Why a call was refused: the label values of REFUSALS. A fixed, small set (never a token, a
# token's name or a user id: those would make the series unbounded).
REASON_NO_TOKEN: Final = "no_token"
REASON_UNKNOWN_TOKEN: Final = "unknown_token"
REASON_SCOPE: Final = "scope"
REASON_USER: Final = "user"
REFUSAL_REASONS: Final = (REASON_NO_TOKEN, REASON_UNKNOWN_TOKEN, REASON_SCOPE, REASON_USER)
REFUSALS: Final = Counter(
    "bloasis_auth_refusals",
    "Calls refused by bearer-token auth or per-user access, by reason",
    ["reason"],
)
for _reason in REFUSAL_REASONS:
    REFUSALS.labels(reason=_reason)  # every series exists, at 0, before the first refusal
REFUSAL_LOG_LIMIT: Final = 10
REFUSAL_LOG_WINDOW: Final = 60.0


# --- principals and token entries --------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who the current call authenticated as: the token's name and rights, never the token."""

    name: str
    scope: str
    users: frozenset[str] | None = None  # None: every user (admin, or a token without sub=)

    @property
    def can_write(self) -> bool:
        return self.scope in _WRITING_SCOPES

    @property
    def is_admin(self) -> bool:
        return self.scope == SCOPE_ADMIN

    def may_access(self, user_id: str) -> bool:
        return self.users is None or user_id in self.users


@dataclass(frozen=True)
class TokenEntry:
    """A configured token: only its digest is kept; `name` identifies it in logs."""

    digest: bytes = field(repr=False)
    scope: str
    name: str
    users: frozenset[str] | None = None  # from sub=: the only users it may access; None: any

    @property
    def principal(self) -> Principal:
        return Principal(self.name, self.scope, self.users)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _entries(text: str, variable: str) -> Iterator[tuple[int, str, str]]:
    """(number, where, entry) for every non-blank entry. Entries are numbered over `;` pieces
    and lines as they always were; `where` names the variable, the entry and, in multi-line
    text (a tokens file), the line."""
    multiline = "\n" in text.strip()
    n = 0
    for line_no, line in enumerate(text.split("\n"), start=1):
        for raw in line.split(";"):
            n += 1
            entry = raw.split("#", 1)[0].strip()
            if not entry:
                continue
            if not multiline:
                where = f"entry {n}"
            elif n == line_no:
                where = f"line {line_no}"
            else:
                where = f"entry {n} (line {line_no})"
            yield n, f"{ENV_PREFIX}{variable}: {where}", entry


def _parse_users(value: str, where: str) -> frozenset[str]:
    """The user ids of a `sub=` field. Errors give a user's position, not its text: a field
    typed in the wrong place could hold a token."""
    users = value.split(",")
    for k, user in enumerate(users, start=1):
        what = f"{where}: sub= user {k}"
        if not user:
            raise SettingsError(f"{what} is empty (write sub=USER1,USER2, without spaces)")
        if len(user) > USER_ID_MAX_LEN:
            raise SettingsError(f"{what} is longer than {USER_ID_MAX_LEN} characters")
        if not user.isprintable():
            raise SettingsError(f"{what} has non-printable characters")
    return frozenset(users)


def parse_tokens(text: str, variable: str) -> list[TokenEntry]:
    """Entries `TOKEN SCOPE [NAME] [sub=USER1,USER2]`, one per line or `;`-separated; `#`
    starts a comment.

    Errors name `variable` and the entry (and line), never the token: a scope typed before the
    token would put the token where the scope is expected, so no bad field is echoed."""
    out: list[TokenEntry] = []
    seen: set[bytes] = set()
    for n, where, entry in _entries(text, variable):
        parts = entry.split()
        if len(parts) < 2:
            raise SettingsError(f"{where}: expected {_FORMAT}, got {len(parts)} field")
        token, scope, rest = parts[0], parts[1], parts[2:]
        if len(token) < TOKEN_MIN_LEN or not _TOKEN_RE.fullmatch(token):
            raise SettingsError(
                f"{where}: a token needs at least {TOKEN_MIN_LEN} characters of "
                "A-Z a-z 0-9 - . _ ~ + / (then optional =)"
            )
        if scope not in SCOPES:
            raise SettingsError(f"{where}: the scope (second field) must be read, write or admin")
        # A name never holds `=`: such a field is an option, and sub= is the only one.
        if any("=" in f and not f.startswith(SUB_PREFIX) for f in rest):
            raise SettingsError(f"{where}: unknown option; the only one is sub=USER1,USER2")
        subs = [i for i, f in enumerate(rest) if f.startswith(SUB_PREFIX)]
        if subs and subs != [len(rest) - 1]:
            raise SettingsError(
                f"{where}: sub= must come once, as the last field of {_FORMAT} (its users "
                "separated by commas, without spaces)"
            )
        users = _parse_users(rest.pop()[len(SUB_PREFIX) :], where) if subs else None
        if len(rest) > 1:
            raise SettingsError(f"{where}: expected {_FORMAT}, got {len(parts)} fields")
        if users is not None and scope == SCOPE_ADMIN:
            raise SettingsError(
                f"{where}: an admin token reaches every user; sub= is for read and write tokens"
            )
        if rest and not _NAME_RE.fullmatch(rest[0]):
            raise SettingsError(f"{where}: the name (third field) must match {_NAME_RE.pattern}")
        name = rest[0] if rest else f"{variable.lower()}:{n}"
        digest = _digest(token)
        if digest in seen:
            raise SettingsError(f"{where}: the same token is listed twice")
        seen.add(digest)
        out.append(TokenEntry(digest, scope, name, users))
    return out


def load_tokens(settings: Settings) -> tuple[TokenEntry, ...]:
    """Every configured token; raises SettingsError (naming the variable) when one is bad, or
    when the tokens file is set but lists none (auth would silently be off)."""
    entries: list[TokenEntry] = []
    if settings.grpc_tokens_file is not None:
        try:
            text = Path(settings.grpc_tokens_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(
                f"{ENV_PREFIX}GRPC_TOKENS_FILE={str(settings.grpc_tokens_file)!r}: cannot read "
                f"it ({type(exc).__name__})"
            ) from None
        from_file = parse_tokens(text, "GRPC_TOKENS_FILE")
        if not from_file:
            raise SettingsError(
                f"{ENV_PREFIX}GRPC_TOKENS_FILE={str(settings.grpc_tokens_file)!r} lists no token"
            )
        entries += from_file
    inline = settings.value_of("grpc_tokens")
    if inline:
        entries += parse_tokens(inline, "GRPC_TOKENS")
    if len({e.digest for e in entries}) != len(entries):
        raise SettingsError(
            f"{ENV_PREFIX}GRPC_TOKENS and {ENV_PREFIX}GRPC_TOKENS_FILE list the same token"
        )
    return tuple(entries)


class TokenTable:
    def __init__(self, entries: Sequence[TokenEntry]) -> None:
        self.entries = tuple(entries)

    def match(self, presented: str) -> TokenEntry | None:
        """The entry of `presented`, compared in constant time against every entry."""
        got = _digest(presented)
        found: TokenEntry | None = None
        for e in self.entries:  # no early exit: every entry costs the same
            if hmac.compare_digest(got, e.digest):
                found = e
        return found


def bearer_token(metadata: Sequence[Any] | None) -> str | None:
    """The token of the first `authorization: Bearer TOKEN` metadata entry, if any."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if key.lower() != AUTH_HEADER:
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, token = str(value).strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


# --- refusals: counted always, logged at a bounded rate ----------------------------------------


@dataclass
class _Window:
    start: float
    seen: int = 0


class RefusalLog:
    """Warnings for refused calls: at most `limit` per `window` seconds and reason, then one
    summary line once the window is over. A client retrying a bad token in a tight loop would
    otherwise fill the log with identical lines; REFUSALS keeps the exact numbers.

    A window's summary is written by the first refusal (of any reason) after it ends, by
    `flush()`, or by a timer on the running event loop, so a burst that stops is summed up too.
    `clock` is injectable for tests; it and the timer must agree only roughly (the timer calls
    `flush`, which checks the clock)."""

    def __init__(
        self,
        logger: logging.Logger = log,
        *,
        limit: int = REFUSAL_LOG_LIMIT,
        window: float = REFUSAL_LOG_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 0 or window <= 0:
            raise ValueError("RefusalLog needs limit >= 0 and window > 0")
        self.logger = logger
        self.limit = limit
        self.window = window
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()  # check_user_access may run in sync handlers' threads

    def refused(self, reason: str, msg: str, *args: object) -> None:
        """Count a refusal under `reason`; log `msg % args` unless this reason's quota for the
        current window is used up."""
        REFUSALS.labels(reason=reason).inc()
        now = self.clock()
        with self._lock:
            summaries = self._close_windows(now)
            w = self._windows.get(reason)
            if w is None:
                w = self._windows[reason] = _Window(now)
            w.seen += 1
            emit = w.seen <= self.limit
            first_suppressed = w.seen == self.limit + 1
            ends_in = w.start + self.window - now
        self._write(summaries)
        if emit:
            self.logger.warning(msg, *args)
        elif first_suppressed:
            self._flush_later(ends_in)

    def flush(self, *, force: bool = False) -> None:
        """Write the summaries of windows that have ended (`force`: of every window, e.g. at
        shutdown)."""
        with self._lock:
            summaries = self._close_windows(None if force else self.clock())
        self._write(summaries)

    def _close_windows(self, now: float | None) -> list[tuple[str, int, float]]:
        """Drop ended windows (all when `now` is None); (reason, suppressed, seconds) for those
        that suppressed lines. Caller holds the lock."""
        out: list[tuple[str, int, float]] = []
        for reason, w in list(self._windows.items()):
            if now is not None and now - w.start < self.window:
                continue
            del self._windows[reason]
            if w.seen > self.limit:
                out.append((reason, w.seen - self.limit, self.window))
        return out

    def _write(self, summaries: Iterable[tuple[str, int, float]]) -> None:
        for reason, suppressed, seconds in summaries:
            self.logger.warning(
                "gRPC auth: %d more refusals suppressed (reason %s, beyond %d in %.0f s)",
                suppressed,
                reason,
                self.limit,
                seconds,
            )

    def _flush_later(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a sync handler's thread: the next refusal or flush() writes it
            return
        loop.call_later(max(delay, 0.0) + 0.01, self.flush)


REFUSAL_LOG: Final = RefusalLog()


# --- the current call's principal --------------------------------------------------------------

# Set by the interceptor around the method's code; None outside a call and when auth is off.
CURRENT_PRINCIPAL: Final[contextvars.ContextVar[Principal | None]] = contextvars.ContextVar(
    "bloasis_auth_principal", default=None
)


@dataclass(frozen=True, slots=True)
class _Call:
    """What the interceptor knows of an accepted call, for the code that runs in it."""

    principal: Principal
    method: str
    refusals: RefusalLog  # the interceptor's: check_user_access logs through it too


# The current call and its servicer context: refusal logs name the method and the peer.
_CALL_SITE: Final[contextvars.ContextVar[tuple[_Call, Any] | None]] = contextvars.ContextVar(
    "bloasis_auth_call_site", default=None
)
_Bound = tuple[contextvars.Token[Principal | None], contextvars.Token[tuple[_Call, Any] | None]]


def current_principal() -> Principal | None:
    """The principal of the call whose code is running; None when auth is off (or outside a
    call, or in health and reflection, which need no token)."""
    return CURRENT_PRINCIPAL.get()


def _peer(context: Any) -> str:
    try:
        return str(context.peer())
    except Exception:  # a test double or a finished call: the peer is only for the log line
        return "?"


def user_allowed(user_id: str) -> bool:
    """Whether the current principal may read `user_id`'s data, without logging or raising:
    for a cached answer, which the full path then refuses with its status and its log line."""
    principal = CURRENT_PRINCIPAL.get()
    return principal is None or principal.may_access(user_id)


def check_user_access(user_id: str, *, write: bool = False) -> None:
    """Raise RequestError(PERMISSION_DENIED) unless the current principal may read (`write`:
    change) `user_id`'s data. Allowed: no principal (auth off), admin tokens, and tokens without
    `sub=` (any user, as before users existed); a `sub=` token only for its users. `write`
    also needs the write or admin scope (read tokens are refused even for their own users).
    The details name the token's name and the user, never the token."""
    principal = CURRENT_PRINCIPAL.get()
    if principal is None:
        return
    if write and not principal.can_write:
        _refuse(
            REASON_SCOPE,
            f"token {principal.name!r} has scope {principal.scope}: changing user "
            f"{show(user_id)} needs the write scope",
        )
    if not principal.may_access(user_id):
        _refuse(REASON_USER, f"token {principal.name!r} may not access user {show(user_id)}")


def _refuse(reason: str, details: str) -> NoReturn:
    site = _CALL_SITE.get()
    if site is None:  # a principal set outside an intercepted call (tests, tools)
        method, peer, refusals = "(no call)", "?", REFUSAL_LOG
    else:
        method, peer, refusals = site[0].method, _peer(site[1]), site[0].refusals
    refusals.refused(
        reason, "gRPC %s from %s refused (PERMISSION_DENIED): %s", method, peer, details
    )
    raise RequestError(grpc.StatusCode.PERMISSION_DENIED, details)


def _bind(call: _Call, context: Any) -> _Bound:
    return CURRENT_PRINCIPAL.set(call.principal), _CALL_SITE.set((call, context))


def _unbind(tokens: _Bound) -> None:
    CURRENT_PRINCIPAL.reset(tokens[0])
    _CALL_SITE.reset(tokens[1])


def _unary_response(fn: Callable[..., Any], call: _Call) -> Callable[[Any, Any], Any]:
    """`fn` (answering one response) with `call.principal` current while it runs. grpc.aio awaits
    coroutine functions and runs plain ones in its thread pool, so the wrapper keeps the kind."""
    if inspect.iscoroutinefunction(fn):

        async def run_async(request: Any, context: Any) -> Any:
            tokens = _bind(call, context)
            try:
                return await fn(request, context)
            finally:
                _unbind(tokens)

        return run_async

    def run_sync(request: Any, context: Any) -> Any:
        tokens = _bind(call, context)
        try:
            return fn(request, context)
        finally:
            _unbind(tokens)

    return run_sync


def _stream_response(fn: Callable[..., Any], call: _Call) -> Callable[[Any, Any], Any]:
    """`fn` (answering a stream) with `call.principal` current while its code runs.

    Generators get it around each step rather than for their whole life: an unfinished
    generator may be closed later by the loop's finalizer in another task (or, for sync ones,
    advanced in different pool threads), where resetting a var set elsewhere would fail."""
    if inspect.isasyncgenfunction(fn):

        async def run_agen(request: Any, context: Any) -> AsyncIterator[Any]:
            inner = fn(request, context)
            try:
                while True:
                    tokens = _bind(call, context)
                    try:
                        item = await inner.__anext__()
                    except StopAsyncIteration:
                        return
                    finally:
                        _unbind(tokens)
                    yield item
            finally:
                tokens = _bind(call, context)
                try:
                    await inner.aclose()  # its finally blocks still see the principal
                finally:
                    _unbind(tokens)

        return run_agen

    if inspect.iscoroutinefunction(fn):  # the context.write() style of streaming
        return _unary_response(fn, call)

    def run_sync(request: Any, context: Any) -> Iterator[Any]:
        tokens = _bind(call, context)
        try:
            responses = fn(request, context)
        finally:
            _unbind(tokens)
        return _bound_iterator(iter(responses), call, context)

    return run_sync


def _bound_iterator(inner: Iterator[Any], call: _Call, context: Any) -> Iterator[Any]:
    try:
        while True:
            tokens = _bind(call, context)
            try:
                item = next(inner)
            except StopIteration:
                return
            finally:
                _unbind(tokens)
            yield item
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            tokens = _bind(call, context)
            try:
                close()
            finally:
                _unbind(tokens)


def _with_principal(handler: Any, call: _Call) -> grpc.RpcMethodHandler:
    """`handler` with `call.principal` current while its code runs (same (de)serializers)."""
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        fn = _unary_response(handler.unary_unary, call)
        return grpc.unary_unary_rpc_method_handler(fn, **kw)
    if handler.stream_unary is not None:
        fn = _unary_response(handler.stream_unary, call)
        return grpc.stream_unary_rpc_method_handler(fn, **kw)
    if handler.unary_stream is not None:
        fn = _stream_response(handler.unary_stream, call)
        return grpc.unary_stream_rpc_method_handler(fn, **kw)
    fn = _stream_response(handler.stream_stream, call)
    return grpc.stream_stream_rpc_method_handler(fn, **kw)


# --- the interceptor ---------------------------------------------------------------------------


def _service_of(method: str) -> str:
    return method.lstrip("/").partition("/")[0]


def _denied(
    handler: Any,
    code: grpc.StatusCode,
    details: str,
    method: str,
    reason: str,
    why: str,
    refusals: RefusalLog,
) -> Any:
    """A handler of the same kind as `handler` that ends the call with `code`.

    It takes the request as raw bytes (no deserializer): a refused request is never parsed."""

    async def deny(context: Any) -> None:
        refusals.refused(
            reason, "gRPC %s from %s refused (%s): %s", method, _peer(context), code.name, why
        )
        await context.abort(code, details)

    async def unary(_request: Any, context: Any) -> Any:
        await deny(context)

    async def streaming(_request: Any, context: Any) -> Any:
        await deny(context)
        yield  # pragma: no cover - abort raises; this makes it an async generator

    ser = {"response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary, **ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming, **ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary, **ser)
    return grpc.stream_stream_rpc_method_handler(streaming, **ser)


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED without a valid bearer token, PERMISSION_DENIED for a write method
    without the write (or admin) scope; health and reflection pass untouched. An accepted call's
    handler runs with the token's Principal current (`current_principal()`)."""

    def __init__(self, tokens: Sequence[TokenEntry], refusals: RefusalLog | None = None) -> None:
        if not tokens:
            raise ValueError("BearerAuthInterceptor needs at least one token")
        self.table = TokenTable(tokens)
        self.refusals = refusals if refusals is not None else REFUSAL_LOG
        # One Principal per entry, built once: calls share it (it is immutable).
        self._principals = {e.digest: e.principal for e in tokens}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or _service_of(method) in OPEN_SERVICES:
            return handler
        metadata = handler_call_details.invocation_metadata
        token = bearer_token(metadata)
        entry = self.table.match(token) if token is not None else None
        if entry is None:
            reason, why = (
                (REASON_NO_TOKEN, "no bearer token")
                if token is None
                else (REASON_UNKNOWN_TOKEN, "unknown bearer token")
            )
            return _denied(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "a valid bearer token is required (metadata `authorization: Bearer <token>`)",
                method,
                reason,
                why,
                self.refusals,
            )
        principal = self._principals[entry.digest]
        if method in WRITE_METHODS and not principal.can_write:
            return _denied(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.rpartition('/')[2]} needs a token with the write scope",
                method,
                REASON_SCOPE,
                f"token {entry.name!r} has scope {entry.scope}",
                self.refusals,
            )
        # Wrapped rather than set here: a var set in intercept_service reaches async handlers
        # only because grpc.aio happens to run both in one task (not sync handlers, which run in
        # its thread pool), and nothing would reset it after the call.
        return _with_principal(handler, _Call(principal, method, self.refusals))


# --- TLS and the server's security settings ----------------------------------------------------


def _read(path: Path, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"{ENV_PREFIX}{variable}={str(path)!r}: cannot read it ({type(exc).__name__})"
        ) from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the cert/key pair, checked to load and match; None: plaintext."""
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        return None
    cert = _read(settings.grpc_tls_cert, "GRPC_TLS_CERT")
    key = _read(settings.grpc_tls_key, "GRPC_TLS_KEY")
    try:
        # gRPC would only fail at the first handshake; OpenSSL tells now (and never prompts for
        # a passphrase: encrypted keys are refused).
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.grpc_tls_cert, settings.grpc_tls_key, password=lambda: b""
        )
    except (ssl.SSLError, ValueError) as exc:
        raise SettingsError(
            f"{ENV_PREFIX}GRPC_TLS_CERT / {ENV_PREFIX}GRPC_TLS_KEY: not a matching, unencrypted "
            f"PEM certificate chain and private key ({type(exc).__name__}: {exc.args[-1]})"
        ) from None
    return grpc.ssl_server_credentials([(key, cert)])


@dataclass(frozen=True)
class ServerSecurity:
    """What the server's settings ask for, loaded and checked once at start (bad files or
    tokens raise SettingsError naming the variable)."""

    credentials: grpc.ServerCredentials | None  # None: plaintext
    tokens: tuple[TokenEntry, ...]  # empty: no auth

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerSecurity:
        return cls(server_credentials(settings), load_tokens(settings))

    @property
    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [BearerAuthInterceptor(self.tokens)] if self.tokens else []

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Listen on `address`, with TLS when configured; returns the port bound (0: failed)."""
        if self.credentials is not None:
            return server.add_secure_port(address, self.credentials)
        host = address.rpartition(":")[0].strip("[]")
        if self.tokens and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("bearer tokens travel in plaintext on %s: configure TLS", address)
        return server.add_insecure_port(address)
