"""Regime tasks: the plain steps of `bloasis.app.steps` as Prefect tasks (load, compute, persist
with the outbox in one transaction, the history warm-up)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from bloasis.app import steps
from tasks.common import STORE_RETRIES, named

load_market_data = task(
    name="load-market-data", cache_policy=NO_CACHE, task_run_name=named("load-market-data")
)(steps.load_market_data)

compute_regime = task(
    name="compute-regime", cache_policy=NO_CACHE, task_run_name="compute-regime-{as_of}"
)(steps.compute_regime)

persist_regime = task(
    name="persist-regime",
    cache_policy=NO_CACHE,
    **STORE_RETRIES,
    task_run_name=named("persist-regime"),
)(steps.persist_regime)

warm_up_history = task(
    name="warm-up-history",
    cache_policy=NO_CACHE,
    **STORE_RETRIES,
    task_run_name="warm-up-history-{days}d-before-{as_of}",
)(steps.warm_up_history)
