"""gRPC serving against the stack's floor and against cache-aside serving, side by side.

Three servers, each in its own process, answer `GetCurrentRegime` and `GetStrategy` (user "test")
(a fourth, the product as a 2-process group, is measured beside them):
- product: `bloasis serve` on what one pipeline run stored (bench.seed);
- floor: a grpc.aio server returning a pre-built response (the product's own response bytes:
  same size, same content), i.e. the cost of grpc.aio itself;
- redis: cache-aside serving, a grpc.aio server doing one Redis GET per call (redis.asyncio),
  decoding the stored response, stamping `served_at` and returning it.
All three answers are checked equal (as messages, `served_at` aside) before measuring.

Load, from a separate process at 64 in flight, alternating servers round by round: h2load
(Debian's nghttp2-client, C) posting the pre-encoded gRPC frame on one connection when it is
installed, else (or with `--client python`) a multi-process grpc.aio client (pre-encoded
requests, raw response bytes, so the client does no protobuf work). On 2 cores a Python client
is the bottleneck and compresses every ratio towards 1. The figures are the median throughput
over rounds and p50/p99 over every call.

    python -m bench.grpc_serving [--size tiny|quick|full] [--client h2load|python]
Child roles (run by the bench): `floor|redis --address A --payloads DIR [--redis-url U]`,
`load --address A --method regime|strategy --calls N --concurrency C`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.common import bench_stack, emit, entry, say

if TYPE_CHECKING:
    from bloasis.config import Settings

ROOT: Final = Path(__file__).resolve().parents[1]
METHODS: Final = {
    "regime": "/bloasis.market_regime.v2.MarketRegimeService/GetCurrentRegime",
    "strategy": "/bloasis.strategy.v2.StrategyService/GetStrategy",
    # The original contract's method (v1), as its generated clients call it.
    "regime_v1": "/bloasis.market_regime.MarketRegimeService/GetCurrentRegime",
}
REDIS_KEYS: Final = {
    "regime": "bench:grpc:regime",
    "strategy": "bench:grpc:strategy",
    "regime_v1": "bench:grpc:regime_v1",
}
# product_2p: the product as `bloasis serve --processes 2` (SO_REUSEPORT), reported beside the
# entries; the entries compare one process with one process.
SERVERS: Final = ("product", "floor", "redis", "product_2p")
GROUP_CONNECTIONS: Final = 4  # h2load connections to product_2p (the same 64 streams in flight)
CLIENT: Final = "multi-process grpc.aio client (pre-encoded requests, raw response bytes)"
H2LOAD: Final = "h2load (nghttp2-client) with the pre-encoded gRPC frame, 1 connection"


@dataclass(frozen=True)
class Size:
    calls: int  # per (server, method, round)
    rounds: int
    in_flight: int
    processes: int
    warmup: int


SIZES: Final = {
    "tiny": Size(calls=200, rounds=1, in_flight=8, processes=1, warmup=50),
    "quick": Size(calls=4_000, rounds=1, in_flight=64, processes=2, warmup=500),
    "full": Size(calls=20_000, rounds=5, in_flight=64, processes=2, warmup=2_000),
}


def _request_classes() -> dict[str, Any]:
    from bloasis.pb.v1 import market_regime_pb2 as mr1
    from bloasis.pb.v2 import market_regime_pb2 as mr_pb
    from bloasis.pb.v2 import strategy_pb2 as st_pb

    return {
        "regime": mr_pb.GetCurrentRegimeRequest,
        "strategy": st_pb.GetStrategyRequest,
        "regime_v1": mr1.GetCurrentRegimeRequest,
    }


def _requests() -> dict[str, bytes]:
    classes = _request_classes()
    return {
        "regime": classes["regime"]().SerializeToString(),
        "strategy": classes["strategy"](user_id="test").SerializeToString(),
        "regime_v1": classes["regime_v1"]().SerializeToString(),
    }


def _response_classes() -> dict[str, Any]:
    from bloasis.pb.v1 import market_regime_pb2 as mr1
    from bloasis.pb.v2 import market_regime_pb2 as mr_pb
    from bloasis.pb.v2 import strategy_pb2 as st_pb

    return {
        "regime": mr_pb.GetCurrentRegimeResponse,
        "strategy": st_pb.StrategyResponse,
        "regime_v1": mr1.GetCurrentRegimeResponse,
    }


def _normalised(method: str, raw: bytes) -> bytes:
    """The response without its serving metadata (`served_at`, stamped per call, and
    `served_from`, which layer answered), deterministically encoded: the payload compared."""
    msg = _response_classes()[method].FromString(raw)
    for name in ("served_at", "served_from"):
        if any(f.name == name for f in msg.DESCRIPTOR.fields):
            msg.ClearField(name)
    return bytes(msg.SerializeToString(deterministic=True))


# --------------------------------------------------------------------------------------------
# The comparison servers (child processes).
# --------------------------------------------------------------------------------------------


async def _serve_comparison(kind: str, address: str, payloads: Path, redis_url: str) -> None:
    import grpc

    request_classes = _request_classes()
    responses = _response_classes()
    handlers: dict[str, dict[str, Any]] = {}
    client: Any = None
    if kind == "redis":
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(redis_url)
    for method, path in METHODS.items():
        service, name = path[1:].split("/")
        if kind == "floor":
            body = (payloads / f"{method}.bin").read_bytes()

            async def floor(request: Any, context: Any, body: bytes = body) -> bytes:
                return body

            handler = grpc.unary_unary_rpc_method_handler(
                floor,
                request_deserializer=request_classes[method].FromString,
                response_serializer=None,  # already bytes
            )
        else:
            cls, key = responses[method], REDIS_KEYS[method]
            stamped = any(f.name == "served_at" for f in cls.DESCRIPTOR.fields)

            async def cache_aside(
                request: Any, context: Any, cls: Any = cls, key: str = key, stamped: bool = stamped
            ) -> Any:
                raw = await client.get(key)
                if raw is None:
                    await context.abort(grpc.StatusCode.NOT_FOUND, f"{key} not in Redis")
                msg = cls.FromString(raw)
                if stamped:
                    msg.served_at.GetCurrentTime()
                return msg

            handler = grpc.unary_unary_rpc_method_handler(
                cache_aside,
                request_deserializer=request_classes[method].FromString,
                response_serializer=cls.SerializeToString,
            )
        handlers.setdefault(service, {})[name] = handler
    server = grpc.aio.server()
    for service, methods in handlers.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    port = server.add_insecure_port(address)
    await server.start()
    print(f"serving gRPC on 127.0.0.1:{port}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        if client is not None:
            await client.aclose()


# --------------------------------------------------------------------------------------------
# The load generator (child processes).
# --------------------------------------------------------------------------------------------


async def _load(address: str, method: str, calls: int, concurrency: int) -> dict[str, Any]:
    import grpc

    request = _requests()[method]
    errors: dict[str, int] = {}
    latencies: list[int] = []
    async with grpc.aio.insecure_channel(address) as ch:
        call = ch.unary_unary(METHODS[method])  # bytes in, bytes out: no client-side protobuf
        await call(request, timeout=10)  # connected before the clock starts
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t = time.perf_counter_ns()
                try:
                    await call(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                latencies.append((time.perf_counter_ns() - t) // 1000)

        start = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        end = time.time()
    return {"latencies_us": latencies, "errors": errors, "start": start, "end": end}


def run_load(
    address: str, method: str, calls: int, in_flight: int, processes: int
) -> dict[str, Any]:
    """`calls` calls at `in_flight` concurrent, from `processes` separate load processes."""
    from bench.grpc_soak import run_load_processes

    def command(n: int, c: int) -> list[str]:
        return [
            sys.executable, "-m", "bench.grpc_serving", "load", "--address", address,
            "--method", method, "--calls", str(n), "--concurrency", str(c),
        ]  # fmt: skip

    results = run_load_processes(command, calls, in_flight, processes, max(120.0, calls / 100))
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    lat = [x for r in results for x in r["latencies_us"]]
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {"calls": len(lat), "seconds": seconds, "latencies_us": lat, "errors": errors}


def h2load_path() -> str | None:
    return shutil.which("h2load")


def run_h2load(
    address: str, method: str, calls: int, in_flight: int, work: Path, connections: int = 1
) -> dict[str, Any]:
    """`calls` calls at `in_flight` concurrent streams on one connection, from h2load (Debian's
    nghttp2-client: C, so the client costs the 2-core machine little) posting the pre-encoded
    gRPC frame; per-request latencies from its log file. h2load sees HTTP statuses only: a
    gRPC error status (in the trailers) would pass, so every server is also checked once with
    a real gRPC call before and after (`_fetch`)."""
    exe = h2load_path()
    assert exe is not None
    req = _requests()[method]
    data = work / f"{method}.req"
    data.write_bytes(b"\x00" + len(req).to_bytes(4, "big") + req)  # gRPC length-prefixed frame
    log = work / f"h2load-{method}.log"
    cmd = [
        exe, "-n", str(calls), "-c", str(connections), "-t", "1",
        "-m", str(max(1, in_flight // connections)), "-d", str(data),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"--log-file={log}", f"http://{address}{METHODS[method]}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    finished = re.search(r"finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if finished is None or counts is None:
        raise RuntimeError(f"unexpected h2load output:\n{out[-2000:]}")
    lat = [int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip()]
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    ok = int(counts.group(3))
    return {
        "calls": ok,
        "seconds": seconds,
        "latencies_us": lat,
        "errors": {"http": int(counts.group(1)) - ok} if int(counts.group(1)) != ok else {},
    }


# --------------------------------------------------------------------------------------------
# Process management.
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Start a server process, wait for its "serving gRPC on ADDR" line, stop it by PID."""
    from bench.grpc_soak import _stop

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            text = log_path.read_text(errors="replace")
            if "serving gRPC on " in text:
                yield text.split("serving gRPC on ", 1)[1].split()[0]
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[2:4]} did not start:\n{text[-2000:]}")
            time.sleep(0.05)
    finally:
        _stop(proc, grace=10)


