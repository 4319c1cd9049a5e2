"""Servers and channels started by a test, all stopped by the `harness` fixture (conftest)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import grpc

from bloasis.config import Settings
from bloasis.pb.v2 import market_regime_pb2_grpc as mr_grpc
from bloasis.serve.server import RegimeServer, start_server


@dataclass
class Harness:
    """Starts servers and channels; the fixture stops/closes all of them."""

    servers: list[RegimeServer] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def start(self, s: Settings, **opts: Any) -> tuple[RegimeServer, Any]:
        opts = {"grace": 0.5, "health_interval": 0.2, **opts}
        srv = await start_server(s, "127.0.0.1:0", **opts)
        self.servers.append(srv)
        return srv, mr_grpc.MarketRegimeServiceStub(self.channel(srv))

    def channel(self, srv: RegimeServer) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(srv.address)
        self.channels.append(ch)
        return ch

    async def close(self) -> None:
        # Bounded: grpcio's aio channel close can, rarely, wait forever (seen at teardown).
        for ch in self.channels:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ch.close(), 5)
        for srv in self.servers:
            await asyncio.wait_for(srv.stop(0), 30)
