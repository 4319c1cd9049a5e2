"""The benchmark suite runs (size "tiny", each bench on its own private embedded stack) and prints
the bench JSON shape, with its equal-work checks holding. No timing is asserted here: the
figures are `make bench`'s job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import backfill, freshness, grpc_serving, suite

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = [
    "pipeline_5000x10y",
    "pipeline_vs_per_symbol",
    "data_load",
    "prefect_overhead",
    "pipeline_peak_rss",
    "grpc_regime_vs_floor",
    "grpc_regime_vs_redis_per_call",
    "grpc_strategy_vs_floor",
    "grpc_regime_v1_vs_floor",
    "grpc_users_uniform",
    "grpc_users_zipf",
    "grpc_users_hot",
    "grpc_users_v1_uniform",
    "grpc_users_v1_zipf",
    "grpc_users_v1_hot",
    "freshness_p99",
    "relay_throughput",
    "backfill_1990_2022",
    "backfill_1990_2022_v3",
    "pit_read",
    "ingest_daily_500",
    "ingest_catchup_20",
    "regime_vs_peers",
    "backtest_vs_reference",
    "backtest_3_profiles_1990_2022",
    "backtest_users_1000",
    "users_derive_dask",
    "users_1m",
    "symbol_events",
]
SHAPE = {"name", "value", "unit", "compared_to", "baseline_value", "ratio", "target", "met"}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _shape(e: dict[str, Any]) -> None:
    assert e.keys() >= SHAPE, e
    assert isinstance(e["value"], int | float) and e["value"] > 0
    assert isinstance(e["met"], bool) and e["target"] and e["unit"]
    json.dumps(e)


def test_registry_names_are_the_issues_figures() -> None:
    assert list(suite.REGISTRY) == REQUIRED
    out = _bench("--tiny", "--list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == REQUIRED
    bad = _bench("--tiny", "no_such_bench")
    assert bad.returncode == 2 and "unknown benchmark" in bad.stderr


def test_relay_tiny_through_the_runner_publishes_each_event_once() -> None:
    out = _bench("--tiny", "relay_throughput")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)  # one JSON document on stdout, progress on stderr
    assert {"python", "cpus"} <= doc["machine"].keys()
    [e] = doc["benchmarks"]
    _shape(e)
    assert e["name"] == "relay_throughput" and e["unit"] == "events/s"
    n = e["events"]
    assert (e["marked_published"], e["consumed_unique"], e["duplicates"]) == (n, n, 0)
    assert e["checks_ok"] is True and e["pending_after"] == 0


def test_grpc_serving_tiny_compares_equal_responses() -> None:
    entries = grpc_serving.run("tiny")
    assert [e["name"] for e in entries] == [
        "grpc_regime_vs_floor",
        "grpc_regime_vs_redis_per_call",
        "grpc_strategy_vs_floor",
        "grpc_regime_v1_vs_floor",
    ]
    for e in entries:
        _shape(e)
        # Equal work: every server (the 2-process product too) answered the same message
        # (served_at aside), no errors.
        assert e["responses_equal"] is True
        assert e["errors"] == {"product": 0, "floor": 0, "redis": 0, "product_2p": 0}
        assert e["client"] in (grpc_serving.H2LOAD, grpc_serving.CLIENT)
        for server in ("product", "floor", "redis", "product_2p"):
            assert e[f"{server}_calls_per_s"] > 0
            assert 0 < e[f"{server}_p50_ms"] <= e[f"{server}_p99_ms"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["grpc_regime_vs_redis_per_call"]["compared_to"].startswith("cache-aside")
    # The comparison servers return the product's bytes: same sizes but for the served_at stamp
    # (+-1), served_from ("snapshot" is 3 bytes longer than "redis"), and a user's answer being
    # a shared body plus the user's ids (the `strategy` field's tag and length once more: 2).
    for e in entries:
        sizes = e["response_bytes"]
        assert max(sizes.values()) - min(sizes.values()) <= 1 + len("snapshot") - len("redis") + 2


def test_freshness_tiny_sees_every_commit_on_both_paths() -> None:
    [e] = freshness.run("tiny")
    _shape(e)
    assert e["name"] == "freshness_p99" and e["runs"] == freshness.SIZES["tiny"]
    assert e["get_max_s"] >= e["get_p50_s"] > 0 and e["watch_max_s"] >= e["watch_p50_s"] > 0


def test_backfill_tiny_stores_every_session_once() -> None:
    entries = backfill.run("tiny")
    assert [e["name"] for e in entries] == [
        "backfill_compute_2022_2022",
        "backfill_1990_2022",
        "backfill_1990_2022_v3",
    ]
    for e in entries[1:]:
        _shape(e)
        assert e["inserted"] == e["sessions"] > 200 and e["rerun_inserted"] == 0
        assert e["rerun_events"] == 0 and e["events"] > 0


async def test_memoised_user_strategy_is_never_edited_by_a_symbol_filter() -> None:
    """The server memoises a user's expanded Redis value: a filtered read (edits its own copy)
    must not change what the next unfiltered read returns; a changed Redis value is served."""
    import grpc
    import redis

    from bench.common import bench_stack
    from bench.seed import DEMO_USER, seed_run
    from bloasis.pb.v2 import strategy_pb2 as st_pb
    from bloasis.pb.v2 import strategy_pb2_grpc as st_grpc
    from bloasis.publish.cache import read_users_version, user_key
    from bloasis.serve.server import start_server
    from bloasis.store.db import engine_for

    with bench_stack() as s:
        seeded = seed_run(engine_for(s.require("database_url")), s)
        # The answer cache off: this is about the Redis memo under it.
        srv = await start_server(
            s.model_copy(update={"universe": seeded.universe, "user_strategy_cache_seconds": 0})
        )
        try:
            async with grpc.aio.insecure_channel(srv.address) as ch:
                stub = st_grpc.StrategyServiceStub(ch)
                req = st_pb.GetStrategyRequest(user_id=DEMO_USER)
                first = await stub.GetStrategy(req, timeout=10)
                assert first.served_from == "redis" and len(first.strategy.signals) > 1
                again = await stub.GetStrategy(req, timeout=10)  # the memo's answer
                assert again == first
                one = first.strategy.signals[0].symbol
                only = await stub.GetStrategy(
                    st_pb.GetStrategyRequest(user_id=DEMO_USER, symbols=[one]), timeout=10
                )
                assert [g.symbol for g in only.strategy.signals] == [one]
                assert await stub.GetStrategy(req, timeout=10) == first
                # Redis is still read on every call: a value gone from it is not served (the
                # key of the version the seeded run switched to, which the server reads).
                r = redis.Redis.from_url(s.require("redis_url"))
                try:
                    version = read_users_version(r)
                    assert version is not None and srv.users_version.value == version
                    assert r.delete(user_key(DEMO_USER, version)) == 1
                finally:
                    r.close()
                fallback = await stub.GetStrategy(req, timeout=10)
                assert fallback.served_from == "postgres" and fallback.strategy == first.strategy
        finally:
            await srv.stop(0)


def test_ingest_tiny_ingests_and_catches_up_every_session() -> None:
    from bench import ingest

    daily, catchup = ingest.run("tiny")
    _shape(daily)
    _shape(catchup)
    assert daily["name"] == "ingest_daily_500" and daily["bars"]["inserted"] == 51
    assert catchup["name"] == "ingest_catchup_20" and catchup["sessions"] == 3
    assert catchup["ingest_s"] > 0 and catchup["pipeline_s"] > 0


def test_pit_read_tiny_reads_the_same_closes_as_the_parquet_store() -> None:
    from bench import pit_read

    [e] = pit_read.run("tiny")
    _shape(e)
    assert e["name"] == "pit_read" and e["value"] > 0 and e["baseline_value"] > 0
    assert e["closes_equal"] is True


def test_regime_vs_peers_tiny_reports_every_target_with_its_flag() -> None:
    from bench import regime_vs_peers

    [e] = regime_vs_peers.run("tiny")
    _shape(e)
    targets = e["targets"]
    assert len(targets) == 11 and all(isinstance(t["met"], bool) for t in targets)
    assert e["value"] == sum(t["met"] for t in targets)
    assert e["met"] == all(t["met"] for t in targets)
    oos = e["out_of_sample"]
    assert set(oos) >= {"regime-v2", "regime-v3", "jump-model", "hmm-filtered", "buy-and-hold"}
    assert e["spans"]["out_of_sample"][0] == "2007-01-03"
    assert e["v3_selection"]["defaults_are_the_selection"] is True


@pytest.mark.slow
def test_users_1m_tiny_runs_the_flow_on_a_real_cluster_and_checks_what_it_published() -> None:
    """The flow on a scheduler + 1 then 2 workers, then the per-symbol events off and on: every
    user stored once, every event relayed, the pointer's keys present; the figures reported."""
    from bench import users_1m

    one_m, symbol = users_1m.run("tiny")
    for e in (one_m, symbol):
        _shape(e)
    n = users_1m.SIZES["tiny"]
    assert one_m["name"] == "users_1m" and one_m["users"] == n and one_m["met"] is False
    for r in [*one_m["runs"].values(), *symbol["runs"].values()]:
        assert r["checks"]["ok"], r["checks"]
        assert r["users"] == r["user_strategies_written"] == r["user_keys_cached"] == n
        assert r["relay"].startswith("published ") and r["relay"].endswith(", 0 pending")
        assert r["redis"]["longest_command_ms"] >= 0 and r["peak_rss_mb"]["driver"] > 0
    assert set(one_m["runs"]["2"]["peak_rss_mb"]) >= {"dask-worker-1", "dask-worker-2", "redis"}
    assert symbol["events_with"] > symbol["events_without"] > n