def _fetch(address: str) -> dict[str, bytes]:
    """One raw response of each method (what the load generator receives)."""
    import grpc

    reqs = _requests()
    with grpc.insecure_channel(address) as ch:
        return {m: ch.unary_unary(path)(reqs[m], timeout=10) for m, path in METHODS.items()}


def _quantiles(lat_us: list[int]) -> tuple[float, float]:
    if len(lat_us) < 2:
        v = lat_us[0] / 1000 if lat_us else 0.0
        return v, v
    q = statistics.quantiles(lat_us, n=100)
    return q[49] / 1000, q[98] / 1000


def run(
    size: str = "full",
    settings: Settings | None = None,
    *,
    client: str | None = None,
    **override: int,
) -> list[dict[str, Any]]:
    """`client`: "h2load" (the default when installed) or "python" (the multi-process grpc.aio
    client); `override`: Size fields (calls, rounds, in_flight, processes, warmup) to change."""
    import dataclasses

    import redis

    from bench.grpc_soak import _child_env
    from bench.seed import seed_run
    from bloasis.store.db import engine_for

    sz = dataclasses.replace(SIZES[size], **override)
    client = client or ("h2load" if h2load_path() else "python")
    with bench_stack(settings) as s, tempfile.TemporaryDirectory(prefix="bloasis-grpc-") as tmp:
        work = Path(tmp)
        db, redis_url = s.require("database_url"), s.require("redis_url")
        say("grpc: storing one pipeline run...")
        seeded = seed_run(engine_for(db), s)
        product_env = _child_env(
            database_url=db, redis_url=redis_url, model_version=seeded.model_version,
            universe=seeded.universe, state_dir=str(work),
        )  # fmt: skip
        serve = [sys.executable, "-m", "bloasis.cli", "serve", "--address", "127.0.0.1:0"]
        with _process(serve, product_env, work / "product.log") as product_addr:
            reference = _fetch(product_addr)
            for m, raw in reference.items():
                (work / f"{m}.bin").write_bytes(raw)
            rc = redis.Redis.from_url(redis_url)
            try:
                for m, raw in reference.items():
                    rc.set(REDIS_KEYS[m], raw)
            finally:
                rc.close()
            child = [sys.executable, "-m", "bench.grpc_serving"]
            opts = ["--address", "127.0.0.1:0", "--payloads", str(work), "--redis-url", redis_url]
            group_env = product_env | {"BLOASIS_GRPC_PROCESSES": "2", "BLOASIS_METRICS_PORT": "0"}
            with (
                _process([*child, "floor", *opts], _child_env(), work / "floor.log") as floor_addr,
                _process([*child, "redis", *opts], _child_env(), work / "redis.log") as redis_addr,
                _process(serve, group_env, work / "product_2p.log") as group_addr,
            ):
                addresses = {
                    "product": product_addr,
                    "floor": floor_addr,
                    "redis": redis_addr,
                    "product_2p": group_addr,
                }
                answers = {name: _fetch(a) for name, a in addresses.items()}
                equal = {
                    m: len({_normalised(m, answers[n][m]) for n in SERVERS}) == 1 for m in METHODS
                }
                sizes = {m: {n: len(answers[n][m]) for n in SERVERS} for m in METHODS}
                say(f"grpc: equal responses {equal}; bytes {sizes}; load from {client}")

                def load(address: str, m: str, calls: int) -> dict[str, Any]:
                    if client == "h2load":
                        # A process group needs several connections: the kernel spreads
                        # connections, not streams, over the processes sharing the port.
                        conns = GROUP_CONNECTIONS if address == group_addr else 1
                        return run_h2load(address, m, calls, sz.in_flight, work, conns)
                    return run_load(address, m, calls, sz.in_flight, sz.processes)

                for a in addresses.values():
                    for m in METHODS:
                        load(a, m, sz.warmup)
                rates: dict[tuple[str, str], list[float]] = {}
                lats: dict[tuple[str, str], list[int]] = {}
                errors: dict[tuple[str, str], int] = {}
                for rnd in range(sz.rounds):
                    for m in METHODS:
                        for name in SERVERS:
                            r = load(addresses[name], m, sz.calls)
                            rate = r["calls"] / r["seconds"]
                            rates.setdefault((name, m), []).append(rate)
                            lats.setdefault((name, m), []).extend(r["latencies_us"])
                            errors[(name, m)] = errors.get((name, m), 0) + sum(r["errors"].values())
                            say(f"grpc round {rnd + 1}/{sz.rounds} {m:8} {name:7} {rate:8.0f}/s")
                # Still the same answers after the load (h2load does not read gRPC statuses).
                after = {name: _fetch(a) for name, a in addresses.items()}
                for m in METHODS:
                    same = {_normalised(m, after[n][m]) for n in SERVERS}
                    equal[m] = equal[m] and same == {_normalised(m, answers["product"][m])}
    stats: dict[tuple[str, str], dict[str, float]] = {}
    for key, rs in rates.items():
        p50, p99 = _quantiles(lats[key])
        stats[key] = {"throughput": statistics.median(rs), "p50_ms": p50, "p99_ms": p99}

    def figures(m: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SERVERS:
            st = stats[(name, m)]
            out[f"{name}_calls_per_s"] = round(st["throughput"], 1)
            out[f"{name}_p50_ms"] = round(st["p50_ms"], 3)
            out[f"{name}_p99_ms"] = round(st["p99_ms"], 3)
            out[f"{name}_rounds_calls_per_s"] = [round(x, 1) for x in rates[(name, m)]]
        out["errors"] = {n: errors[(n, m)] for n in SERVERS}
        out["responses_equal"] = equal[m]
        out["response_bytes"] = sizes[m]
        return out

    common = {
        "client": H2LOAD if client == "h2load" else CLIENT,
        "in_flight": sz.in_flight,
        "load_processes": 1 if client == "h2load" else sz.processes,
        "calls_per_round": sz.calls,
        "rounds": sz.rounds,
        "size": size,
        "product_2p": "the product as `bloasis serve --processes 2` (SO_REUSEPORT), loaded"
        + (f" over {GROUP_CONNECTIONS} connections" if client == "h2load" else "")
        + "; beside the entries, which compare one process with one process",
    }

    def one(name: str, m: str, base: str, factor: float, label: str) -> dict[str, Any]:
        value, baseline = stats[("product", m)]["throughput"], stats[(base, m)]["throughput"]
        ok = equal[m] and sum(errors[(n, m)] for n in SERVERS) == 0
        return entry(
            name,
            value,
            "calls/s",
            compared_to=label,
            baseline_value=baseline,
            target=f">= {factor:g} x {base}",
            met=ok and value >= factor * baseline,
            higher_is_better=True,
            method=METHODS[m],
            **figures(m),
            **common,
        )

    return [
        one("grpc_regime_vs_floor", "regime", "floor", 0.8, "constant-response grpc.aio server"),
        one(
            "grpc_regime_vs_redis_per_call",
            "regime",
            "redis",
            2.0,
            "cache-aside grpc.aio server, one Redis GET per call",
        ),
        one(
            "grpc_strategy_vs_floor",
            "strategy",
            "floor",
            0.8,
            "constant-response grpc.aio server (GetStrategy user test)",
        ),
        one(
            "grpc_regime_v1_vs_floor",
            "regime_v1",
            "floor",
            0.8,
            "constant-response grpc.aio server (the original v1 GetCurrentRegime)",
        ),
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("floor", "redis", "load"):
        ap = argparse.ArgumentParser(prog="bench.grpc_serving (child)")
        ap.add_argument("role", choices=("floor", "redis", "load"))
        ap.add_argument("--address", required=True)
        ap.add_argument("--payloads", type=Path, default=Path("."))
        ap.add_argument("--redis-url", default="")
        ap.add_argument("--method", choices=tuple(METHODS), default="regime")
        ap.add_argument("--calls", type=int, default=0)
        ap.add_argument("--concurrency", type=int, default=32)
        a = ap.parse_args()
        if a.role == "load":
            out = asyncio.run(_load(a.address, a.method, a.calls, a.concurrency))
            print(json.dumps(out), flush=True)
        else:
            asyncio.run(_serve_comparison(a.role, a.address, a.payloads, a.redis_url))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    ap.add_argument("--client", choices=("h2load", "python"), default=None)
    for f in ("calls", "rounds", "in_flight", "processes", "warmup"):
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=None)
    a = ap.parse_args()
    fields = ("calls", "rounds", "in_flight", "processes", "warmup")
    override = {f: getattr(a, f) for f in fields if getattr(a, f) is not None}
    emit(run(a.size, client=a.client, **override))


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    main()
