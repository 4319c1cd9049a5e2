"""gRPC load and soak: `bloasis serve` in its own process, GetCurrentRegime/GetStrategy calls at
64 in flight from separate load processes, the server's RSS after warm-up and after the soak
(psutil), then WatchRegime with many subscribers (another process) all receiving one regime
change committed with NOTIFY, as the pipeline commits it.

    python -m bench.grpc_soak [--calls 100000] [--in-flight 64] [--processes 1] [--watchers 1000]

Starts its own embedded stack in a temporary directory; prints the bench JSON (bench.common).
`run_soak` is also what tests/test_soak.py runs, smaller, against the session stack. Every
process started here is stopped by its PID before returning; only loopback is used.

Internal entry points (run in the child processes):
    python -m bench.grpc_soak load --address A --calls N --concurrency C
    python -m bench.grpc_soak watch --address A --watchers N --as-of YYYY-MM-DD
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
FIRST_DAY: Final = date(2024, 6, 3)
NEW_DAY: Final = date(2024, 6, 4)  # the regime change the watchers wait for
PROFILES: Final = ("conservative", "moderate", "aggressive")
STREAMS_PER_CHANNEL: Final = 100  # watchers are spread over several HTTP/2 connections


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Seeding: what the pipeline would have stored (a regime, three profile strategies of 15 picks).
# --------------------------------------------------------------------------------------------


def _regime(as_of: date, label: str, mv: str, run_id: uuid.UUID) -> Any:
    from bloasis.regime.types import RegimeResult

    return RegimeResult(
        as_of=as_of,
        regime=label,
        confidence=0.8,
        risk_level="low" if label == "bull" else "medium",
        trigger="manual",
        reasoning=f"{label} on {as_of} (soak)",
        indicators={"vix": 15.0, "vix_is_proxy": False, "sp500_close": 5000.0, "drawdown": -0.02},
        model_version=mv,
        run_id=run_id,
        computed_at=datetime.now(UTC),
    )


def _profile_strategy(profile: str, as_of: date, mv: str) -> tuple[Any, list[dict[str, Any]]]:
    from bloasis.store.strategies import book_entry
    from bloasis.strategy.types import GICS_SECTORS, Pick, ProfitTier, Signal, Strategy

    picks, signals = [], []
    for i in range(1, 16):
        sym, sector = f"S{i:03d}", GICS_SECTORS[i % len(GICS_SECTORS)]
        entry = Decimal(100 + i).quantize(Decimal("0.0001"))
        picks.append(Pick(sym, sector, i, 90.0 - i, {"momentum": 80.0, "volatility": 60.0}, "ok"))
        signals.append(
            Signal(
                symbol=sym,
                sector=sector,
                action="buy",
                weight=Decimal("0.0500"),
                entry_price=entry,
                stop_loss=entry - Decimal("4.0000"),
                profit_tiers=(
                    ProfitTier(entry + Decimal("3.0000"), Decimal("0.33")),
                    ProfitTier(entry + Decimal("6.0000"), Decimal("0.33")),
                ),
                trailing_stop_pct=Decimal("0.0300"),
            )
        )
    s = Strategy(
        strategy_id=f"{profile}:{as_of.isoformat()}:{mv}",
        as_of=as_of,
        risk_profile=profile,
        user_id=None,
        regime="bull",
        risk_level="low",
        picks=tuple(picks),
        signals=tuple(signals),
        cash_weight=Decimal("0.2500"),
        rationale=f"{profile} (soak)",
    )
    return s, [book_entry(p, g) for p, g in zip(picks, signals, strict=True)]


def seed(database_url: str, mv: str) -> None:
    """A regime of FIRST_DAY and the three profile strategies of that day, under `mv`."""
    from bloasis.store import outbox, runs
    from bloasis.store.db import engine_for
    from bloasis.store.regimes import insert_regimes, regime_id_at
    from bloasis.store.strategies import insert_profile_strategy

    run_id = uuid.uuid4()
    with engine_for(database_url).begin() as conn:
        runs.start_run(
            conn, run_id=run_id, flow="bench-grpc-soak", trigger="manual", as_of=FIRST_DAY,
            parameters={}, data_source="bench", data_snapshot_hash="0" * 64, code_version="bench",
            model_version=mv,
        )  # fmt: skip
        insert_regimes(conn, [_regime(FIRST_DAY, "bull", mv, run_id)])
        rid = regime_id_at(conn, mv, FIRST_DAY)
        assert rid is not None
        for p in PROFILES:
            s, book = _profile_strategy(p, FIRST_DAY, mv)
            insert_profile_strategy(
                conn, s, book, model_version=mv, regime_id=rid, run_id=run_id,
                computed_at=datetime.now(UTC),
            )  # fmt: skip
        outbox.notify_results(conn, json.dumps({"model_version": mv}))


def commit_regime_change(database_url: str, mv: str) -> None:
    """A new regime row plus pg_notify in one transaction, as the pipeline's persist step does."""
    from bloasis.store import outbox, runs
    from bloasis.store.db import engine_for
    from bloasis.store.regimes import insert_regimes

    run_id = uuid.uuid4()
    with engine_for(database_url).begin() as conn:
        runs.start_run(
            conn, run_id=run_id, flow="bench-grpc-soak", trigger="manual", as_of=NEW_DAY,
            parameters={}, data_source="bench", data_snapshot_hash="0" * 64, code_version="bench",
            model_version=mv,
        )  # fmt: skip
        insert_regimes(conn, [_regime(NEW_DAY, "bear", mv, run_id)])
        outbox.notify_results(conn, json.dumps({"model_version": mv}))


