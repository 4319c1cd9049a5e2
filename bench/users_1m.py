"""A million users end to end on a real Dask cluster, 1 worker against 2 (issue 16).

Each run is the `daily-pipeline` flow itself, in a process of its own (the driver) against a
Prefect server, with `BLOASIS_TASK_RUNNER=dask` and `BLOASIS_DASK_ADDRESS` naming a `dask
scheduler` with its `dask worker` processes (`bloasis.dask_cluster`), on the embedded dataset's
newest session: regime, sectors, profile strategies, then one task per chunk of 10,000 users
(loaded, derived, stored with their events, their Redis keys written under the run's version),
the switch (one small MULTI/EXEC), and the relay of every event to the broker.

Measured: the flow's wall time; the peak RSS of every process (the driver, the scheduler, each
worker with its nanny, PostgreSQL's largest process and all of it, Redis, the broker), sampled
every 0.2 s; Redis's own slowlog (every command over 1 ms) and latency monitor during the run,
for the longest single command. Checked: every user's strategy stored once, every event
published, the pointer naming the run's version and a sample of users' keys under it.

Per-symbol user events (`BLOASIS_USER_SYMBOL_EVENTS`) are off here: about 8 per user, they
would be 8 million outbox rows; `symbol_events` measures their cost on 100,000 users (the same
users with them off, then on) and extrapolates it.

    python -m bench users_1m            # full: 1,000,000 users (quick: 100,000; tiny: 3,000)
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from bench.common import ROOT, PeakRss, child_env, entry, say, size_main

SIZES: Final = {"full": 1_000_000, "quick": 100_000, "tiny": 3_000}
CHUNKS: Final = {"full": 10_000, "quick": 10_000, "tiny": 500}
SEED_BATCH: Final = 100_000
TARGET_S: Final = 300.0
RSS_LIMIT_MB: Final = 2048.0
SLOW_US: Final = 1000  # Redis slowlog threshold: every command over 1 ms
SYMBOL_USERS: Final = 100_000


def _seed(engine: Any, n: int) -> float:
    from bloasis.users import random_population, seed_population

    t = time.perf_counter()
    for k, start in enumerate(range(0, n, SEED_BATCH)):
        size = min(SEED_BATCH, n - start)
        seed_population(engine, random_population(size, seed=k, prefix=f"u{k:02d}-"))
    return time.perf_counter() - t


def _redis_watch_reset(r: Any) -> None:
    r.config_set("slowlog-log-slower-than", SLOW_US)
    r.config_set("slowlog-max-len", 100_000)
    r.config_set("latency-monitor-threshold", 1)
    r.slowlog_reset()
    r.execute_command("LATENCY", "RESET")


def _redis_watch(r: Any) -> dict[str, Any]:
    """The longest commands Redis logged (slowlog, µs) and its latency monitor's events (ms)."""
    log = r.slowlog_get(100_000)
    worst = sorted(log, key=lambda e: e["duration"], reverse=True)[:5]
    latest = r.execute_command("LATENCY", "LATEST")
    return {
        "slowlog_over_1ms": len(log),
        "longest_command_ms": round(worst[0]["duration"] / 1000, 3) if worst else 0.0,
        "longest_commands": [
            {"ms": round(e["duration"] / 1000, 3), "command": _text(e["command"])[:80]}
            for e in worst
        ],
        "latency_monitor_max_ms": {_text(e[0]): int(e[3]) for e in latest},
    }


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _checks(engine: Any, r: Any, summary: dict[str, Any], n: int) -> dict[str, Any]:
    from sqlalchemy import text

    from bloasis.publish.cache import USERS_VERSION_KEY, user_key

    with engine.connect() as conn:
        stored, distinct = conn.execute(
            text("SELECT count(*), count(DISTINCT user_id) FROM user_strategies WHERE as_of = :d"),
            {"d": summary["as_of"]},
        ).one()
        pending = conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
        pending_n = int(pending.scalar_one())
        ids = [
            row[0]
            for row in conn.execute(
                text("SELECT user_id FROM user_preferences ORDER BY random() LIMIT 1000")
            )
        ]
    version = _text(r.get(USERS_VERSION_KEY) or b"")
    with r.pipeline(transaction=False) as pipe:
        for u in ids:
            pipe.exists(user_key(u, version))
        present = sum(pipe.execute())
    value = r.get(user_key(random.choice(ids), version)) or b""
    return {
        "user_strategies": int(stored),
        "distinct_users": int(distinct),
        "outbox_pending_after": pending_n,
        "users_version": version,
        "sampled_user_keys_present": f"{present}/{len(ids)}",
        "user_value_bytes": len(value),
        "ok": int(stored) == int(distinct) == n and pending_n == 0 and present == len(ids),
    }


