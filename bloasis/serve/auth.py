"""gRPC transport security and bearer-token auth for the server (README "Security").

- TLS: `BLOASIS_GRPC_TLS_CERT` + `BLOASIS_GRPC_TLS_KEY` (PEM files, both or neither) make the
  server listen with TLS; the pair is loaded and checked at start.
- Tokens: `BLOASIS_GRPC_TOKENS_FILE` (one `TOKEN SCOPE [NAME]` a line, `#` comments) and/or
  `BLOASIS_GRPC_TOKENS` (the same entries separated by `;`). Any token configured turns auth on:
  every call then needs `authorization: Bearer TOKEN` metadata. Scope `read` allows every read,
  `write` also `UpdatePreferences`. Health and reflection stay open (load balancers, grpcurl).
- Tokens are kept as SHA-256 digests and a presented token is compared with every one of them
  by `hmac.compare_digest`: equal-length inputs, no early exit, so timing reveals neither a
  token's prefix nor which entry matched.

Nothing here logs or echoes a token: failures name the method, the peer and the reason only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc

from bloasis.config import ENV_PREFIX, Settings, SettingsError

log = logging.getLogger(__name__)

SCOPE_READ: Final = "read"
SCOPE_WRITE: Final = "write"
SCOPES: Final = (SCOPE_READ, SCOPE_WRITE)
# Callable without a token: probes and schema discovery must work for operators and balancers.
OPEN_SERVICES: Final = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# Methods that change state: they need a token with the write scope.
WRITE_METHODS: Final = frozenset({"/bloasis.strategy.v2.StrategyService/UpdatePreferences"})
TOKEN_MIN_LEN: Final = 16
# RFC 6750 b64token: what may follow "Bearer " in an authorization header.
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
AUTH_HEADER: Final = "authorization"


@dataclass(frozen=True)
class TokenEntry:
    """A configured token: only its digest is kept; `name` identifies it in logs."""

    digest: bytes = field(repr=False)
    scope: str
    name: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, variable: str) -> list[TokenEntry]:
    """Entries `TOKEN SCOPE [NAME]`, one per line or `;`-separated; `#` starts a comment.

    Errors name `variable` and the entry number, never the token (a scope typed before the
    token would put the token where the scope is expected, so the bad scope is not echoed
    either)."""
    out: list[TokenEntry] = []
    seen: set[bytes] = set()
    for n, raw in enumerate(re.split(r"[\n;]", text), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        parts = entry.split()
        where = f"{ENV_PREFIX}{variable}: entry {n}"
        if len(parts) not in (2, 3):
            raise SettingsError(f"{where}: expected `TOKEN SCOPE [NAME]`, got {len(parts)} fields")
        token, scope = parts[0], parts[1]
        name = parts[2] if len(parts) == 3 else f"{variable.lower()}:{n}"
        if len(token) < TOKEN_MIN_LEN or not _TOKEN_RE.fullmatch(token):
            raise SettingsError(
                f"{where}: a token needs at least {TOKEN_MIN_LEN} characters of "
                "A-Z a-z 0-9 - . _ ~ + / (then optional =)"
            )
        if scope not in SCOPES:
            raise SettingsError(f"{where}: the scope (second field) must be read or write")
        if len(parts) == 3 and not _NAME_RE.fullmatch(name):
            raise SettingsError(f"{where}: the name (third field) must match {_NAME_RE.pattern}")
        digest = _digest(token)
        if digest in seen:
            raise SettingsError(f"{where}: the same token is listed twice")
        seen.add(digest)
        out.append(TokenEntry(digest, scope, name))
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


def _service_of(method: str) -> str:
    return method.lstrip("/").partition("/")[0]


def _denied(handler: Any, code: grpc.StatusCode, details: str, method: str, why: str) -> Any:
    """A handler of the same kind as `handler` that ends the call with `code`.

    It takes the request as raw bytes (no deserializer): a refused request is never parsed."""

    async def deny(context: Any) -> None:
        log.warning("gRPC %s from %s refused (%s): %s", method, context.peer(), code.name, why)
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
    without the write scope; health and reflection pass untouched."""

    def __init__(self, tokens: Sequence[TokenEntry]) -> None:
        if not tokens:
            raise ValueError("BearerAuthInterceptor needs at least one token")
        self.table = TokenTable(tokens)

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
            why = "no bearer token" if token is None else "unknown bearer token"
            return _denied(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "a valid bearer token is required (metadata `authorization: Bearer <token>`)",
                method,
                why,
            )
        if method in WRITE_METHODS and entry.scope != SCOPE_WRITE:
            return _denied(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.rpartition('/')[2]} needs a token with the write scope",
                method,
                f"token {entry.name!r} has scope {entry.scope}",
            )
        return handler


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