# --------------------------------------------------------------------------------------------
# Child processes: the server, load clients, watchers.
# --------------------------------------------------------------------------------------------


def _child_env(**bloasis: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["GRPC_ENABLE_FORK_SUPPORT"] = "0"
    return env | {f"BLOASIS_{k.upper()}": v for k, v in bloasis.items()}


@contextlib.contextmanager
def server_process(
    database_url: str, redis_url: str, mv: str, workdir: Path, *, timeout: float = 60
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`bloasis serve` on a free loopback port; yields (process, address); stops it by PID."""
    log_path = workdir / "serve.log"
    env = _child_env(
        database_url=database_url, redis_url=redis_url, model_version=mv, state_dir=str(workdir)
    )
    cmd = [sys.executable, "-m", "bloasis.cli", "serve", "--address", "127.0.0.1:0"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            text = log_path.read_text(errors="replace")
            if "serving gRPC on " in text:
                address = text.split("serving gRPC on ", 1)[1].split()[0]
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gRPC server did not start:\n{text[-2000:]}")
            time.sleep(0.05)
        yield proc, address
    finally:
        _stop(proc, grace=15)


def _stop(proc: subprocess.Popen[Any], grace: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.grpc_soak", *args]


def run_load_processes(
    command: Callable[[int, int], list[str]],
    calls: int,
    in_flight: int,
    processes: int,
    timeout: float,
) -> list[dict[str, Any]]:
    """`calls` calls at `in_flight` concurrent, split over `processes` load processes started
    with `command(calls, concurrency)` at once; each prints one JSON result. Stopped by PID."""
    procs = []
    for i in range(processes):
        n = calls // processes + (1 if i < calls % processes else 0)
        c = in_flight // processes + (1 if i < in_flight % processes else 0)
        cmd = command(n, c)
        procs.append(
            subprocess.Popen(
                cmd, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
            )
        )
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"load process failed: {err.decode()[-2000:]}")
            results.append(json.loads(out))
    finally:
        for p in procs:
            _stop(p, grace=5)
    return results


def run_load(address: str, calls: int, in_flight: int, processes: int) -> dict[str, Any]:
    """`calls` calls at `in_flight` concurrent calls, split over `processes` load processes."""

    def command(n: int, c: int) -> list[str]:
        return _bench_cmd("load", "--address", address, "--calls", str(n), "--concurrency", str(c))

    results = run_load_processes(command, calls, in_flight, processes, max(60.0, calls / 200))
    # The load window as the clients saw it (process start-up excluded).
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies_us"])
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "calls": sum(r["calls"] for r in results),
        "errors": dict(errors),
        "seconds": seconds,
        "throughput": sum(r["calls"] for r in results) / seconds,
        "p50_ms": q[49] / 1000,
        "p99_ms": q[98] / 1000,
        "max_ms": latencies[-1] / 1000 if latencies else 0.0,
    }


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output from pid {proc.pid} in {timeout}s")
    return proc.stdout.readline()


def run_watchers(
    address: str, watchers: int, change: Callable[[], None], *, timeout: float = 60
) -> dict[str, Any]:
    """`watchers` WatchRegime streams in a separate process; once every one has the current
    regime, `change()` commits a new one; returns how many saw it and how fast."""
    proc = subprocess.Popen(
        _bench_cmd("watch", "--address", address, "--watchers", str(watchers),
                   "--as-of", NEW_DAY.isoformat(), "--timeout", str(timeout)),
        env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
    )  # fmt: skip
    try:
        line = _readline(proc, timeout)
        if not line.startswith("READY"):
            raise RuntimeError(f"watchers did not subscribe: {line!r} {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        subscribed = int(line.split()[1])
        t0 = time.perf_counter()
        change()
        result = json.loads(_readline(proc, timeout + 5))
        result["commit_to_last_s"] = time.perf_counter() - t0
        result["subscribed"] = subscribed
        return result
    finally:
        _stop(proc, grace=5)


def run_soak(
    database_url: str,
    redis_url: str,
    *,
    calls: int,
    warmup: int,
    in_flight: int = 64,
    processes: int = 1,
    watchers: int = 1000,
) -> dict[str, Any]:
    """Seed, start the server process, warm up, soak, measure RSS, then the watchers."""
    import psutil

    mv = f"regime-v2-soak-{uuid.uuid4().hex[:10]}"
    seed(database_url, mv)
    with (
        tempfile.TemporaryDirectory(prefix="bloasis-soak-") as tmp,
        server_process(database_url, redis_url, mv, Path(tmp)) as (proc, address),
    ):
        server = psutil.Process(proc.pid)
        _say(f"server pid {proc.pid} on {address}; warm-up: {warmup} calls")
        warm = run_load(address, warmup, in_flight, processes)
        time.sleep(0.5)
        rss_warm = server.memory_info().rss
        _say(f"soak: {calls} calls at {in_flight} in flight from {processes} processes")
        soak = run_load(address, calls, in_flight, processes)
        time.sleep(0.5)
        rss_after = server.memory_info().rss
        _say(f"{watchers} watchers, then a regime change")
        watch = run_watchers(address, watchers, lambda: commit_regime_change(database_url, mv))
        rss_watch = server.memory_info().rss
    return {
        "model_version": mv,
        "warmup": warm,
        "soak": soak,
        "rss_warm_mb": rss_warm / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_growth_pct": 100.0 * (rss_after - rss_warm) / rss_warm,
        "rss_with_watchers_mb": rss_watch / 2**20,
        "watch": watch,
    }


# --------------------------------------------------------------------------------------------
# What the child processes run.
# --------------------------------------------------------------------------------------------


async def _load(address: str, calls: int, concurrency: int) -> dict[str, Any]:
    import grpc

    from bloasis.pb.v2 import market_regime_pb2 as mr_pb
    from bloasis.pb.v2 import market_regime_pb2_grpc as mr_grpc
    from bloasis.pb.v2 import strategy_pb2 as st_pb
    from bloasis.pb.v2 import strategy_pb2_grpc as st_grpc

    async with grpc.aio.insecure_channel(address) as ch:
        regime, strategy = mr_grpc.MarketRegimeServiceStub(ch), st_grpc.StrategyServiceStub(ch)
        current = mr_pb.GetCurrentRegimeRequest()
        by_profile = [st_pb.GetStrategyRequest(risk_profile=p) for p in PROFILES]
        # Half current regime, half a profile's strategy (the three in turn).
        mix: list[Callable[[], Any]] = []
        for req in by_profile:
            mix.append(lambda: regime.GetCurrentRegime(current, timeout=10))
            mix.append(functools.partial(strategy.GetStrategy, req, timeout=10))
        counter = itertools.count()
        latencies: list[int] = []
        errors: Counter[str] = Counter()

        async def worker() -> None:
            while (i := next(counter)) < calls:
                t = time.perf_counter_ns()
                try:
                    await mix[i % len(mix)]()
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                latencies.append((time.perf_counter_ns() - t) // 1000)

        await regime.GetCurrentRegime(current, timeout=10)  # connected before the clock starts
        start = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        end = time.time()
    return {
        "calls": len(latencies),
        "errors": dict(errors),
        "latencies_us": latencies,
        "start": start,
        "end": end,
    }


async def _watch(address: str, watchers: int, as_of: str, timeout: float) -> dict[str, Any]:
    import grpc

    from bloasis.pb.v2 import market_regime_pb2 as mr_pb
    from bloasis.pb.v2 import market_regime_pb2_grpc as mr_grpc

    n_channels = max(1, -(-watchers // STREAMS_PER_CHANNEL))
    # A local subchannel pool each: separate connections, as separate clients would have.
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(n_channels)
    ]
    stubs = [mr_grpc.MarketRegimeServiceStub(ch) for ch in channels]
    calls = [stubs[i % n_channels].WatchRegime(mr_pb.WatchRegimeRequest()) for i in range(watchers)]
    errors: Counter[str] = Counter()
    subscribed = asyncio.Event()
    first_seen = 0
    seen_at: list[float] = []

    async def one(call: Any) -> bool:
        nonlocal first_seen
        try:
            first = await call.read()  # the current regime: subscribed from here on
            first_seen += 1
            if first_seen == watchers:
                subscribed.set()
            if first is grpc.aio.EOF:
                return False
            while True:
                upd = await call.read()
                if upd is grpc.aio.EOF:
                    return False
                if upd.regime.as_of == as_of:
                    seen_at.append(time.perf_counter())
                    return True
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
            return False

    tasks = [asyncio.ensure_future(one(c)) for c in calls]
    try:
        await asyncio.wait_for(subscribed.wait(), timeout)
        print(f"READY {first_seen}", flush=True)
        t0 = time.perf_counter()
        done, _ = await asyncio.wait(tasks, timeout=timeout)
        received = sum(1 for t in done if t.result())
        return {
            "watchers": watchers,
            "received": received,
            "errors": dict(errors),
            "last_received_s": (max(seen_at) - t0) if seen_at else None,
        }
    finally:
        for c in calls:
            c.cancel()
        for ch in channels:
            await ch.close()


def _child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench.grpc_soak (child)")
    ap.add_argument("role", choices=("load", "watch"))
    ap.add_argument("--address", required=True)
    ap.add_argument("--calls", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--watchers", type=int, default=0)
    ap.add_argument("--as-of", default="")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args(argv)
    if a.role == "load":
        out = asyncio.run(_load(a.address, a.calls, a.concurrency))
    else:
        out = asyncio.run(_watch(a.address, a.watchers, a.as_of, a.timeout))
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("load", "watch"):
        _child_main(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--warmup", type=int, default=5_000)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--processes", type=int, default=1, help="load processes sharing in-flight")
    ap.add_argument("--watchers", type=int, default=1000)
    args = ap.parse_args()

    from bench.common import bench_stack, emit, entry

    with bench_stack() as settings:
        r = run_soak(
            settings.require("database_url"),
            settings.require("redis_url"),
            calls=args.calls,
            warmup=args.warmup,
            in_flight=args.in_flight,
            processes=args.processes,
            watchers=args.watchers,
        )
    soak, watch = r["soak"], r["watch"]
    common = {"calls": soak["calls"], "in_flight": args.in_flight, "processes": args.processes}
    n_errors = sum(soak["errors"].values())
    emit(
        [
            entry(
                "grpc_soak_errors",
                n_errors,
                "calls",
                target="0",
                met=n_errors == 0 and soak["calls"] == args.calls,
                errors=soak["errors"],
                **common,
            ),
            entry(
                "grpc_soak_throughput",
                soak["throughput"],
                "calls/s",
                seconds=round(soak["seconds"], 2),
                **common,
            ),
            entry("grpc_soak_p50", soak["p50_ms"], "ms", **common),
            entry("grpc_soak_p99", soak["p99_ms"], "ms", max_ms=round(soak["max_ms"], 2), **common),
            entry(
                "grpc_soak_rss_after",
                r["rss_after_mb"],
                "MiB",
                compared_to="server RSS after warm-up",
                baseline_value=r["rss_warm_mb"],
                target="within 10% of after warm-up",
                met=r["rss_growth_pct"] <= 10.0,
                growth_pct=round(r["rss_growth_pct"], 2),
                warmup_calls=r["warmup"]["calls"],
                **common,
            ),
            entry(
                "grpc_watchers_received",
                watch["received"],
                "watchers",
                target=str(args.watchers),
                met=watch["received"] == args.watchers,
                watchers=args.watchers,
                errors=watch["errors"],
                last_received_s=watch["last_received_s"],
                rss_with_watchers_mb=round(r["rss_with_watchers_mb"], 1),
            ),
        ]
    )


if __name__ == "__main__":
    main()
