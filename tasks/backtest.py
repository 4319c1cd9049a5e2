"""Backtest tasks: `decide_block` (the decisions of a block of rebalance sessions) as a Prefect
task, a mapper that fans the engine's blocks out on the flow's task runner (threads, or Dask
workers on a cluster), and the pictures of a stored backtest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from bloasis.app import backtest as app
from bloasis.backtest import decisions
from bloasis.backtest.decisions import Targets


def block_name() -> str:
    """`decide-block-<first session>-to-<last session>`: which part of the range a run is.
    Module-level: Dask pickles the task, and its run-name callable with it."""
    from prefect.runtime import task_run

    regimes = (task_run.parameters or {}).get("regimes") or []
    if not regimes:
        return "decide-block"
    return f"decide-block-{regimes[0].as_of}-to-{regimes[-1].as_of}"


# Pure computation on its arguments: nothing transient to retry, nothing worth caching (the
# backtest as a whole is found by its inputs key instead).
decide_block = task(name="decide-block", cache_policy=NO_CACHE, task_run_name=block_name)(
    decisions.decide_block
)


# The charts and the HTML page of a stored backtest (matplotlib: seconds for a long range).
render_pictures = task(name="backtest-pictures", cache_policy=NO_CACHE)(app.pictures)


def map_blocks(fn: Callable[..., Targets], jobs: list[dict[str, Any]]) -> list[Targets]:
    """`bloasis.backtest.engine.Mapper`: one `decide-block` task per block, submitted at once so
    the task runner spreads them over its workers; results in block order (the engine reports
    progress between its waves of blocks)."""
    if fn is not decisions.decide_block:
        # Only decide_block has a task here; anything else would silently run untracked.
        raise TypeError(f"map_blocks maps decide_block, not {getattr(fn, '__name__', fn)!r}")
    futures = [decide_block.submit(**job) for job in jobs]
    return [f.result() for f in futures]
