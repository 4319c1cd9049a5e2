"""The market-data ingest flow: live providers -> the point-in-time store, then the daily
pipeline for every session that became available (catch-up included), as a subflow run."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bloasis import calendar
from bloasis.app import steps
from bloasis.app.ingest import IngestOutcome, format_outcome, pipeline_due
from bloasis.config import Settings, load_settings
from flows.common import PrefectReporter, one_api_client, progress_artifact
from flows.pipeline import daily_pipeline
from tasks.common import STORE_RETRIES


# HTTP failures are retried inside the provider clients (backoff, Retry-After); the task's own
# retries are for a database outage only (`retry_on_transient`), so the layers never multiply.
@task(name="ingest-market-data", cache_policy=NO_CACHE, **STORE_RETRIES)
def ingest_market_data(
    settings: Settings, since: date | None, providers: tuple[str, ...] | None
) -> IngestOutcome:
    """`steps.ingest_market_data`, the provider requests answered shown as a progress artifact."""
    with progress_artifact("ingest-progress", "Ingest: provider requests answered"):
        return steps.ingest_market_data(settings, since, providers)


def _run_name() -> str:
    return f"ingest-{calendar.exchange_today().isoformat()}"


@flow(name="market-data-ingest", flow_run_name=_run_name)
@one_api_client
async def market_data_ingest(
    since: date | None = None,
    providers: list[str] | None = None,
    pipeline: bool = True,
) -> dict[str, Any]:
    """Ingest what the providers published since the last ingest (or everything from
    `since`), then, when BLOASIS_MARKET_DATA is live and sessions are waiting, run the daily
    pipeline, which computes each of them in order."""
    logger = get_run_logger()
    settings = load_settings()
    out = ingest_market_data(settings, since, tuple(providers) if providers else None)
    await PrefectReporter().markdown(
        "market-data-ingest", format_outcome(out, markdown=True), f"Ingest up to {out.target}"
    )
    summary = out.summary()
    due, history_days = pipeline_due(settings)
    if pipeline and due:
        logger.info("sessions waiting to be computed: running the daily pipeline")
        summary["pipeline"] = await daily_pipeline(trigger="baseline", history_days=history_days)
    return summary
