"""Every RPC the server offers, callable generically over a grpc.aio channel with raw request
bytes (fuzzing, auth checks): the table is built from the service descriptors, so a new RPC is
covered without touching the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message

from bloasis.serve import backtesting_v1, classification_v1, market_regime_v1, strategy_v1
from bloasis.serve.backtesting_v2 import SERVICE as BACKTESTING_SERVICE
from bloasis.serve.classification_v2 import SERVICE as CLASSIFICATION_SERVICE
from bloasis.serve.server import MARKET_REGIME_SERVICE
from bloasis.serve.strategy_v2 import SERVICE as STRATEGY_SERVICE

V2_SERVICES = (MARKET_REGIME_SERVICE, CLASSIFICATION_SERVICE, STRATEGY_SERVICE, BACKTESTING_SERVICE)
V1_SERVICES = (
    market_regime_v1.SERVICE,
    classification_v1.SERVICE,
    strategy_v1.SERVICE,
    backtesting_v1.SERVICE,
)

OK = grpc.StatusCode.OK


@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    request: type[Message]
    response: type[Message]
    streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


ALL_RPCS: tuple[Rpc, ...] = tuple(
    Rpc(
        svc.full_name,
        m.name,
        message_factory.GetMessageClass(m.input_type),
        message_factory.GetMessageClass(m.output_type),
        m.server_streaming,
    )
    for svc in (*V2_SERVICES, *V1_SERVICES)
    for m in svc.methods
)
# By method name: v2's (v1 has methods of the same names; `V1_RPCS` has those).
RPCS: dict[str, Rpc] = {r.name: r for r in ALL_RPCS if ".v2." in r.service}
V1_RPCS: dict[str, Rpc] = {r.name: r for r in ALL_RPCS if ".v2." not in r.service}


def _identity(b: bytes) -> bytes:
    return b


async def call(
    channel: grpc.aio.Channel,
    rpc: Rpc,
    request: Message | bytes,
    *,
    timeout: float = 10.0,
    metadata: Sequence[tuple[str, str]] = (),
    stream_wait: float = 2.0,
) -> tuple[grpc.StatusCode, str]:
    """(status, details) of one call. A stream counts as OK once it delivered a message, or when
    it is still open without error after `stream_wait` seconds (WatchRegime waiting for a
    change); it is cancelled either way."""
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    md = tuple(metadata) or None
    if not rpc.streaming:
        unary = channel.unary_unary(
            rpc.path, request_serializer=_identity, response_deserializer=rpc.response.FromString
        )
        try:
            await unary(payload, timeout=timeout, metadata=md)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return OK, ""
    stream = channel.unary_stream(
        rpc.path, request_serializer=_identity, response_deserializer=rpc.response.FromString
    )(payload, timeout=timeout, metadata=md)
    try:
        await asyncio.wait_for(stream.read(), stream_wait)
    except TimeoutError:
        pass  # open and quiet: fine
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    finally:
        stream.cancel()
    return OK, ""
