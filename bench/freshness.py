"""Freshness: from the pipeline's commit of a new regime to `GetCurrentRegime` returning it and a
`WatchRegime` subscriber receiving it, over N runs (target p99 <= 1 s over 20).

`bloasis serve` runs in its own process on what one pipeline run stored (bench.seed); an
observer process holds one WatchRegime stream and polls GetCurrentRegime every 5 ms. Each run
commits the regime of the next session the way the pipeline does (`persist_regime`: rows,
outbox events and NOTIFY in one transaction, then `publish_run`'s Redis keys); the latency of
each path is the observer's first sight of that as-of minus the end of the commit (both
CLOCK_MONOTONIC, shared by the processes of one machine). The server learns of the commit by
PostgreSQL LISTEN/NOTIFY (bloasis.serve.snapshot), its poll (5 s) being the fallback; the
entry reports the poll interval so a p99 near it would show notifications were missed.

    python -m bench.freshness [--size tiny|quick|full]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.common import bench_stack, emit, entry, say

if TYPE_CHECKING:
    from bloasis.config import Settings

ROOT: Final = Path(__file__).resolve().parents[1]
SIZES: Final = {"tiny": 3, "quick": 8, "full": 20}
POLL_S: Final = 0.005
TARGET_S: Final = 1.0


async def _observe(address: str) -> None:
    """Print `<path> <as_of> <monotonic>` the first time each path sees an as-of."""
    import grpc

    from bloasis.pb.v2 import market_regime_pb2 as mr_pb
    from bloasis.pb.v2 import market_regime_pb2_grpc as mr_grpc

    seen: set[tuple[str, str]] = set()

    def report(path: str, as_of: str) -> None:
        if (path, as_of) not in seen:
            seen.add((path, as_of))
            print(f"{path} {as_of} {time.monotonic():.6f}", flush=True)

    async with grpc.aio.insecure_channel(address) as ch:
        stub = mr_grpc.MarketRegimeServiceStub(ch)

        async def watch() -> None:
            async for upd in stub.WatchRegime(mr_pb.WatchRegimeRequest()):
                report("watch", upd.regime.as_of)

        async def poll() -> None:
            req = mr_pb.GetCurrentRegimeRequest()
            while True:
                resp = await stub.GetCurrentRegime(req, timeout=10)
                report("get", resp.regime.as_of)
                await asyncio.sleep(POLL_S)

        await asyncio.gather(watch(), poll())


def _q(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def run(size: str = "full", settings: Settings | None = None) -> list[dict[str, Any]]:
    from bench.grpc_serving import _process
    from bench.grpc_soak import _child_env, _stop
    from bench.seed import commit_regime, load, seed_run
    from bloasis.store.db import engine_for

    n = SIZES[size]
    with bench_stack(settings) as s, tempfile.TemporaryDirectory(prefix="bloasis-fresh-") as tmp:
        work = Path(tmp)
        db = s.require("database_url")
        engine = engine_for(db)
        # Sessions from n before the last one: each run commits a newer as-of than current.
        md, _ = load(s)
        sessions = [ts.date() for ts in md.index[-(n + 1) :]]
        say(f"freshness: storing a run for {sessions[0]}...")
        seeded = seed_run(engine, s, as_of=sessions[0])
        env = _child_env(
            database_url=db, redis_url=s.require("redis_url"),
            model_version=seeded.model_version, universe=seeded.universe, state_dir=str(work),
        )  # fmt: skip
        serve = [sys.executable, "-m", "bloasis.cli", "serve", "--address", "127.0.0.1:0"]
        get_s: list[float] = []
        watch_s: list[float] = []
        with _process(serve, env, work / "serve.log") as address:
            obs = subprocess.Popen(
                [sys.executable, "-m", "bench.freshness", "observe", "--address", address],
                env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                text=True,
            )  # fmt: skip
            assert obs.stdout is not None
            try:
                sightings: dict[tuple[str, str], float] = {}
                # A reader thread: select() on a buffered pipe misses lines already buffered.
                lines: queue.Queue[str] = queue.Queue()
                out = obs.stdout

                def pump() -> None:
                    for line in out:
                        lines.put(line)

                threading.Thread(target=pump, daemon=True).start()

                def wait_for(keys: set[tuple[str, str]], timeout: float) -> None:
                    deadline = time.monotonic() + timeout
                    while not keys <= sightings.keys():
                        left = deadline - time.monotonic()
                        if left <= 0 or obs.poll() is not None:
                            raise TimeoutError(f"observer never saw {keys - sightings.keys()}")
                        with contextlib.suppress(queue.Empty):
                            path, as_of, t = lines.get(timeout=min(left, 0.5)).split()
                            sightings[(path, as_of)] = float(t)

                first = sessions[0].isoformat()
                wait_for({("get", first), ("watch", first)}, 60)
                for d in sessions[1:]:
                    t_commit = commit_regime(engine, s, seeded.md, seeded.model, d)
                    day = d.isoformat()
                    wait_for({("get", day), ("watch", day)}, 30)
                    get_s.append(sightings[("get", day)] - t_commit)
                    watch_s.append(sightings[("watch", day)] - t_commit)
            finally:
                _stop(obs, grace=5)
    p99_get, p99_watch = _q(get_s, 99), _q(watch_s, 99)
    worst = max(p99_get, p99_watch)
    return [
        entry(
            "freshness_p99",
            worst,
            "s",
            compared_to=f"target {TARGET_S:g} s",
            baseline_value=TARGET_S,
            target=f"p99 <= {TARGET_S:g} s over {SIZES['full']} runs",
            met=worst <= TARGET_S and len(get_s) == n,
            runs=len(get_s),
            get_p50_s=round(_q(get_s, 50), 4),
            get_p99_s=round(p99_get, 4),
            watch_p50_s=round(_q(watch_s, 50), 4),
            watch_p99_s=round(p99_watch, 4),
            get_max_s=round(max(get_s), 4),
            watch_max_s=round(max(watch_s), 4),
            mechanism="PostgreSQL LISTEN/NOTIFY (pg_notify in the commit), 5 s poll as fallback",
            poll_interval_s=5.0,
            observer_poll_s=POLL_S,
            size=size,
        )
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "observe":
        ap = argparse.ArgumentParser(prog="bench.freshness observe")
        ap.add_argument("role")
        ap.add_argument("--address", required=True)
        asyncio.run(_observe(ap.parse_args().address))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    emit(run(ap.parse_args().size))


if __name__ == "__main__":
    main()
