"""Serving many distinct users: GetStrategy (v2) and GetPersonalizedStrategy (v1) over N users
(full 100,000; quick 10,000; tiny 500), uniform and Zipf-distributed, beside the hot-key case.

Seeding: N users (`bloasis.users.random_population`, COPY) and one daily run over all of them
by the product's own code (`bloasis.app.daily.run_daily`, plain steps, no relay) on the serving
benches' synthetic universe (bench.seed.UNIVERSE): every user has a stored strategy in
PostgreSQL and in Redis (`user:{id}:strategy@{version}`, the version the run switched the
pointer `user-strategies:version` to).

Three servers, each in its own process, all on loopback:
- product: `bloasis serve` with its defaults (BLOASIS_ANSWER_CACHE=true: the in-process answer
  cache in front of both methods);
- cache_aside: `bloasis serve` with BLOASIS_ANSWER_CACHE=false (every call reads through: one
  Redis GET plus the expansion; v1 also reads the user's preferences);
- floor: a grpc.aio server returning one pre-built response per method (a real user's answer
  of the median size among a sample), i.e. the cost of grpc.aio itself. bench.grpc_serving's
  floor knows its own two methods only, so this one is the same few lines keyed by path.

Requests: pre-encoded request messages written to files (uniform over the N users; bounded
Zipf, s = 1.1, by inverse CDF over ranks 1..N mapped to users by a seeded permutation; hot: the
rank-1 user alone). The load generator is bench.grpc_serving's approach (separate processes,
grpc.aio, bytes in / bytes out: no protobuf work in the client, via
bench.grpc_soak.run_load_processes) cycling through those files. Before measuring, every
server gets a warm-up pass calling every user once per method. Per (method, distribution,
server): median throughput over rounds, p50/p99 over every call, the answer-cache hit ratio
over the measured window (from the server's /metrics: bloasis_answer_cache_lookups_total),
VmRSS and VmHWM (/proc/PID/status) right after it. Targets (flags, not assertions): product
>= 0.7 x floor, >= 1.5 x cache_aside, product peak RSS <= 1 GiB.

    python -m bench.grpc_users [--size tiny|quick|full] [--users N --calls N --rounds N ...]
Child roles (run by the bench): `floor --address A --payloads DIR`,
`load --address A --path P --frames F --offset K --calls N --concurrency C`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.common import bench_stack, emit, entry, say

if TYPE_CHECKING:
    from bloasis.config import Settings

METHODS: Final = {
    "v2": "/bloasis.strategy.v2.StrategyService/GetStrategy",
    "v1": "/bloasis.strategy.StrategyService/GetPersonalizedStrategy",
}
DISTRIBUTIONS: Final = ("uniform", "zipf", "hot")
SERVERS: Final = ("product", "cache_aside", "floor")
ZIPF_S: Final = 1.1
SEED: Final = 20240603
USER_PREFIX: Final = "bu"  # bench users (random_population's ids: bu000000, ...)
SAMPLE_USERS: Final = 25  # users whose answers are compared across servers (and size the floor)
FLOOR_FRACTION: Final = 0.7
CACHE_ASIDE_FACTOR: Final = 1.5
RSS_LIMIT_KB: Final = 1024 * 1024  # 1 GiB
CLIENT: Final = (
    "multi-process grpc.aio client cycling through pre-encoded request files "
    "(raw response bytes: no client-side protobuf)"
)


@dataclass(frozen=True)
class Size:
    users: int
    calls: int  # per (method, distribution, server, round)
    rounds: int
    in_flight: int
    processes: int
    sequence: int  # pre-generated requests per distribution (cycled through)


SIZES: Final = {
    "tiny": Size(users=500, calls=1_000, rounds=1, in_flight=8, processes=1, sequence=5_000),
    "quick": Size(users=10_000, calls=10_000, rounds=2, in_flight=64, processes=2, sequence=50_000),
    "full": Size(
        users=100_000, calls=30_000, rounds=3, in_flight=64, processes=2, sequence=300_000
    ),
}


# --------------------------------------------------------------------------------------------
# Requests.
# --------------------------------------------------------------------------------------------


def encode_request(api: str, user_id: str) -> bytes:
    """The request message of `api`'s method for `user_id` (field 1 user_id in both)."""
    if api == "v2":
        from bloasis.pb.v2 import strategy_pb2 as st2

        return bytes(st2.GetStrategyRequest(user_id=user_id).SerializeToString())
    from bloasis.pb.v1 import strategy_pb2 as st1

    return bytes(st1.StrategyRequest(user_id=user_id).SerializeToString())


