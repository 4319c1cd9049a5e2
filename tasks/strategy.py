"""Tier 2/3 tasks: sectors and profile strategies, user chunks (fanned out on the flow's task
runner: threads, or Dask workers on a cluster; each stores and caches its users), switching the
Redis keys."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from bloasis import strategy_run
from bloasis.app import steps
from bloasis.config import Settings
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


sectors_and_profiles = task(
    name="sectors-and-profiles",
    cache_policy=NO_CACHE,
    **STORE_RETRIES,
    task_run_name="sectors-and-profiles-{regime.as_of}",
)(steps.sectors_and_profiles)

user_slices = task(
    name="user-slices", cache_policy=NO_CACHE, **STORE_RETRIES, task_run_name=named("user-slices")
)(steps.user_slices)

# Each chunk stores its own users (idempotent: a retry, or Dask rerunning the chunk of a lost
# worker, writes nothing twice), so store outages are retried here, per chunk.
derive_users = task(
    name="derive-users",
    cache_policy=NO_CACHE,
    **STORE_RETRIES,
    task_run_name=named("derive-users"),
)(steps.derive_users)

publish_run = task(
    name="switch-redis-keys", cache_policy=NO_CACHE, task_run_name=named("switch-redis-keys")
)(steps.publish_run)


def derive_all(
    settings: Settings,
    books: dict[str, ProfileBook],
    parts: list[strategy_run.UserSlice],
    job: strategy_run.UsersJob,
) -> list[strategy_run.UsersOutcome]:
    """One `derive-users` task per chunk on the flow's task runner; only counts come back."""
    futures = [derive_users.submit(settings, books, p, job) for p in parts]
    return [f.result() for f in futures]
