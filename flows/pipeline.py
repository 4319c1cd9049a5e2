"""The daily pipeline flow: regime -> (sectors -> strategies, later issues) -> publish."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from sqlalchemy import Engine

from bloasis import pipeline, strategy_run
from bloasis.config import load_settings, parse_universe
from bloasis.regime.model import resolve_model
from bloasis.regime.types import TRIGGERS, RegimeResult
from bloasis.store.db import get_engine
from flows.common import one_api_client
from tasks.common import set_run_as_of
from tasks.publish import relay_outbox
from tasks.regime import compute_regime, load_market_data, persist_regime, warm_up_history
from tasks.strategy import (
    derive_users,
    load_users,
    picks_artifacts,
    publish_run,
    sectors_and_profiles,
    store_users,
    task_runner_for,
)


def _run_name() -> str:
    as_of = flow_run.parameters.get("as_of")
    return f"pipeline-{as_of or 'latest'}"


def _scheduled() -> bool:
    """Started by a schedule (or called directly as the baseline), not a deployment run that an
    operator asked for now (`prefect deployment run`, the UI's "Run"): those always run."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.flow_run.deployment_id is None:
        return True
    return bool(ctx.flow_run.auto_scheduled)


def regime_markdown(
    r: RegimeResult,
    *,
    inserted: bool,
    events: int,
    previous: str,
    strategies: dict[str, str] | None = None,
) -> str:
    ind = r.indicators
    rows = "\n".join(f"| {k} | {'' if v is None else v} |" for k, v in ind.items())
    links = ""
    if strategies:
        # Run -> regime -> strategies: the ids to look up in gRPC (GetStrategy), Redis and Kafka.
        links = "\n## Strategies of this run\n\n| profile | strategy id | picks artifact |\n" \
            "|---|---|---|\n" + "".join(
                f"| {p} | `{sid}` | picks-{p} |\n" for p, sid in strategies.items()
            )  # fmt: skip
    status = "new result" if inserted else "already stored (rerun: nothing written)"
    return (
        f"# Market regime {r.as_of}: **{r.regime}**\n\n"
        f"- confidence **{r.confidence:.2f}**, risk level **{r.risk_level}**,"
        f" trigger `{r.trigger}`\n"
        f"- previous persisted regime: `{previous or 'none'}`; {status}; events queued: {events}\n"
        f"- model `{r.model_version}`, regime run id `{r.run_id}`,"
        f" computed {r.computed_at:%Y-%m-%d %H:%M:%S} UTC\n\n"
        f"{r.reasoning}\n\n| indicator | value |\n|---|---|\n{rows}\n{links}"
    )


def _record_failure(
    engine: Engine, run_id: uuid.UUID, timings: dict[str, float], exc: BaseException
) -> None:
    """Best effort: when PostgreSQL is what failed, the row stays `running` and the next run of
    this as-of marks it failed (`pipeline.abandon_stale_runs`); the run's own error wins."""
    try:
        pipeline.end_run(engine, run_id, status="failed", timings=timings, error=repr(exc)[:2000])
    except Exception as rec:
        get_run_logger().warning(
            "could not record run %s as failed (%s); the next run of this as-of will", run_id, rec
        )


@flow(
    name="daily-pipeline",
    flow_run_name=_run_name,
    retries=0,
    task_runner=task_runner_for(load_settings()),
)
@one_api_client
async def daily_pipeline(
    as_of: date | None = None,
    trigger: str = "baseline",
    relay: bool = True,
    history_days: int = 0,
    strategies: bool = True,
    users: list[str] | None = None,
    universe: str | None = None,
    replay: bool = False,
) -> dict[str, Any]:
    """Regime -> sectors -> profile strategies -> user strategies -> publish, for `as_of`
    (default: the latest session in the data).

    `history_days` > 0 first stores any missing sessions of that many calendar days before
    `as_of` (a fresh deployment's warm-up), so the as-of result is judged against them.
    `strategies=False` is the regime-only baseline run; `users` recomputes only those users;
    `universe` overrides BLOASIS_UNIVERSE (e.g. synthetic:500:7). `replay` runs the next session
    of the replay clock (BLOASIS_REPLAY_START..BLOASIS_REPLAY_END), one per run."""
    if history_days < 0:
        raise ValueError(f"history_days must be >= 0, got {history_days}")
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
    logger = get_run_logger()
    if replay and as_of is not None:
        raise ValueError("replay runs pick their own as-of: leave as_of empty")
    if trigger == "baseline" and as_of is None and strategies and not replay and _scheduled():
        today = pipeline.exchange_today()
        if not pipeline.is_trading_day(today):
            # The scheduled daily run fires on weekdays; holidays are found here.
            why = f"{today.isoformat()} is not a NYSE trading day"
            logger.info("%s: nothing to do", why)
            await acreate_markdown_artifact(
                key="regime-summary",
                markdown=f"# Skipped\n\n{why}: the scheduled run does nothing today.",
                description=why,
            )
            return {"skipped": why}
    settings = load_settings()
    if replay and settings.replay_start is None:
        raise ValueError("a replay run needs BLOASIS_REPLAY_START (e.g. 2007-06-01)")
    universe = universe or settings.universe
    parse_universe(universe)
    model = resolve_model(settings.model_version, universe)
    engine = get_engine(settings)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    md = load_market_data(as_of, universe, settings.quarantine)
    if replay:
        assert settings.replay_start is not None  # checked above, before the load
        as_of = pipeline.replay_as_of(
            engine, md, model.version, settings.replay_start, settings.replay_end
        )
        logger.info("replay clock: %s", as_of.isoformat())
        md = md.as_of(as_of)  # point in time, as a run on that day would have seen it
    resolved = pipeline.resolve_as_of(md, as_of)
    set_run_as_of(resolved)
    timings["load_s"] = time.perf_counter() - t0
    # The Prefect flow run id is the pipeline run id: the UI and the database share one key.
    run_id = uuid.UUID(str(flow_run.id)) if flow_run.id else uuid.uuid4()
    if (as_of is None or replay) and flow_run.id:
        # Named "pipeline-latest" at start; the UI should show the date it resolved to.
        async with get_client() as client:
            name = f"{'replay' if replay else 'pipeline'}-{resolved.isoformat()}"
            await client.update_flow_run(flow_run.id, name=name)
    params = {
        "as_of": resolved.isoformat(),
        "trigger": trigger,
        "relay": relay,
        "history_days": history_days,
        "strategies": strategies,
        "users": users,
        "universe": universe,
        "replay": replay,
        "regime_params": model.params.as_dict(),
    }
    # One run per (model version, as-of) writes at a time; a second one waits here and then
    # finds every step stored (a no-op rerun). See pipeline.run_lock.
    with pipeline.run_lock(
        engine, model.version, resolved, timeout_s=settings.run_lock_timeout_seconds
    ) as waited:
        timings["lock_wait_s"] = waited
        pipeline.begin_run(
            engine,
            run_id=run_id,
            flow="daily-pipeline",
            trigger=trigger,
            as_of=resolved,
            parameters=params,
            md=md,
            model_version=model.version,
        )
        try:
            # Under the lock, other `running` rows of this as-of are runs that died unrecorded.
            abandoned = pipeline.abandon_stale_runs(
                engine,
                run_id=run_id,
                flow="daily-pipeline",
                model_version=model.version,
                as_of=resolved,
            )
            if abandoned:
                shown = ", ".join(map(str, abandoned))
                logger.warning("earlier runs of %s marked failed (abandoned): %s", resolved, shown)
            warm = pipeline.BulkOutcome(0, 0, 0)
            if history_days:
                t = time.perf_counter()
                warm = warm_up_history(settings, md, resolved, history_days, run_id, model)
                timings["history_s"] = time.perf_counter() - t
                logger.info(
                    "history: %d sessions stored, %d already there, %d events",
                    warm.inserted,
                    warm.existing,
                    warm.events,
                )
            t = time.perf_counter()
            result = compute_regime(md, resolved, trigger, run_id, model)
            timings["compute_s"] = time.perf_counter() - t
            t = time.perf_counter()
            outcome = persist_regime(settings, result)
            timings["persist_s"] = time.perf_counter() - t
            stored = outcome.stored
            prev = outcome.previous.regime if outcome.previous else ""
            logger.info(
                "regime %s for %s (confidence %.2f, risk %s)%s",
                stored.regime,
                stored.as_of,
                stored.confidence,
                stored.risk_level,
                "" if outcome.inserted else " — already stored, nothing written",
            )
            tier_info: dict[str, Any] = {}
            users_out = None
            if strategies:
                t = time.perf_counter()
                tier = sectors_and_profiles(settings, md, stored, run_id)
                timings["tiers_s"] = time.perf_counter() - t
                t = time.perf_counter()
                prefs = load_users(settings, users)
                at = datetime.now(UTC)
                futures = [
                    derive_users.submit(tier.books, chunk, run_id, model.version, at)
                    for chunk in strategy_run.chunks_of(prefs, settings.user_chunk_size)
                ]
                users_out = store_users(settings, [f.result() for f in futures])
                timings["users_s"] = time.perf_counter() - t
                timings |= {f"users_{k}": v for k, v in users_out.timings.items()}
                await picks_artifacts(tier.books, run_id)
                tier_info = {
                    "sectors_selected": list(tier.analysis.selected),
                    "strategies": {p: b.strategy.strategy_id for p, b in tier.books.items()},
                    "strategies_inserted": tier.strategies_inserted,
                    "users": users_out.users,
                    "user_strategies_written": users_out.written,
                    "user_events_queued": users_out.events,
                }
                logger.info(
                    "sectors %s; %d profile strategies stored; %d users, %d written, %d events",
                    ", ".join(tier.analysis.selected),
                    tier.strategies_inserted,
                    users_out.users,
                    users_out.written,
                    users_out.events,
                )
            t = time.perf_counter()
            cache_status = publish_run(settings, model.version, stored.as_of, strategies, users_out)
            timings["cache_s"] = time.perf_counter() - t
            relay_status = "skipped"
            if relay:
                t = time.perf_counter()
                relay_status = await relay_outbox(settings)
                timings["relay_s"] = time.perf_counter() - t
            logger.info("cache: %s; relay: %s", cache_status, relay_status)
            await acreate_markdown_artifact(
                key="regime-summary",
                markdown=regime_markdown(
                    stored,
                    inserted=outcome.inserted,
                    events=outcome.events,
                    previous=prev,
                    strategies=tier_info.get("strategies"),
                ),
                description=f"Regime {stored.as_of}: {stored.regime}",
            )
            summary: dict[str, Any] = {
                "as_of": stored.as_of.isoformat(),
                "regime": stored.regime,
                "confidence": stored.confidence,
                "risk_level": stored.risk_level,
                "trigger": stored.trigger,
                "reasoning": stored.reasoning,
                "run_id": str(run_id),
                "regime_run_id": str(stored.run_id),
                "inserted": outcome.inserted,
                "previous_regime": prev,
                "events_queued": outcome.events,
                "history_inserted": warm.inserted,
                "abandoned_runs": [str(a) for a in abandoned],
                **tier_info,
                "cache": cache_status,
                "relay": relay_status,
            }
            timings["total_s"] = time.perf_counter() - t0
            pipeline.end_run(engine, run_id, status="completed", timings=timings, result=summary)
            return summary
        except BaseException as exc:
            _record_failure(engine, run_id, timings, exc)
            raise
