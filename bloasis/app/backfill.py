"""Regime backfill over a date range as a plain service: one vectorised pass, persisted in
ordered chunks, validated, published.

Each chunk is one transaction (results + their change events + NOTIFY), so an interrupted
backfill keeps what it committed and a rerun fills in only the rest; a rerun of a complete range
inserts nothing and queues nothing. Backfilled results are history: their change events are
marked historical and raise no alerts. The `regime-backfill` flow passes its tasks in; the CLI
(through the flow), the benchmark and the tests call `run_backfill` directly.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from bloasis import pipeline, progress
from bloasis.app import steps
from bloasis.app.daily import NullReporter, Reporter
from bloasis.config import Settings, load_settings
from bloasis.marketdata import MarketData
from bloasis.pipeline import BulkOutcome, PipelineError, persist_regime_range
from bloasis.regime.model import RegimeModel, classify_frame, resolve_model, results_from_frame
from bloasis.regime.types import RegimeResult
from bloasis.regime.validation import ValidationReport, format_report, validate_labels
from bloasis.store.db import get_engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillPlan:
    start: date  # first session actually computed
    end: date
    sessions: int
    note: str = ""


@dataclass
class BackfillOutcome:
    plan: BackfillPlan
    results: list[RegimeResult]
    report: ValidationReport
    inserted: int = 0
    existing: int = 0
    events: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "start": self.plan.start.isoformat(),
            "end": self.plan.end.isoformat(),
            "sessions": self.plan.sessions,
            "note": self.plan.note,
            "inserted": self.inserted,
            "existing": self.existing,
            "events_queued": self.events,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "validation": self.report.as_dict(),
        }


def compute(
    md: MarketData, start: date, end: date, *, model: RegimeModel, run_id: uuid.UUID
) -> tuple[BackfillPlan, list[RegimeResult], pd.DataFrame]:
    """Classify every session in [start, end] from data published up to `end`, in one pass."""
    if start > end:
        raise PipelineError(f"--start {start} is after --end {end}")
    idx = md.market.index
    if end < idx[0].date() or start > idx[-1].date():
        raise PipelineError(
            f"range {start}..{end} is outside the data ({idx[0].date()}..{idx[-1].date()})"
        )
    frame = classify_frame(md.as_of(end).market, model.params)
    if frame.empty:
        raise PipelineError(f"not enough history to classify up to {end}")
    sel = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    if sel.empty:
        raise PipelineError(f"no classifiable session in {start}..{end}")
    first = sel.index[0].date()
    note = ""
    if first > start and frame.index[0].date() == first:
        note = (
            f"sessions before {first} are not classified: the 200-day average needs "
            f"{model.params.sma_min_periods} sessions of history"
        )
    results = results_from_frame(
        sel,
        trigger="backfill",
        run_id=run_id,
        model_version=model.version,
        computed_at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
    )
    plan = BackfillPlan(first, sel.index[-1].date(), len(sel), note)
    return plan, results, frame


def persist(
    engine: Engine, results: list[RegimeResult], *, chunk_size: int = 1000, with_events: bool = True
) -> BulkOutcome:
    """Persist in date order, one transaction per chunk, reporting progress."""
    inserted = existing = events = 0
    total = len(results)
    progress.report("persist", 0, total)
    for i in range(0, total, chunk_size):
        out = persist_regime_range(engine, results[i : i + chunk_size], with_events=with_events)
        inserted += out.inserted
        existing += out.existing
        events += out.events
        progress.report("persist", min(i + chunk_size, total), total)
    return BulkOutcome(inserted, existing, events)


# --- steps (the flow wraps each as a task) ---------------------------------------------------
def classify_range(
    md: MarketData, start: date, end: date, model: RegimeModel, run_id: uuid.UUID
) -> tuple[BackfillPlan, list[RegimeResult], pd.DataFrame]:
    return compute(md, start, end, model=model, run_id=run_id)


def persist_range(
    settings: Settings, results: list[RegimeResult], chunk_size: int, with_events: bool = True
) -> BulkOutcome:
    """Chunks already committed are skipped by a retry (inserts are idempotent)."""
    return persist(get_engine(settings), results, chunk_size=chunk_size, with_events=with_events)


def validation_report(md: MarketData, frame: pd.DataFrame, plan: BackfillPlan) -> ValidationReport:
    labels = frame.loc[pd.Timestamp(plan.start) : pd.Timestamp(plan.end), "regime"]
    return validate_labels(labels, md.market["index_close"])


@dataclass(frozen=True)
class BackfillSteps:
    load_market_data: Callable[[Settings, str, date | None], MarketData]
    classify_range: Callable[
        [MarketData, date, date, RegimeModel, uuid.UUID],
        tuple[BackfillPlan, list[RegimeResult], pd.DataFrame],
    ]
    persist_range: Callable[[Settings, list[RegimeResult], int, bool], BulkOutcome]
    validation_report: Callable[[MarketData, pd.DataFrame, BackfillPlan], ValidationReport]
    publish_run: Callable[[Settings, str, date, bool, Any], str]
    relay_outbox: Callable[[Settings], Awaitable[str]]


def plain_steps() -> BackfillSteps:
    return BackfillSteps(
        load_market_data=steps.load_market_data,
        classify_range=classify_range,
        persist_range=persist_range,
        validation_report=validation_report,
        publish_run=steps.publish_run,
        relay_outbox=steps.relay_outbox,
    )


@dataclass(frozen=True)
class BackfillRequest:
    start: date
    end: date
    chunk_size: int = 1000
    relay: bool = True
    universe: str | None = None
    # None: the served model (BLOASIS_MODEL_VERSION). Another one (`regime-v3` beside a served
    # `regime-v2`) is computed and stored under its own version only: no events, and the
    # served keys are not touched.
    model_version: str | None = None

    def check(self) -> None:
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        if self.start > self.end:
            raise PipelineError(f"--start {self.start} is after --end {self.end}")


async def run_backfill(
    req: BackfillRequest,
    *,
    run_id: uuid.UUID,
    steps: BackfillSteps | None = None,
    reporter: Reporter | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Compute, store, validate and publish the regime of every session in [start, end];
    returns the summary (stored in the run's `pipeline_runs` row) plus `days` and `outcome`."""
    req.check()
    steps = steps or plain_steps()
    reporter = reporter or NullReporter()
    logger = logger or log
    settings = settings or load_settings()
    universe = req.universe or settings.universe
    served = resolve_model(settings.model_version, universe, settings.regime_overrides)
    model = resolve_model(
        req.model_version or settings.model_version, universe, settings.regime_overrides
    )
    shadow = model.version != served.version
    engine = get_engine(settings)
    t0 = time.perf_counter()
    md = steps.load_market_data(settings, universe, req.end).as_of(req.end)
    pipeline.begin_run(
        engine,
        run_id=run_id,
        flow="regime-backfill",
        trigger="backfill",
        as_of=req.end,
        parameters={
            "start": req.start.isoformat(),
            "end": req.end.isoformat(),
            "chunk_size": req.chunk_size,
            "universe": universe,
            "model": model.algorithm,
            "served": not shadow,
            "regime_params": model.params.as_dict(),
        },
        md=md,
        model_version=model.version,
    )
    timings: dict[str, float] = {}
    try:
        t = time.perf_counter()
        plan, results, frame = steps.classify_range(md, req.start, req.end, model, run_id)
        timings["compute_s"] = time.perf_counter() - t
        if plan.note:
            logger.warning(plan.note)
        t = time.perf_counter()
        stored = steps.persist_range(settings, results, req.chunk_size, not shadow)
        timings["persist_s"] = time.perf_counter() - t
        report = steps.validation_report(md, frame, plan)
        outcome = BackfillOutcome(
            plan=plan,
            results=results,
            report=report,
            inserted=stored.inserted,
            existing=stored.existing,
            events=stored.events,
            timings=timings,
        )
        # The regime key switches to the latest stored as-of, like any run's keys.
        if shadow:
            cache_status = f"not published: the served model is {served.version}"
            relay_status = "skipped (no events for a model that is not served)"
        else:
            cache_status = steps.publish_run(settings, model.version, plan.end, False, None)
            relay_status = await steps.relay_outbox(settings) if req.relay else "skipped"
        timings["total_s"] = time.perf_counter() - t0
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
        await reporter.markdown(
            "backfill-validation",
            f"# Regime backfill {plan.start} .. {plan.end}\n\n"
            f"Run `{run_id}`, model `{model.version}`: {plan.sessions} sessions, "
            f"{stored.inserted} inserted, {stored.existing} already stored, "
            f"{stored.events} events queued.\n\n```\n{format_report(report)}\n```\n",
            f"Backfill validation {plan.start}..{plan.end}",
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
            ],
            "outcome": outcome,
        }
    except BaseException as exc:
        pipeline.end_run(engine, run_id, status="failed", timings=timings, error=repr(exc)[:2000])
        raise
