"""Regime tasks: load data, compute, persist (results + outbox in one transaction)."""

from __future__ import annotations

import uuid
from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE

from bloasis import pipeline
from bloasis.config import Settings
from bloasis.marketdata import MarketData
from bloasis.regime.types import RegimeResult
from bloasis.store.db import get_engine
from tasks.common import retry_on_transient


@task(name="load-market-data", cache_policy=NO_CACHE)
def load_market_data(end: date | None = None) -> MarketData:
    return pipeline.load_market_data(end)


@task(name="compute-regime", cache_policy=NO_CACHE, task_run_name="compute-regime-{as_of}")
def compute_regime(
    md: MarketData, as_of: date, trigger: str, run_id: uuid.UUID, model_version: str
) -> RegimeResult:
    return pipeline.compute_regime(
        md, as_of, trigger=trigger, run_id=run_id, model_version=model_version
    )


@task(
    name="persist-regime",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 2, 4],
    retry_condition_fn=retry_on_transient,
)
def persist_regime(settings: Settings, result: RegimeResult) -> pipeline.PersistOutcome:
    return pipeline.persist_regime(get_engine(settings), result)
