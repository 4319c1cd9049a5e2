"""Tier 2/3 tasks: sectors and profile strategies, user chunks (fanned out on the flow's task
runner: threads, or Dask workers on a cluster), storing users, switching the Redis keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from bloasis import strategy_run
from bloasis.config import Settings
from bloasis.marketdata import MarketData
from bloasis.regime.types import RegimeResult
from bloasis.store import strategies as store
from bloasis.store.db import get_engine
from bloasis.strategy.engine import ProfileBook
from tasks.common import STORE_RETRIES, named


def task_runner_for(settings: Settings) -> Any:
    """Threads by default; `BLOASIS_TASK_RUNNER=dask` fans user chunks out to a Dask cluster
    (`BLOASIS_DASK_ADDRESS`, or a local cluster of worker processes when unset)."""
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True}
        )
    return ThreadPoolTaskRunner(max_workers=4)


@task(
    name="sectors-and-profiles",
    cache_policy=NO_CACHE,
    **STORE_RETRIES,
    task_run_name="sectors-and-profiles-{regime.as_of}",
)
def sectors_and_profiles(
    settings: Settings, md: MarketData, regime: RegimeResult, run_id: uuid.UUID
) -> strategy_run.TierOutcome:
    out = strategy_run.compute_and_store_tiers(
        get_engine(settings),
        md,
        regime,
        run_id=run_id,
        top_n=settings.top_n,
        min_history=settings.min_history_sessions,
        quarantine=settings.quarantine,
    )
    if out.quarantined:
        get_run_logger().warning(
            "left out %d symbols: %s",
            len(out.quarantined),
            "; ".join(str(i) for i in out.quarantined[:10]),
        )
    return out


@task(name="load-users", cache_policy=NO_CACHE, **STORE_RETRIES, task_run_name=named("load-users"))
def load_users(settings: Settings, user_ids: Sequence[str] | None) -> list[store.StoredPreferences]:
    return strategy_run.load_users(get_engine(settings), user_ids)


@task(name="derive-users", cache_policy=NO_CACHE, task_run_name=named("derive-users"))
def derive_users(
    books: dict[str, ProfileBook],
    users: Sequence[store.StoredPreferences],
    run_id: uuid.UUID,
    model_version: str,
    computed_at: datetime,
) -> strategy_run.UserChunk:
    return strategy_run.derive_chunk(
        books, users, run_id=run_id, model_version=model_version, computed_at=computed_at
    )


@task(
    name="store-users", cache_policy=NO_CACHE, **STORE_RETRIES, task_run_name=named("store-users")
)
def store_users(
    settings: Settings, chunks: Sequence[strategy_run.UserChunk]
) -> strategy_run.UsersOutcome:
    return strategy_run.store_user_chunks(get_engine(settings), chunks)


@task(name="switch-redis-keys", cache_policy=NO_CACHE, task_run_name=named("switch-redis-keys"))
def publish_run(
    settings: Settings,
    model_version: str,
    as_of: date,
    with_strategies: bool,
    users: strategy_run.UsersOutcome | None,
) -> str:
    return strategy_run.publish_run(
        get_engine(settings),
        settings,
        model_version=model_version,
        as_of=as_of,
        with_strategies=with_strategies,
        users=users,
    )


async def picks_artifacts(books: dict[str, ProfileBook], run_id: uuid.UUID) -> None:
    """One table per profile in the UI: the picks with their weights and levels (created
    concurrently: one API round trip of wall time instead of one per profile)."""
    creations = []
    for profile, book in books.items():
        s = book.strategy
        weights = {g.symbol: g for g in s.signals}
        rows = []
        for p in s.picks:
            g = weights.get(p.symbol)
            rows.append(
                {
                    "rank": p.rank,
                    "symbol": p.symbol,
                    "sector": p.sector,
                    "score": round(p.final_score, 1),
                    "action": g.action if g else "",
                    "weight": str(g.weight) if g else "",
                    "entry": str(g.entry_price) if g else "",
                    "stop": str(g.stop_loss) if g else "",
                }
            )
        creations.append(
            acreate_table_artifact(
                key=f"picks-{profile}",
                table=rows,
                description=f"{s.strategy_id} (run {run_id}): regime {s.regime},"
                f" cash {s.cash_weight}",
            )
        )
    await asyncio.gather(*creations)
