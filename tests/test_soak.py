"""Load and soak, reduced for `make test` (the full 100,000 calls: `python -m bench.grpc_soak`,
`make soak`): `bloasis serve` in its own process, GetCurrentRegime/GetStrategy at 64 in flight
from a separate load process with zero errors, the server's RSS after the soak within 10% of
after warm-up, and 1,000 WatchRegime subscribers (another process) all receiving one regime
change committed with NOTIFY."""

from __future__ import annotations

import time

import pytest

from bench.grpc_soak import run_soak
from bloasis.config import Settings

pytestmark = pytest.mark.soak

CALLS = 5_000
WATCHERS = 1_000


def test_load_soak_and_watchers(stack_settings: Settings) -> None:
    t0 = time.monotonic()
    r = run_soak(
        stack_settings.require("database_url"),
        stack_settings.require("redis_url"),
        calls=CALLS,
        warmup=2_000,
        in_flight=64,
        processes=1,
        watchers=WATCHERS,
    )
    soak, watch = r["soak"], r["watch"]
    assert (r["warmup"]["errors"], soak["errors"]) == ({}, {}), r
    assert soak["calls"] == CALLS
    # Memory: no growth with the number of calls once warm.
    assert r["rss_after_mb"] <= 1.10 * r["rss_warm_mb"], r
    assert watch["subscribed"] == WATCHERS and watch["errors"] == {}, watch
    assert watch["received"] == WATCHERS, watch
    assert time.monotonic() - t0 < 60
    print(
        f"\nsoak: {soak['calls']} calls, {soak['throughput']:.0f}/s, p50 {soak['p50_ms']:.1f} ms, "
        f"p99 {soak['p99_ms']:.1f} ms; RSS {r['rss_warm_mb']:.1f} -> {r['rss_after_mb']:.1f} MiB; "
        f"{watch['received']}/{WATCHERS} watchers in {watch['last_received_s']:.2f}s"
    )
