"""Regime backfill flow: every session of a range in one vectorised pass, persisted in ordered
chunks with a progress artifact, ending with the validation report as a markdown artifact."""

from __future__ import annotations

import time
import uuid
from datetime import date
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    acreate_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from bloasis import backfill, pipeline, progress
from bloasis.config import Settings, load_settings
from bloasis.marketdata import MarketData
from bloasis.regime.model import RegimeModel, resolve_model
from bloasis.regime.types import RegimeResult
from bloasis.regime.validation import ValidationReport, format_report, validate_labels
from bloasis.store.db import get_engine
from flows.common import one_api_client
from tasks.common import STORE_RETRIES
from tasks.publish import relay_outbox
from tasks.regime import load_market_data
from tasks.strategy import publish_run


@task(name="classify-range", cache_policy=NO_CACHE)
def classify_range(
    md: MarketData, start: date, end: date, model: RegimeModel, run_id: uuid.UUID
) -> tuple[backfill.BackfillPlan, list[RegimeResult], Any]:
    return backfill.compute(md, start, end, model=model, run_id=run_id)


@task(
    name="persist-range",
    cache_policy=NO_CACHE,
    **STORE_RETRIES,
)
def persist_range(
    settings: Settings, results: list[RegimeResult], chunk_size: int
) -> pipeline.BulkOutcome:
    """Chunks already committed are skipped by a retry (inserts are idempotent)."""
    artifact_id = cast(
        uuid.UUID,
        create_progress_artifact(
            progress=0.0, key="backfill-progress", description="Backfill: sessions persisted"
        ),
    )

    def to_artifact(stage: str, done: int, total: int) -> None:
        update_progress_artifact(artifact_id, progress=100.0 * done / max(total, 1))

    with progress.listen(to_artifact):
        return backfill.persist(get_engine(settings), results, chunk_size=chunk_size)


@task(name="validation-report", cache_policy=NO_CACHE)
def validation_report(md: MarketData, frame: Any, plan: backfill.BackfillPlan) -> ValidationReport:
    labels = frame.loc[str(plan.start) : str(plan.end), "regime"]
    return validate_labels(labels, md.market["index_close"])


def _run_name() -> str:
    p = flow_run.parameters
    return f"backfill-{p.get('start')}-{p.get('end')}"


@flow(name="regime-backfill", flow_run_name=_run_name)
@one_api_client
async def regime_backfill(
    start: date, end: date, chunk_size: int = 1000, relay: bool = True
) -> dict[str, Any]:
    """Compute, store and validate the regime for every session in [start, end]."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    logger = get_run_logger()
    settings = load_settings()
    model = resolve_model(settings.model_version, settings.universe)
    engine = get_engine(settings)
    run_id = uuid.UUID(str(flow_run.id)) if flow_run.id else uuid.uuid4()
    t0 = time.perf_counter()
    md = load_market_data(end, settings.universe, settings.quarantine)
    pipeline.begin_run(
        engine,
        run_id=run_id,
        flow="regime-backfill",
        trigger="backfill",
        as_of=end,
        parameters={
            "start": start.isoformat(),
            "end": end.isoformat(),
            "chunk_size": chunk_size,
            "regime_params": model.params.as_dict(),
        },
        md=md,
        model_version=model.version,
    )
    timings: dict[str, float] = {}
    try:
        t = time.perf_counter()
        plan, results, frame = classify_range(md, start, end, model, run_id)
        timings["compute_s"] = time.perf_counter() - t
        if plan.note:
            logger.warning(plan.note)
        t = time.perf_counter()
        stored = persist_range(settings, results, chunk_size)
        timings["persist_s"] = time.perf_counter() - t
        report = validation_report(md, frame, plan)
        outcome = backfill.BackfillOutcome(
            plan=plan,
            results=results,
            report=report,
            inserted=stored.inserted,
            existing=stored.existing,
            events=stored.events,
            timings=timings,
        )
        # The regime key switches to the latest stored as-of, like any run's keys.
        cache_status = publish_run(settings, model.version, plan.end, False, None)
        relay_status = await relay_outbox(settings) if relay else "skipped"
        timings["total_s"] = time.perf_counter() - t0
        text = format_report(report)
        logger.info(
            "backfill %s..%s: %d sessions, %d inserted, %d already stored, %d events; %s; %s",
            plan.start,
            plan.end,
            plan.sessions,
            stored.inserted,
            stored.existing,
            stored.events,
            cache_status,
            relay_status,
        )
        await acreate_markdown_artifact(
            key="backfill-validation",
            markdown=f"# Regime backfill {plan.start} .. {plan.end}\n\n"
            f"Run `{run_id}`, model `{model.version}`: {plan.sessions} sessions, "
            f"{stored.inserted} inserted, {stored.existing} already stored, "
            f"{stored.events} events queued.\n\n```\n{text}\n```\n",
            description=f"Backfill validation {plan.start}..{plan.end}",
        )
        summary = outcome.summary() | {
            "run_id": str(run_id),
            "model_version": model.version,
            "cache": cache_status,
            "relay": relay_status,
        }
        pipeline.end_run(engine, run_id, status="completed", timings=timings, result=summary)
        return summary | {
            "days": [
                {
                    "as_of": r.as_of.isoformat(),
                    "regime": r.regime,
                    "confidence": r.confidence,
                    "risk_level": r.risk_level,
                }
                for r in results
            ]
        }
    except BaseException as exc:
        pipeline.end_run(engine, run_id, status="failed", timings=timings, error=repr(exc)[:2000])
        raise
