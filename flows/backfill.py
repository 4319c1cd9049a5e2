"""Regime backfill flow: `bloasis.app.backfill.run_backfill` with Prefect tasks, a progress
artifact while chunks persist, and the validation report as a markdown artifact."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from bloasis.app import backfill
from bloasis.config import Settings
from bloasis.pipeline import BulkOutcome
from bloasis.regime.types import RegimeResult
from flows.common import PrefectReporter, flow_run_id, one_api_client, progress_artifact
from tasks.common import STORE_RETRIES
from tasks.publish import relay_outbox
from tasks.regime import load_market_data
from tasks.strategy import publish_run

classify_range = task(name="classify-range", cache_policy=NO_CACHE)(backfill.classify_range)
validation_report = task(name="validation-report", cache_policy=NO_CACHE)(
    backfill.validation_report
)


@task(name="persist-range", cache_policy=NO_CACHE, **STORE_RETRIES)
def persist_range(
    settings: Settings, results: list[RegimeResult], chunk_size: int, with_events: bool = True
) -> BulkOutcome:
    """`backfill.persist_range`, its progress shown as a progress artifact."""
    with progress_artifact("backfill-progress", "Backfill: sessions persisted"):
        return backfill.persist_range(settings, results, chunk_size, with_events)


FLOW_STEPS = backfill.BackfillSteps(
    load_market_data=load_market_data,
    classify_range=classify_range,
    persist_range=persist_range,
    validation_report=validation_report,
    publish_run=publish_run,
    relay_outbox=relay_outbox,
)


def _run_name() -> str:
    p = flow_run.parameters
    model = f"-{p['model_version']}" if p.get("model_version") else ""
    return f"backfill{model}-{p.get('start')}-{p.get('end')}"


@flow(name="regime-backfill", flow_run_name=_run_name)
@one_api_client
async def regime_backfill(
    start: date,
    end: date,
    chunk_size: int = 1000,
    relay: bool = True,
    model_version: str | None = None,
) -> dict[str, Any]:
    """Compute, store and validate the regime for every session in [start, end] (with the
    served model, or `model_version`: stored only, see `BackfillRequest`)."""
    out = await backfill.run_backfill(
        backfill.BackfillRequest(
            start=start,
            end=end,
            chunk_size=chunk_size,
            relay=relay,
            model_version=model_version,
        ),
        run_id=flow_run_id(),
        steps=FLOW_STEPS,
        reporter=PrefectReporter(),
        logger=get_run_logger(),
    )
    out.pop("outcome")
    return out