def _one_run(
    state: Path,
    engine: Any,
    r: Any,
    workers: int,
    n: int,
    chunk: int,
    prefect_env: dict[str, str],
    *,
    symbol_events: bool = False,
) -> dict[str, Any]:
    """One daily flow run from empty result tables, so it stores, caches and publishes every
    user. Redis keeps the previous run's version, as in production: the run switches from it
    (and the previous keys' expiry is part of the switch)."""
    from bench.pipeline_scale import _truncate_results
    from bloasis import dask_cluster, stack

    _truncate_results(engine)  # every run stores, caches and publishes everything
    # The embedded broker keeps every message in memory: a fresh one per run.
    stack.stop_service("kafka", state)
    stack.start_service("kafka", state)
    address, records = dask_cluster.start(state / f"dask-{workers}", workers)
    try:
        env = child_env(
            state,
            prefect_env
            | {
                "BLOASIS_TASK_RUNNER": "dask",
                "BLOASIS_DASK_ADDRESS": address,
                "BLOASIS_USER_SYMBOL_EVENTS": str(symbol_events).lower(),
                "BLOASIS_USER_CHUNK_SIZE": str(chunk),
            },
        )
        _redis_watch_reset(r)
        services = {s.name: s.pid for s in stack.status(state) if s.pid}
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.users_1m", "--worker"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True,
        )  # fmt: skip
        pids = {
            "driver": proc.pid,
            **{name: int(rec["pid"]) for name, rec in records.items()},
            "postgres_largest": services["postgres"],
            "postgres_all": services["postgres"],
            "redis": services["redis"],
            "broker": services["kafka"],
        }
        with PeakRss(pids, alone={"driver"}, largest={"postgres_largest"}) as rss:
            out, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"the flow's process failed with status {proc.returncode}")
        got = json.loads(out.strip().splitlines()[-1])
        watch = _redis_watch(r)
        info = r.info("memory")
        summary = got["summary"]
        return {
            "seconds": got["wall_s"],
            "users": summary["users"],
            "user_strategies_written": summary["user_strategies_written"],
            "user_events_queued": summary["user_events_queued"],
            "signal_events_queued": summary["signal_events_queued"],
            "user_keys_cached": summary["user_keys_cached"],
            "user_chunks": summary["user_chunks"],
            "relay": summary["relay"],
            "cache": summary["cache"],
            "step_timings_s": got["timings"],
            "peak_rss_mb": {k: round(v, 1) for k, v in rss.peak.items()},
            "redis": watch | {"used_memory_peak_mb": round(info["used_memory_peak"] / 2**20, 1)},
            "checks": _checks(engine, r, summary, n),
        }
    finally:
        dask_cluster.stop(records)


def _worker() -> None:
    """The flow's process: one daily run on the configured Dask cluster; its summary and the
    step timings it recorded, as one JSON line on stdout."""
    import asyncio

    from bench.pipeline_scale import _run_timings
    from bloasis.config import load_settings
    from flows.pipeline import daily_pipeline
    from tasks.strategy import task_runner_for

    settings = load_settings()
    runner = task_runner_for(settings)
    t = time.perf_counter()
    summary = asyncio.run(
        daily_pipeline.with_options(task_runner=runner)(trigger="manual", relay=True)
    )
    wall = time.perf_counter() - t
    rounded = _run_timings(summary["run_id"])
    print(json.dumps({"wall_s": wall, "summary": summary, "timings": rounded}, default=str))


