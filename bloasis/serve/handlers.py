"""gRPC method handlers built from service descriptors: one wrapper for every unary call and
stream (status mapping, metrics, malformed requests), the answer cache in front of the methods
that opt in, and one generic method table for all services.

Why not the generated `add_*Servicer_to_server` registration: grpc.aio's server loop keeps one
pending request per *registered* method and waits on all of them for every incoming call; with
the ~25 methods of v1 and v2 registered, the server lost throughput at saturation (~5% with 15
methods, measured against the same server with none). A generic table finds a method with one
dict lookup; health and reflection go through `GenericOnly` for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from bloasis import metrics
from bloasis.serve.answer_cache import Answer, AnswerCache
from bloasis.serve.validation import RequestError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Malformed:
    """A request whose bytes did not parse (e.g. bad UTF-8): answered with INVALID_ARGUMENT."""

    type_name: str
    error: str


def _lenient_deserializer(cls: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    # grpc turns a deserializer exception into a bare INTERNAL; bad bytes are bad input.
    def deserialize(data: bytes) -> Message | _Malformed:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return _Malformed(cls.DESCRIPTOR.full_name, str(exc))

    return deserialize


def _malformed_details(m: _Malformed) -> str:
    return f"request is not a valid {m.type_name}: {m.error}"[:500]


def _status_of(context: Any) -> grpc.StatusCode:
    """The code an abort set on `context` (servicer code may call `context.abort` itself)."""
    try:
        code = context.code()
    except Exception:
        return grpc.StatusCode.UNKNOWN
    if isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:  # some grpc versions report the integer value
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


def _failure(exc: BaseException, context: Any, method: str) -> tuple[grpc.StatusCode, str | None]:
    """What a handler raised -> (the call's status, details to abort with; None: re-raise as
    is). One mapping for unary calls and streams; the success path never comes here."""
    if isinstance(exc, RequestError):
        return exc.code, exc.details
    if isinstance(exc, grpc.aio.AbortError):
        return _status_of(context), None
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED, None  # the client went away
    log.exception("%s failed", method)
    return grpc.StatusCode.INTERNAL, f"{method} failed; see the server log"


def _unary(
    fn: Callable[[Any, Any], Awaitable[Any]], method: str
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handler(request: Any, context: Any) -> Any:
        # Every API call ends here, so it is counted (and timed) here, once.
        t0 = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            if isinstance(request, _Malformed):
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, _malformed_details(request))
            try:
                response = await fn(request, context)
                code = grpc.StatusCode.OK
                return response
            except (Exception, asyncio.CancelledError) as exc:
                code, details = _failure(exc, context, method)
                if details is None:
                    raise
                await context.abort(code, details)
        finally:
            metrics.grpc_call(method, code.name, time.perf_counter() - t0)

    return handler


def _server_stream(
    fn: Callable[[Any, Any], AsyncIterator[Any]], method: str
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def handler(request: Any, context: Any) -> AsyncIterator[Any]:
        # Counted when the stream ends; not timed (a watch lasts as long as its client wants).
        code = grpc.StatusCode.UNKNOWN
        try:
            if isinstance(request, _Malformed):
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, _malformed_details(request))
            try:
                async for item in fn(request, context):
                    yield item
                code = grpc.StatusCode.OK
            except (Exception, asyncio.CancelledError, GeneratorExit) as exc:
                code, details = _failure(exc, context, method)
                if details is None:
                    raise
                await context.abort(code, details)
        finally:
            metrics.grpc_stream(method, code.name)

    return handler


def _serializer(cls: type[Message]) -> Callable[[Message | bytes | Answer], bytes]:
    """A handler may return its response already serialised (hot paths serialise once per
    stored value, not once per call): bytes pass through, an `Answer` is body + tail."""
    to_bytes = cls.SerializeToString

    def serialize(m: Message | bytes | Answer) -> bytes:
        if type(m) is bytes:
            return m
        if type(m) is Answer:
            return m.shared + m.body + m.tail
        return to_bytes(m)

    return serialize


def _cached(
    cache: AnswerCache,
    method: str,
    tag_of: Callable[[Any], str | None],
    full: Callable[[Any, Any], Awaitable[Any]],
    deserialize: Callable[[bytes], Any],
    serialize: Callable[[Any], bytes],
) -> Callable[[bytes, Any], Awaitable[bytes]]:
    """A unary method served through the answer cache (`bloasis.serve.answer_cache`): raw bytes
    in and out; a hit costs one dict lookup and a version check, no parse, no await. A miss
    takes `full` (the `_unary` handler) and keeps its answer when the servicer's
    `answer_tag_<Method>(request)` said it may, under the data version read *before* the call
    (so an answer read while the data changed is never kept under the new version)."""
    record = metrics.unary_ok(method)
    failures = 0

    async def handler(raw: bytes, context: Any) -> bytes:
        nonlocal failures
        t0 = time.perf_counter()
        body = cache.get(method, raw)
        if body is not None:
            record(time.perf_counter() - t0)
            return body
        request = deserialize(raw)
        tag: str | None = None
        version = None
        if not isinstance(request, _Malformed):
            try:
                tag = tag_of(request)
            except RequestError:
                tag = None  # bad input: the full path answers it with its error
            except Exception:
                failures += 1
                if failures == 1:  # a bug, likely on every call: its traceback once
                    log.exception("%s: answer_tag failed; not caching", method)
                tag = None
            if tag is not None:
                version = cache.version(method, tag)
        response = await full(request, context)
        if type(response) is Answer:
            if tag is not None and version is not None:
                cache.put(method, raw, tag, version, response.body, response.shared)
            return response.shared + response.body + response.tail
        return serialize(response)

    return handler


def method_handlers(
    service: ServiceDescriptor, servicer: object, cache: AnswerCache | None = None
) -> dict[str, Any]:
    """`servicer`'s handler (methods named as in the .proto) for every method of `service`, by
    full method path ("/package.Service/Method"). A method whose servicer has
    `answer_tag_<Method>` and `answer_policy_<Method>()` is served through `cache`."""
    handlers: dict[str, Any] = {}
    for m in service.methods:
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        fn = getattr(servicer, m.name)
        deserialize, serialize = _lenient_deserializer(req_cls), _serializer(resp_cls)
        kwargs = {"request_deserializer": deserialize, "response_serializer": serialize}
        full = f"{service.full_name}/{m.name}"
        if m.client_streaming:
            raise NotImplementedError(f"{full}: client streaming is not supported")
        if m.server_streaming:
            handler = grpc.unary_stream_rpc_method_handler(_server_stream(fn, full), **kwargs)
        elif (
            cache is not None
            and (tag_of := getattr(servicer, f"answer_tag_{m.name}", None)) is not None
            and cache.register(full, getattr(servicer, f"answer_policy_{m.name}")())
        ):
            # Raw bytes in and out: a cache hit parses and serialises nothing.
            handler = grpc.unary_unary_rpc_method_handler(
                _cached(cache, full, tag_of, _unary(fn, full), deserialize, serialize)
            )
        else:
            handler = grpc.unary_unary_rpc_method_handler(_unary(fn, full), **kwargs)
        handlers[f"/{full}"] = handler
    return handlers


class _MethodTable(grpc.GenericRpcHandler):
    """Every method of the server's own services, found with one dict lookup."""

    def __init__(self, handlers: dict[str, Any]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._handlers.get(handler_call_details.method)


class GenericOnly:
    """What generated `add_*Servicer_to_server` functions see of the server: their handlers
    are added as generic handlers only, never as "registered" methods.

    grpc.aio's server loop keeps one pending request per registered method and waits on all of
    them (`asyncio.wait`) for every incoming call: with all ~15 methods registered, the server
    lost ~5% of its throughput at saturation (measured against the same server with none)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        pass  # the generic handler added with them serves these methods


def add_services(
    server: grpc.aio.Server,
    services: Sequence[tuple[ServiceDescriptor, object]],
    cache: AnswerCache | None = None,
) -> None:
    """Serve every (descriptor, servicer) pair: one table of all their methods."""
    table: dict[str, Any] = {}
    for descriptor, servicer in services:
        table |= method_handlers(descriptor, servicer, cache)
    server.add_generic_rpc_handlers((_MethodTable(table),))