def write_frames(path: Path, requests: list[bytes]) -> None:
    """Records of a 2-byte big-endian length and the message."""
    path.write_bytes(b"".join(len(r).to_bytes(2, "big") + r for r in requests))


def read_frames(path: Path) -> list[bytes]:
    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 2], "big")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def user_choices(n_users: int, length: int, seed: int = SEED) -> dict[str, Any]:
    """Indices into the user list: `warm` (each user once), `uniform`, `zipf` (bounded Zipf by
    inverse CDF over ranks 1..n, rank -> user by a seeded permutation), `hot` (rank 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = np.arange(1, n_users + 1, dtype=np.float64) ** -ZIPF_S
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    by_rank = rng.permutation(n_users)
    ranks = np.minimum(np.searchsorted(cdf, rng.random(length), side="right"), n_users - 1)
    return {
        "warm": rng.permutation(n_users),
        "uniform": rng.integers(0, n_users, size=length),
        "zipf": by_rank[ranks],
        "hot": by_rank[:1],
    }


def _sequence_facts(choice: Any) -> dict[str, Any]:
    import numpy as np

    counts = np.bincount(choice)
    return {
        "length": len(choice),
        "distinct_users": int((counts > 0).sum()),
        "top_user_share": round(float(counts.max()) / len(choice), 4),
    }


# --------------------------------------------------------------------------------------------
# Child processes: the floor server and the load generator.
# --------------------------------------------------------------------------------------------


async def _serve_floor(address: str, payloads: Path) -> None:
    """bench.grpc_serving's floor, for these methods: the request parsed, pre-built bytes back."""
    import grpc

    from bloasis.pb.v1 import strategy_pb2 as st1
    from bloasis.pb.v2 import strategy_pb2 as st2

    request_classes: dict[str, Any] = {"v2": st2.GetStrategyRequest, "v1": st1.StrategyRequest}
    handlers: dict[str, dict[str, Any]] = {}
    for api, path in METHODS.items():
        service, name = path[1:].split("/")
        body = (payloads / f"{api}.bin").read_bytes()

        async def floor(request: Any, context: Any, body: bytes = body) -> bytes:
            return body

        handlers.setdefault(service, {})[name] = grpc.unary_unary_rpc_method_handler(
            floor, request_deserializer=request_classes[api].FromString, response_serializer=None
        )
    server = grpc.aio.server()
    for service, methods in handlers.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    port = server.add_insecure_port(address)
    await server.start()
    print(f"serving gRPC on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


async def _load(
    address: str, path: str, frames: Path, offset: int, calls: int, concurrency: int
) -> dict[str, Any]:
    import grpc

    requests = read_frames(frames)
    n = len(requests)
    errors: dict[str, int] = {}
    latencies: list[int] = []
    received = 0
    async with grpc.aio.insecure_channel(address) as ch:
        call = ch.unary_unary(path)  # bytes in, bytes out
        await call(requests[offset % n], timeout=10)  # connected before the clock starts
        i = 0

        async def worker() -> None:
            nonlocal i, received
            while i < calls:
                request = requests[(offset + i) % n]
                i += 1
                t = time.perf_counter_ns()
                try:
                    response = await call(request, timeout=10)
                    received += len(response)  # not `+= len(await ...)`: a lost update
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                latencies.append((time.perf_counter_ns() - t) // 1000)

        start = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        end = time.time()
    return {
        "latencies_us": latencies,
        "errors": errors,
        "start": start,
        "end": end,
        "bytes": received,
    }


def run_load(
    address: str, api: str, frames: Path, calls: int, size: Size, offset: int = 0
) -> dict[str, Any]:
    """`calls` calls at `size.in_flight` from `size.processes` load processes, each starting at
    its own place of the request file (offset + k * length / processes)."""
    from bench.grpc_soak import run_load_processes

    length = len(read_frames(frames))
    k = itertools.count()

    def command(n: int, c: int) -> list[str]:
        start = offset + next(k) * (length // max(1, size.processes))
        return [
            sys.executable, "-m", "bench.grpc_users", "load", "--address", address,
            "--path", METHODS[api], "--frames", str(frames), "--offset", str(start),
            "--calls", str(n), "--concurrency", str(c),
        ]  # fmt: skip

    results = run_load_processes(
        command, calls, size.in_flight, size.processes, max(120.0, calls / 50)
    )
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    lat = [x for r in results for x in r["latencies_us"]]
    errors: dict[str, int] = {}
    for r in results:
        for key, v in r["errors"].items():
            errors[key] = errors.get(key, 0) + v
    ok = len(lat) - sum(errors.values())
    return {
        "calls": len(lat),
        "seconds": seconds,
        "latencies_us": lat,
        "errors": errors,
        "mean_response_bytes": sum(r["bytes"] for r in results) / ok if ok else 0.0,
    }


# --------------------------------------------------------------------------------------------
# The servers: processes, /proc, /metrics.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    pid: int
    metrics_url: str | None  # None: no /metrics (the floor)


@contextlib.contextmanager
def _server(
    name: str, cmd: list[str], env: dict[str, str], log: Path, metrics_url: str | None
) -> Iterator[Server]:
    """bench.grpc_serving's `_process` (started, "serving gRPC on" awaited, stopped by PID
    with a bounded grace), and the PID of the process it started (this process's new child)."""
    import psutil

    from bench.grpc_serving import _process

    me = psutil.Process()
    before = {p.pid for p in me.children()}
    with _process(cmd, env, log) as address:
        new = [p.pid for p in me.children() if p.pid not in before]
        if len(new) != 1:
            raise RuntimeError(f"{name}: expected one new child process, found {new}")
        yield Server(name, address, new[0], metrics_url)


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of `pid`, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cache_counts(url: str | None, path: str) -> dict[str, float] | None:
    """The answer cache's hits and misses for the method at `path` and its hit ratio since
    start, from the server's /metrics (zeros when it reports none: the cache is off there);
    None when there is no /metrics to read (the floor, or the endpoint did not answer)."""
    if url is None:
        return None
    from bloasis.metrics import iter_samples

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError as exc:
        say(f"grpc_users: {url} not read: {exc}")
        return None
    method = path[1:]
    got = {"hit": 0.0, "miss": 0.0}
    for name, labels, value in iter_samples(text):
        if labels.get("method") != method:
            continue
        if name == "bloasis_answer_cache_lookups_total" and labels.get("result") in got:
            got[labels["result"]] = value
        elif name == "bloasis_answer_cache_hit_ratio":
            got["ratio_since_start"] = value
    return got


def _window(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> tuple[int, float | None] | None:
    """(answer cache lookups, hit ratio) between two scrapes; None without both."""
    if before is None or after is None:
        return None
    hits, misses = after["hit"] - before["hit"], after["miss"] - before["miss"]
    lookups = int(hits + misses)
    return lookups, (round(hits / lookups, 4) if lookups else None)


def _fetch(address: str, api: str, user_ids: list[str]) -> list[bytes]:
    import grpc

    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(METHODS[api])
        return [call(encode_request(api, u), timeout=10) for u in user_ids]


def _normalised(api: str, raw: bytes) -> bytes:
    """The answer without what says how it was served (v2 served_from, v1 from_cache)."""
    from bloasis.pb.v1 import strategy_pb2 as st1
    from bloasis.pb.v2 import strategy_pb2 as st2

    msg = (st2.StrategyResponse if api == "v2" else st1.StrategyResponse).FromString(raw)
    for name in ("served_at", "served_from", "from_cache"):
        if any(f.name == name for f in msg.DESCRIPTOR.fields):
            msg.ClearField(name)
    return bytes(msg.SerializeToString(deterministic=True))


# --------------------------------------------------------------------------------------------
# Seeding.
# --------------------------------------------------------------------------------------------


def seed_users(s: Settings, n_users: int, universe: str) -> tuple[list[str], dict[str, Any]]:
    """`n_users` users and one daily run over every user (the product's run, plain steps, no
    relay); returns the user ids and what was stored."""
    import redis

    from bloasis.app.daily import DailyRequest, run_daily
    from bloasis.publish.cache import USERS_VERSION_KEY, read_users_version, user_key
    from bloasis.store.db import engine_for
    from bloasis.users import random_population, seed_population

    population = random_population(n_users, seed=1, prefix=USER_PREFIX)
    user_ids = [p.user_id for p in population]
    t = time.perf_counter()
    created = seed_population(engine_for(s.require("database_url")), population)
    seeded_s = time.perf_counter() - t
    t = time.perf_counter()
    summary = asyncio.run(
        run_daily(
            DailyRequest(trigger="manual", relay=False, universe=universe),
            run_id=uuid.uuid4(),
            settings=s.model_copy(update={"universe": universe}),
            flow="bench",
        )
    )
    run_s = time.perf_counter() - t
    rc = redis.Redis.from_url(s.require("redis_url"))
    try:
        # The keys of the version the run switched to (the one the server reads).
        version = read_users_version(rc)
        if version is None:
            raise RuntimeError(f"the run set no {USERS_VERSION_KEY} in Redis")
        pipe = rc.pipeline(transaction=False)
        for u in user_ids:
            pipe.exists(user_key(u, version))
        in_redis = sum(pipe.execute())
        sample = rc.get(user_key(user_ids[0], version)) or b""
    finally:
        rc.close()
    if in_redis != n_users:
        raise RuntimeError(f"only {in_redis} of {n_users} users have a strategy in Redis")
    facts = {
        "users_created": created,
        "users_in_redis": in_redis,
        "redis_value_bytes_user0": len(sample),
        "seed_users_s": round(seeded_s, 2),
        "daily_run_s": round(run_s, 2),
        "daily_run": {k: v for k, v in summary.items() if isinstance(v, int | float | str)},
    }
    return user_ids, facts


# --------------------------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------------------------


def run(
    size: str = "full", settings: Settings | None = None, **override: int
) -> list[dict[str, Any]]:
    """`override`: Size fields (users, calls, rounds, in_flight, processes, sequence)."""
    from bench.grpc_serving import _quantiles
    from bench.grpc_soak import _child_env
    from bench.seed import UNIVERSE
    from bloasis.stack import _pick_port

    sz = dataclasses.replace(SIZES[size], **override)
    t_start = time.perf_counter()
    with (
        bench_stack(settings) as s,
        tempfile.TemporaryDirectory(prefix="bloasis-grpc-users-") as tmp,
        contextlib.ExitStack() as procs,
    ):
        work = Path(tmp)
        say(f"grpc_users: seeding {sz.users} users and one daily run over them...")
        user_ids, seeded = seed_users(s, sz.users, UNIVERSE)
        say(f"grpc_users: seeded in {seeded['seed_users_s'] + seeded['daily_run_s']:.1f}s")

        choices = user_choices(sz.users, sz.sequence)
        frames: dict[tuple[str, str], Path] = {}
        for api in METHODS:
            for dist, choice in choices.items():
                frames[(api, dist)] = work / f"{api}-{dist}.frames"
                write_frames(
                    frames[(api, dist)], [encode_request(api, user_ids[i]) for i in choice]
                )
        hot_user = user_ids[int(choices["hot"][0])]

        serve = [sys.executable, "-m", "bloasis.cli", "serve", "--address", "127.0.0.1:0"]
        db, redis_url = s.require("database_url"), s.require("redis_url")
        servers: dict[str, Server] = {}
        ports: set[int] = set()
        for name, cache in (("product", "true"), ("cache_aside", "false")):
            port = _pick_port(ports)
            ports.add(port)
            state = work / name
            state.mkdir()
            env = _child_env(
                database_url=db, redis_url=redis_url, model_version=s.model_version,
                universe=UNIVERSE, state_dir=str(state), metrics_port=str(port),
                answer_cache=cache,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}/metrics"
            servers[name] = procs.enter_context(
                _server(name, serve, env, work / f"{name}.log", url)
            )

        # The floor's answers: the median-size answer of a sample of users, per method.
        sample = [user_ids[int(i)] for i in choices["warm"][:SAMPLE_USERS]] + [hot_user]
        answers = {
            name: {api: _fetch(servers[name].address, api, sample) for api in METHODS}
            for name in ("product", "cache_aside")
        }
        for api in METHODS:
            body = sorted(answers["product"][api], key=len)[len(sample) // 2]
            (work / f"{api}.bin").write_bytes(body)
        floor_cmd = [
            sys.executable, "-m", "bench.grpc_users", "floor",
            "--address", "127.0.0.1:0", "--payloads", str(work),
        ]  # fmt: skip
        servers["floor"] = procs.enter_context(
            _server("floor", floor_cmd, _child_env(), work / "floor.log", None)
        )
        floor_bytes = {api: (work / f"{api}.bin").stat().st_size for api in METHODS}
        equal = {
            api: all(
                _normalised(api, a) == _normalised(api, b)
                for a, b in zip(answers["product"][api], answers["cache_aside"][api], strict=True)
            )
            for api in METHODS
        }
        say(f"grpc_users: servers up {[(n, x.pid) for n, x in servers.items()]}; equal {equal}")

        warmup: dict[str, dict[str, Any]] = {}
        rates: dict[tuple[str, str, str], list[float]] = {}
        lats: dict[tuple[str, str, str], list[int]] = {}
        errors: dict[tuple[str, str, str], int] = {}
        hit: dict[tuple[str, str, str], list[float]] = {}
        lookups: dict[tuple[str, str, str], int] = {}
        since_start: dict[tuple[str, str, str], float] = {}
        memory: dict[tuple[str, str, str], dict[str, int]] = {}
        resp_bytes: dict[tuple[str, str, str], float] = {}
        for api in METHODS:
            # Every user once, on every server; the product last, closest to its rounds (its
            # answers are kept BLOASIS_USER_STRATEGY_CACHE_SECONDS at most).
            for name in ("floor", "cache_aside", "product"):
                r = run_load(servers[name].address, api, frames[(api, "warm")], sz.users, sz)
                warmup.setdefault(api, {})[name] = {
                    "calls": r["calls"],
                    "seconds": round(r["seconds"], 2),
                    "errors": sum(r["errors"].values()),
                }
                say(f"grpc_users warm-up {api} {name:11} {r['calls'] / r['seconds']:8.0f}/s")
            for rnd in range(sz.rounds):
                for dist in DISTRIBUTIONS:
                    for name in SERVERS:
                        srv, key = servers[name], (api, dist, name)
                        before = cache_counts(srv.metrics_url, METHODS[api])
                        offset = rnd * sz.calls
                        r = run_load(srv.address, api, frames[(api, dist)], sz.calls, sz, offset)
                        after = cache_counts(srv.metrics_url, METHODS[api])
                        rate = r["calls"] / r["seconds"]
                        rates.setdefault(key, []).append(rate)
                        lats.setdefault(key, []).extend(r["latencies_us"])
                        errors[key] = errors.get(key, 0) + sum(r["errors"].values())
                        window = _window(before, after)
                        ratio = None
                        if window is not None:
                            lookups[key] = lookups.get(key, 0) + window[0]
                            ratio = window[1]
                        if ratio is not None:
                            hit.setdefault(key, []).append(ratio)
                        if after is not None and "ratio_since_start" in after:
                            since_start[key] = after["ratio_since_start"]
                        memory[key] = proc_memory_kb(srv.pid)
                        resp_bytes[key] = r["mean_response_bytes"]
                        say(
                            f"grpc_users round {rnd + 1}/{sz.rounds} {api} {dist:7} {name:11} "
                            f"{rate:8.0f}/s hit {ratio} rss {memory[key]['VmRSS'] // 1024} MB"
                        )
        # The same answers after the load.
        for api in METHODS:
            later = _fetch(servers["product"].address, api, sample)
            equal[api] = equal[api] and [_normalised(api, x) for x in later] == [
                _normalised(api, x) for x in answers["cache_aside"][api]
            ]
        peak_kb = {name: proc_memory_kb(srv.pid) for name, srv in servers.items()}
    elapsed = time.perf_counter() - t_start

    def server_figures(key: tuple[str, str, str]) -> dict[str, Any]:
        p50, p99 = _quantiles(lats[key])
        mem = memory[key]
        ratios = hit.get(key)
        return {
            "calls_per_s": round(statistics.median(rates[key]), 1),
            "rounds_calls_per_s": [round(x, 1) for x in rates[key]],
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "errors": errors[key],
            # Answer cache lookups the server counted while measured (0: its cache is off;
            # None: no /metrics) and their hit ratio (median over rounds).
            "answer_cache_lookups": lookups.get(key),
            "hit_ratio": None if ratios is None else round(statistics.median(ratios), 4),
            "hit_ratio_since_start": since_start.get(key),
            "rss_mb": round(mem["VmRSS"] / 1024, 1),
            "peak_rss_mb": round(mem["VmHWM"] / 1024, 1),
            "mean_response_bytes": round(resp_bytes[key], 1),
        }

    common = {
        "client": CLIENT,
        "in_flight": sz.in_flight,
        "load_processes": sz.processes,
        "calls_per_round": sz.calls,
        "rounds": sz.rounds,
        "size": size,
        "users": sz.users,
        "universe": UNIVERSE,
        "zipf_s": ZIPF_S,
        "seed": SEED,
        "hot_user": hot_user,
        "warmup": "every user called once per method on every server before measuring",
        "seeding": seeded,
        "servers_env": {
            "product": "bloasis serve, BLOASIS_ANSWER_CACHE=true (default)",
            "cache_aside": "bloasis serve, BLOASIS_ANSWER_CACHE=false",
            "floor": "grpc.aio server returning one pre-built answer (median size of a sample)",
        },
        "answer_cache_ttl_s": s.user_strategy_cache_seconds,
        "answer_cache_entries": s.answer_cache_entries,
        "server_peak_rss_mb_end": {n: round(m["VmHWM"] / 1024, 1) for n, m in peak_kb.items()},
        "elapsed_s": round(elapsed, 1),
    }

    def one(api: str, dist: str) -> dict[str, Any]:
        figs = {name: server_figures((api, dist, name)) for name in SERVERS}
        product = figs["product"]["calls_per_s"]
        floor, aside = figs["floor"]["calls_per_s"], figs["cache_aside"]["calls_per_s"]
        vs_aside = product / aside if aside else None
        targets = {
            f"product_ge_{FLOOR_FRACTION:g}x_floor": product >= FLOOR_FRACTION * floor,
            f"product_ge_{CACHE_ASIDE_FACTOR:g}x_cache_aside": (
                product >= CACHE_ASIDE_FACTOR * aside
            ),
            "product_peak_rss_le_1GiB": figs["product"]["peak_rss_mb"] * 1024 <= RSS_LIMIT_KB,
        }
        checks_ok = equal[api] and all(f["errors"] == 0 for f in figs.values())
        prefix = "grpc_users" if api == "v2" else "grpc_users_v1"
        return entry(
            f"{prefix}_{dist}",
            product,
            "calls/s",
            compared_to="floor: grpc.aio server returning a pre-built answer of the median size",
            baseline_value=floor,
            target=(
                f">= {FLOOR_FRACTION:g} x floor, >= {CACHE_ASIDE_FACTOR:g} x cache_aside, "
                "product peak RSS <= 1 GiB"
            ),
            met=checks_ok and all(targets.values()),
            higher_is_better=True,
            method=METHODS[api],
            distribution=dist,
            sequence=_sequence_facts(choices[dist]),
            servers=figs,
            ratio_vs_floor=round(product / floor, 3) if floor else None,
            ratio_vs_cache_aside=None if vs_aside is None else round(vs_aside, 3),
            targets=targets,
            responses_equal=equal[api],
            floor_response_bytes=floor_bytes[api],
            warmup_calls=warmup[api],
            **common,
        )

    return [one(api, dist) for api in METHODS for dist in DISTRIBUTIONS]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("floor", "load"):
        ap = argparse.ArgumentParser(prog="bench.grpc_users (child)")
        ap.add_argument("role", choices=("floor", "load"))
        ap.add_argument("--address", required=True)
        ap.add_argument("--payloads", type=Path, default=Path("."))
        ap.add_argument("--path", default=METHODS["v2"])
        ap.add_argument("--frames", type=Path)
        ap.add_argument("--offset", type=int, default=0)
        ap.add_argument("--calls", type=int, default=0)
        ap.add_argument("--concurrency", type=int, default=32)
        a = ap.parse_args()
        if a.role == "load":
            out = asyncio.run(_load(a.address, a.path, a.frames, a.offset, a.calls, a.concurrency))
            print(json.dumps(out), flush=True)
        else:
            asyncio.run(_serve_floor(a.address, a.payloads))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    fields = [f.name for f in dataclasses.fields(Size)]
    for f in fields:
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=None)
    a = ap.parse_args()
    override = {f: getattr(a, f) for f in fields if getattr(a, f) is not None}
    emit(run(a.size, **override))


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    main()