def run(size: str = "full") -> list[dict[str, Any]]:
    from bench.pipeline_scale import prefect_server
    from bloasis import stack
    from bloasis.config import load_settings
    from bloasis.publish.cache import make_redis
    from bloasis.store.db import get_engine, upgrade

    n = SIZES[size]
    runs: dict[int, dict[str, Any]] = {}
    symbol: dict[bool, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bloasis-users-1m-") as tmp,
        prefect_server() as (prefect_env, prefect_ready),
    ):
        state = Path(tmp)
        try:
            stack.up(state)
            settings = load_settings(state_dir=state)
            upgrade(settings.require("database_url"))
            engine = get_engine(settings)
            say(f"users_1m: seeding {n} users...")
            seed_s = _seed(engine, n)
            say(f"    seeded in {seed_s:.1f}s")
            r = make_redis(settings.require("redis_url"), timeout=30)
            prefect_ready()
            for workers in (1, 2):
                say(f"... the daily flow on a cluster of {workers} worker(s)")
                runs[workers] = _one_run(state, engine, r, workers, n, CHUNKS[size], prefect_env)
                got = runs[workers]
                say(f"    {got['seconds']:.1f}s; RSS {got['peak_rss_mb']}; {got['redis']}")
            # The per-symbol events' cost, on the first 100,000 users (all of them when fewer).
            m = _keep_first_users(engine, SYMBOL_USERS)
            for on in (False, True):
                say(f"... {m} users, per-symbol user events {'on' if on else 'off'}")
                symbol[on] = _one_run(
                    state, engine, r, 2, m, CHUNKS[size], prefect_env, symbol_events=on
                )
                say(f"    {symbol[on]['seconds']:.1f}s")
            r.close()
            engine.dispose()
        finally:
            stack.down(state)
    one, two = runs[1], runs[2]
    every = [one, two, *symbol.values()]
    worst_rss = {
        name: max(r["peak_rss_mb"].get(name, 0.0) for r in every)
        for name in {k for r in every for k in r["peak_rss_mb"]}
    }
    ours = {k: v for k, v in worst_rss.items() if k not in ("redis", "broker", "postgres_all")}
    longest = max(r["redis"]["longest_command_ms"] for r in every)
    met = (
        two["seconds"] <= TARGET_S
        and max(ours.values()) <= RSS_LIMIT_MB
        and longest <= 50
        and all(r["checks"]["ok"] for r in every)
    )
    off, on = symbol[False], symbol[True]
    m = on["users"]
    extra_per_user = (on["seconds"] - off["seconds"]) / m
    return [
        entry(
            "users_1m",
            two["seconds"],
            "s",
            compared_to="the same run on a cluster of 1 worker",
            baseline_value=one["seconds"],
            target=f"<= {TARGET_S:.0f} s with 2 workers; every BLOASIS process <= 2 GB (the "
            "driver, the scheduler, each worker); longest Redis command during the run <= 50 ms",
            met=met and n == SIZES["full"],
            users=n,
            chunk=CHUNKS[size],
            seed_users_s=round(seed_s, 3),
            worst_peak_rss_mb=worst_rss,
            longest_redis_command_ms=longest,
            per_symbol_user_events="off (BLOASIS_USER_SYMBOL_EVENTS=false); see symbol_events",
            runs={str(k): v for k, v in runs.items()},
        ),
        entry(
            "symbol_events",
            on["seconds"],
            "s",
            compared_to=f"the same {m} users on 2 workers without per-symbol user events",
            baseline_value=off["seconds"],
            target=f"a million users with them on (extrapolated) <= {TARGET_S:.0f} s",
            met=two["seconds"] + extra_per_user * n <= TARGET_S and n == SIZES["full"],
            users=m,
            events_with=on["user_events_queued"] + on["signal_events_queued"],
            events_without=off["user_events_queued"] + off["signal_events_queued"],
            extra_seconds_per_100k_users=round(extra_per_user * 100_000, 1),
            extrapolated_1m_users_s=round(two["seconds"] + extra_per_user * n, 1),
            runs={"off": off, "on": on},
        ),
    ]


def _keep_first_users(engine: Any, m: int) -> int:
    """Delete every user after the first `m` (id order); how many are left."""
    from sqlalchemy import text

    from bench.pipeline_scale import _truncate_results

    _truncate_results(engine)  # user_strategies refer to the users
    with engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM user_preferences WHERE user_id NOT IN "
                "(SELECT user_id FROM user_preferences ORDER BY user_id LIMIT :m)"
            ),
            {"m": m},
        )
        return int(conn.execute(text("SELECT count(*) FROM user_preferences")).scalar_one())


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker()
    else:
        size_main(__doc__, SIZES, run)
