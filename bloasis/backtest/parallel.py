"""Deciding blocks of sessions on a Dask cluster (`engine.Mapper`): one task per block, results
in order, and where each ran (to show the work spread over the workers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from bloasis.backtest.decisions import Targets


def dask_mapper(
    client: Any, spread: Counter[str] | None = None
) -> Callable[[Callable[..., Targets], list[dict[str, Any]]], list[Targets]]:
    """A mapper over `client` (a `distributed.Client`); `spread` counts blocks per worker."""

    def mapper(fn: Callable[..., Targets], jobs: list[dict[str, Any]]) -> list[Targets]:
        futures = [client.submit(fn, **job, pure=False) for job in jobs]
        out = client.gather(futures)
        if spread is not None:
            for holders in client.who_has(futures).values():
                for worker in holders[:1]:
                    spread[str(worker)] += 1
        return list(out)

    return mapper
