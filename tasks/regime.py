"""Regime tasks: load data, compute, persist (results + outbox in one transaction)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bloasis import pipeline
from bloasis.config import Settings
from bloasis.marketdata import MarketData
from bloasis.regime.model import RegimeModel
from bloasis.regime.types import RegimeResult
from bloasis.store.db import get_engine
from tasks.common import STORE_RETRIES, named


@task(name="load-market-data", cache_policy=NO_CACHE, task_run_name=named("load-market-data"))
def load_market_data(
    end: date | None = None, universe: str = "embedded", quarantine: bool = False
) -> MarketData:
    md, issues = pipeline.load_market_data_with_issues(end, universe, quarantine=quarantine)
    if issues:
        shown = "; ".join(f"{i.symbol} {i.date} {i.rule}" for i in issues[:10])
        more = f" and {len(issues) - 10} more" if len(issues) > 10 else ""
        get_run_logger().warning("quarantined %d bad rows: %s%s", len(issues), shown, more)
    return md


@task(name="compute-regime", cache_policy=NO_CACHE, task_run_name="compute-regime-{as_of}")
def compute_regime(
    md: MarketData, as_of: date, trigger: str, run_id: uuid.UUID, model: RegimeModel
) -> RegimeResult:
    return pipeline.compute_regime(md, as_of, trigger=trigger, run_id=run_id, model=model)


@task(
    name="persist-regime",
    cache_policy=NO_CACHE,
    **STORE_RETRIES,
    task_run_name=named("persist-regime"),
)
def persist_regime(settings: Settings, result: RegimeResult) -> pipeline.PersistOutcome:
    return pipeline.persist_regime(get_engine(settings), result)


@task(
    name="warm-up-history",
    cache_policy=NO_CACHE,
    **STORE_RETRIES,
    task_run_name="warm-up-history-{days}d-before-{as_of}",
)
def warm_up_history(
    settings: Settings,
    md: MarketData,
    as_of: date,
    days: int,
    run_id: uuid.UUID,
    model: RegimeModel,
) -> pipeline.BulkOutcome:
    """Store the sessions in the `days` calendar days before `as_of` that are missing (one
    vectorised pass, trigger `backfill`), so history reads have something to show."""
    idx = md.market.index
    before = idx[(idx < str(as_of)) & (idx >= str(as_of - timedelta(days=days)))]
    if len(before) == 0:
        return pipeline.BulkOutcome(0, 0, 0)
    results = pipeline.compute_regime_range(
        md,
        before[0].date(),
        before[-1].date(),
        trigger="backfill",
        run_id=run_id,
        model=model,
    )
    return pipeline.persist_regime_range(get_engine(settings), results)
