"""The benchmark suite of issue 7: one registry, entry name -> callable(size) -> entries.

Several figures come out of one measurement (the pipeline run gives five, the gRPC run three), so
the registry's callables share one run per group and size within a process: asking for two
names of a group runs it once. A group that cannot run (its module missing, an error) yields
an error entry for each of its names (`met: false`, `error`) and the others still run.

    python -m bench [--quick|--tiny] [--list] [names...]
"""

from __future__ import annotations

import functools
import importlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bench.common import say

SIZES: Final = ("tiny", "quick", "full")

Entry = dict[str, Any]


@dataclass(frozen=True)
class Group:
    """A module whose `run(size)` returns the entries `names` (and possibly more)."""

    module: str
    names: tuple[str, ...]


GROUPS: Final = (
    Group(
        "bench.pipeline_scale",
        (
            "pipeline_5000x10y",
            "pipeline_vs_per_symbol",
            "data_load",
            "prefect_overhead",
            "pipeline_peak_rss",
        ),
    ),
    Group(
        "bench.grpc_serving",
        (
            "grpc_regime_vs_floor",
            "grpc_regime_vs_redis_per_call",
            "grpc_strategy_vs_floor",
            "grpc_regime_v1_vs_floor",
        ),
    ),
    Group(
        "bench.grpc_users",
        (
            "grpc_users_uniform",
            "grpc_users_zipf",
            "grpc_users_hot",
            "grpc_users_v1_uniform",
            "grpc_users_v1_zipf",
            "grpc_users_v1_hot",
        ),
    ),
    Group("bench.freshness", ("freshness_p99",)),
    Group("bench.relay_throughput", ("relay_throughput",)),
    Group("bench.backfill", ("backfill_1990_2022", "backfill_1990_2022_v3")),
    Group("bench.pit_read", ("pit_read",)),
    Group("bench.ingest", ("ingest_daily_500", "ingest_catchup_20")),
    Group("bench.regime_vs_peers", ("regime_vs_peers",)),
    Group(
        "bench.backtest",
        ("backtest_vs_reference", "backtest_3_profiles_1990_2022", "backtest_users_1000"),
    ),
    Group("bench.dask_users", ("users_derive_dask",)),
    Group("bench.users_1m", ("users_1m", "symbol_events")),
)


def error_entry(name: str, error: str) -> Entry:
    """The bench shape for a figure that could not be measured."""
    return {
        "name": name,
        "value": None,
        "unit": "",
        "compared_to": "",
        "baseline_value": None,
        "ratio": None,
        "target": "",
        "met": False,
        "error": error,
    }


@functools.cache
def run_group(module: str, size: str) -> tuple[Entry, ...]:
    """Every entry of one group's run at `size` (memoised: one run per process)."""
    group = next(g for g in GROUPS if g.module == module)
    t = time.perf_counter()
    say(f"== {module} ({size})")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        say(f"{module}: not available: {exc}")
        return tuple(error_entry(n, f"{module} not available: {exc}") for n in group.names)
    try:
        got = list(mod.run(size))
    except Exception as exc:  # one broken bench must not hide the others' figures
        say(traceback.format_exc())
        return tuple(
            error_entry(n, f"{module}.run failed: {type(exc).__name__}: {exc}"[:500])
            for n in group.names
        )
    say(f"== {module} done in {time.perf_counter() - t:.1f}s")
    return tuple(got)


def _entries_of(module: str, name: str, size: str) -> list[Entry]:
    got = [e for e in run_group(module, size) if e.get("name") == name]
    return got or [error_entry(name, f"{module}.run returned no entry named {name!r}")]


REGISTRY: Final[dict[str, Callable[[str], list[Entry]]]] = {
    name: functools.partial(_entries_of, g.module, name) for g in GROUPS for name in g.names
}


def run(names: list[str] | None = None, size: str = "full") -> list[Entry]:
    """The entries of `names` (all by default), in registry order."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    wanted = names or list(REGISTRY)
    unknown = [n for n in wanted if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; known: {', '.join(REGISTRY)}")
    return [e for n in REGISTRY if n in wanted for e in REGISTRY[n](size)]
