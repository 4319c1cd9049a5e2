"""The daily run as a plain service: holiday skip, replay clock, catch-up of missed sessions,
run lock, the steps in order, the run's record and its summary.

One composition, called by the `daily-pipeline` flow (which passes its Prefect task wrappers
and a reporter that writes artifacts), by the benchmarks and the tests (plain steps, no
Prefect). Order of a session's run: load data -> regime (compute, persist with its events) ->
sectors and profile strategies -> users (derived in chunks, fanned out by the caller's
`derive_users`) -> Redis switch -> relay. Everything after a step's commit can fail and be
repaired by the next run; nothing before it is visible to anyone.

Catch-up (live market data only): when the newest complete session is several sessions past
the last one computed, the older ones are computed first, one full run each, **in session
order** (each stored and published once, its events marked historical), then the newest; so
"current" moves to the newest and each event's previous regime is the session before it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

import pandas as pd
from sqlalchemy import Engine

from bloasis import calendar, metrics, pipeline, strategy_run
from bloasis.app import steps
from bloasis.clock import market_now
from bloasis.config import Settings, load_settings, parse_universe
from bloasis.marketdata import MarketData
from bloasis.regime.model import RegimeModel, resolve_model
from bloasis.regime.types import TRIGGERS, RegimeResult
from bloasis.store import regimes
from bloasis.store import strategies as store
from bloasis.store.db import get_engine
from bloasis.strategy.engine import ProfileBook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DailyRequest:
    """What a daily run is asked to do (the flow's parameters).

    `as_of` None: the newest session in the data. `history_days` > 0 first stores any missing
    sessions of that many calendar days before the as-of (a fresh deployment's warm-up).
    `strategies=False` is the regime-only baseline run; `users` recomputes only those users;
    `universe` overrides BLOASIS_MARKET_DATA; `replay` runs the next session of the replay
    clock. `scheduled`: started by a schedule, so a non-trading day is skipped (a run asked
    for by hand always runs)."""

    as_of: date | None = None
    trigger: str = "baseline"
    relay: bool = True
    history_days: int = 0
    strategies: bool = True
    users: list[str] | None = None
    universe: str | None = None
    replay: bool = False
    scheduled: bool = False

    def check(self) -> None:
        if self.history_days < 0:
            raise ValueError(f"history_days must be >= 0, got {self.history_days}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        if self.replay and self.as_of is not None:
            raise ValueError("replay runs pick their own as-of: leave as_of empty")


@dataclass(frozen=True)
class DailySteps:
    """The operations a run calls. `plain_steps()` are the functions of `bloasis.app.steps`;
    the flow passes the same functions wrapped as Prefect tasks, and a `derive_users` that
    submits one task per chunk of users to its task runner (threads or Dask): each chunk
    loads, derives, stores and caches its users, so no process holds them all."""

    load_market_data: Callable[[Settings, str, date | None], MarketData]
    warm_up_history: Callable[
        [Settings, MarketData, date, int, uuid.UUID, RegimeModel], pipeline.BulkOutcome
    ]
    compute_regime: Callable[[MarketData, date, str, uuid.UUID, RegimeModel], RegimeResult]
    persist_regime: Callable[[Settings, RegimeResult, bool], pipeline.PersistOutcome]
    sectors_and_profiles: Callable[
        [Settings, MarketData, RegimeResult, uuid.UUID, bool], strategy_run.TierOutcome
    ]
    user_slices: Callable[[Settings, Sequence[str] | None], list[strategy_run.UserSlice]]
    derive_users: Callable[
        [
            Settings,
            dict[str, ProfileBook],
            list[strategy_run.UserSlice],
            strategy_run.UsersJob,
        ],
        list[strategy_run.UsersOutcome],
    ]
    publish_run: Callable[[Settings, str, date, bool, str | None], str]
    relay_outbox: Callable[[Settings], Awaitable[str]]


def _derive_in_order(
    settings: Settings,
    books: dict[str, ProfileBook],
    parts: list[strategy_run.UserSlice],
    job: strategy_run.UsersJob,
) -> list[strategy_run.UsersOutcome]:
    return [steps.derive_users(settings, books, p, job) for p in parts]


def plain_steps() -> DailySteps:
    return DailySteps(
        load_market_data=steps.load_market_data,
        warm_up_history=steps.warm_up_history,
        compute_regime=steps.compute_regime,
        persist_regime=steps.persist_regime,
        sectors_and_profiles=steps.sectors_and_profiles,
        user_slices=steps.user_slices,
        derive_users=_derive_in_order,
        publish_run=steps.publish_run,
        relay_outbox=steps.relay_outbox,
    )


class Reporter(Protocol):
    """Where a run shows itself besides its log and its `pipeline_runs` row (the flow: run
    name, task names and artifacts in the Prefect UI)."""

    async def resolved(self, as_of: date, *, replay: bool) -> None: ...

    async def markdown(self, key: str, markdown: str, description: str) -> None: ...

    async def picks(self, books: dict[str, ProfileBook], run_id: uuid.UUID) -> None: ...


class NullReporter:
    async def resolved(self, as_of: date, *, replay: bool) -> None:
        return None

    async def markdown(self, key: str, markdown: str, description: str) -> None:
        return None

    async def picks(self, books: dict[str, ProfileBook], run_id: uuid.UUID) -> None:
        return None


# Runs one session of a catch-up (as-of, history days): the flow runs it as a subflow.
SessionRunner = Callable[[date, int], Awaitable[dict[str, Any]]]


def regime_markdown(
    r: RegimeResult,
    *,
    inserted: bool,
    events: int,
    previous: str,
    historical: bool = False,
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
    kind = " (historical: an older session than the newest in the data)" if historical else ""
    return (
        f"# Market regime {r.as_of}: **{r.regime}**{kind}\n\n"
        f"- confidence **{r.confidence:.2f}**, risk level **{r.risk_level}**,"
        f" trigger `{r.trigger}`\n"
        f"- regime of the session before: `{previous or 'none stored'}`; {status};"
        f" events queued: {events}\n"
        f"- model `{r.model_version}`, regime run id `{r.run_id}`,"
        f" computed {r.computed_at:%Y-%m-%d %H:%M:%S} UTC\n\n"
        f"{r.reasoning}\n\n| indicator | value |\n|---|---|\n{rows}\n{links}"
    )


def missed_sessions(
    engine: Engine, model_version: str, sessions: pd.DatetimeIndex, newest: date, *, tiers: bool
) -> list[date]:
    """Sessions of the data strictly between the last one computed (its regime, or with
    `tiers` its profile strategies) and `newest`: what a catch-up computes. Nothing when
    nothing was ever computed (a first run is not a catch-up)."""
    with engine.connect() as conn:
        if tiers:
            last = store.latest_strategy_as_of(conn, model_version)
        else:
            got = regimes.latest_regime(conn, model_version)
            last = got.as_of if got else None
    if last is None or last >= newest:
        return []
    window = sessions[(sessions > pd.Timestamp(last)) & (sessions < pd.Timestamp(newest))]
    return [ts.date() for ts in window]


def _record_failure(
    engine: Engine, run_id: uuid.UUID, timings: dict[str, float], exc: BaseException
) -> None:
    """Best effort: when PostgreSQL is what failed, the row stays `running` and the next run of
    this as-of marks it failed (`pipeline.abandon_stale_runs`); the run's own error wins."""
    try:
        pipeline.end_run(engine, run_id, status="failed", timings=timings, error=repr(exc)[:2000])
    except Exception as rec:
        log.warning("could not record run %s as failed (%s); the next run of this as-of will",
                    run_id, rec)  # fmt: skip


async def run_daily(
    req: DailyRequest,
    *,
    run_id: uuid.UUID,
    steps: DailySteps | None = None,
    reporter: Reporter | None = None,
    run_session: SessionRunner | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    now: datetime | None = None,
    flow: str = "daily-pipeline",
    settings: Settings | None = None,
) -> dict[str, Any]:
    """One daily run (see the module docstring); returns its summary, also stored in its
    `pipeline_runs` row. `run_session` runs one missed session of a catch-up (default: this
    function again, with plain steps)."""
    req.check()
    steps = steps or plain_steps()
    reporter = reporter or NullReporter()
    logger = logger or log
    settings = settings or load_settings()
    if req.scheduled and req.trigger == "baseline" and req.as_of is None and req.strategies \
            and not req.replay:  # fmt: skip
        today = calendar.exchange_today(now or market_now(settings))
        if not calendar.is_session(today):
            # The scheduled daily run fires on weekdays; holidays are found here.
            why = f"{today.isoformat()} is not a NYSE trading day"
            logger.info("%s: nothing to do", why)
            await reporter.markdown(
                "regime-summary", f"# Skipped\n\n{why}: the scheduled run does nothing today.", why
            )
            return {"skipped": why}
    if req.replay and settings.replay_start is None:
        raise ValueError("a replay run needs BLOASIS_REPLAY_START (e.g. 2007-06-01)")
    universe = req.universe or settings.universe
    live = parse_universe(universe)[0] == "live"
    model = resolve_model(settings.model_version, universe, settings.regime_overrides)
    engine = get_engine(settings)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # An older session of the point-in-time store is read as it was known at its cut-off
    # (revisions seen later stay out), so its result is the one a run on that day made.
    newest_live = pipeline.newest_live_session(settings) if live and req.as_of else None
    end = req.as_of if newest_live and req.as_of and req.as_of < newest_live else None
    md = steps.load_market_data(settings, universe, end)
    newest = newest_live or md.last_date  # for live data: the newest complete session stored
    as_of = req.as_of
    if req.replay:
        assert settings.replay_start is not None  # checked above, before the load
        as_of = pipeline.replay_as_of(
            engine, md, model.version, settings.replay_start, settings.replay_end
        )
        logger.info("replay clock: %s", as_of.isoformat())
    resolved = pipeline.resolve_as_of(md, as_of)
    # A replay walks history as if live; anything else older than the newest session is
    # history being filled in: its events say so and it raises no live alert.
    historical = resolved < newest and not req.replay
    timings["load_s"] = time.perf_counter() - t0

    caught_up: list[dict[str, Any]] = []
    if live and req.as_of is None and not req.replay:
        missed = missed_sessions(engine, model.version, md.index, resolved, tiers=req.strategies)
        if missed:
            caught_up = await _catch_up(
                req, missed, settings, steps, reporter, run_session, logger, now
            )
    md = md.as_of(resolved)  # point in time: nothing after the as-of reaches the run
    await reporter.resolved(resolved, replay=req.replay)
    params = {
        "as_of": resolved.isoformat(),
        "trigger": req.trigger,
        "relay": req.relay,
        "history_days": req.history_days,
        "strategies": req.strategies,
        "users": req.users,
        "universe": universe,
        "replay": req.replay,
        "historical": historical,
        "newest_session": newest.isoformat(),
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
            flow=flow,
            trigger=req.trigger,
            as_of=resolved,
            parameters=params,
            md=md,
            model_version=model.version,
        )
        try:
            summary = await _session(
                req, settings, engine, steps, reporter, logger, md, resolved, historical,
                model, run_id, timings, flow,
            )  # fmt: skip
            summary["historical"] = historical
            summary["newest_session"] = newest.isoformat()
            if caught_up:
                summary["caught_up"] = [c.get("as_of") for c in caught_up]
            timings["total_s"] = time.perf_counter() - t0
            pipeline.end_run(engine, run_id, status="completed", timings=timings, result=summary)
            return summary
        except BaseException as exc:
            _record_failure(engine, run_id, timings, exc)
            raise


async def _catch_up(
    req: DailyRequest,
    missed: list[date],
    settings: Settings,
    steps: DailySteps,
    reporter: Reporter,
    run_session: SessionRunner | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    now: datetime | None,
) -> list[dict[str, Any]]:
    """Compute the missed sessions in order before the newest one. Beyond
    BLOASIS_CATCH_UP_MAX_SESSIONS, the oldest get the regime only (a vectorised pass done by
    the first full session's warm-up), so a long outage cannot stall the schedule."""
    cap = settings.catch_up_max_sessions
    full = missed[-cap:]
    warm_days = (full[0] - missed[0]).days if len(missed) > cap else 0
    logger.warning(
        "catching up %d missed session(s) %s..%s before %s%s",
        len(missed),
        missed[0],
        missed[-1],
        "the newest",
        f" ({len(missed) - cap} oldest: regime only)" if warm_days else "",
    )

    async def plain(d: date, history_days: int) -> dict[str, Any]:
        one = dataclasses.replace(
            req, as_of=d, history_days=history_days, relay=False, users=None, scheduled=False
        )
        return await run_daily(
            one,
            run_id=uuid.uuid4(),
            steps=steps,
            reporter=reporter,
            logger=logger,
            now=now,
            settings=settings,
        )

    runner = run_session or plain
    out = []
    for i, d in enumerate(full):
        out.append(await runner(d, warm_days if i == 0 else 0))
    return out


async def _session(
    req: DailyRequest,
    settings: Settings,
    engine: Engine,
    steps: DailySteps,
    reporter: Reporter,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    md: MarketData,
    resolved: date,
    historical: bool,
    model: RegimeModel,
    run_id: uuid.UUID,
    timings: dict[str, float],
    flow: str,
) -> dict[str, Any]:
    """The steps of one session's run, under its run lock, after its `pipeline_runs` row."""
    # Under the lock, other `running` rows of this as-of are runs that died unrecorded.
    abandoned = pipeline.abandon_stale_runs(
        engine, run_id=run_id, flow=flow, model_version=model.version, as_of=resolved
    )
    if abandoned:
        shown = ", ".join(map(str, abandoned))
        logger.warning("earlier runs of %s marked failed (abandoned): %s", resolved, shown)
    warm = pipeline.BulkOutcome(0, 0, 0)
    if req.history_days:
        t = time.perf_counter()
        warm = steps.warm_up_history(settings, md, resolved, req.history_days, run_id, model)
        timings["history_s"] = time.perf_counter() - t
        logger.info(
            "history: %d sessions stored, %d already there, %d events",
            warm.inserted,
            warm.existing,
            warm.events,
        )
    t = time.perf_counter()
    result = steps.compute_regime(md, resolved, req.trigger, run_id, model)
    timings["compute_s"] = time.perf_counter() - t
    t = time.perf_counter()
    outcome = steps.persist_regime(settings, result, historical)
    timings["persist_s"] = time.perf_counter() - t
    stored = outcome.stored
    prev = outcome.previous.regime if outcome.previous else ""
    logger.info(
        "regime %s for %s (confidence %.2f, risk %s)%s%s",
        stored.regime,
        stored.as_of,
        stored.confidence,
        stored.risk_level,
        " [historical]" if historical else "",
        "" if outcome.inserted else " — already stored, nothing written",
    )
    tier_info: dict[str, Any] = {}
    users_version: str | None = None
    if req.strategies:
        t = time.perf_counter()
        tier = steps.sectors_and_profiles(settings, md, stored, run_id, historical)
        timings["tiers_s"] = time.perf_counter() - t
        for profile, why in tier.optimiser_fallbacks.items():
            logger.warning(
                "%s: the optimiser fell back to volatility-targeted weights (%s): %s",
                profile, why["kind"], why["note"],
            )  # fmt: skip
            metrics.OPTIMISER_FALLBACKS.labels(profile, why["kind"]).inc()
        t = time.perf_counter()
        parts = steps.user_slices(settings, req.users)
        if parts and tier.stale_books:
            # Serving expands users with the stored books; deriving them from different
            # recomputed ones would store strategies that cannot be expanded.
            raise pipeline.PipelineError(
                f"the profile strategies stored for {stored.as_of} differ from the ones "
                "recomputed from today's data (revised since they were computed), so users "
                "cannot be derived consistently with what is served: "
                + "; ".join(f"{p}: {why}" for p, why in sorted(tier.stale_books.items()))
                + ". Recompute the session under a new model version, or restore the data."
            )
        # An older session than the current one is stored, not cached: current keys stay.
        current = strategy_run.is_current(engine, model.version, stored.as_of)
        redis_url = settings.value_of("redis_url")
        users_version = strategy_run.users_cache_version(
            redis_url, run_id, every_user=req.users is None
        ) if current else None  # fmt: skip
        cached_here = current and redis_url is not None  # where every key is due
        job = strategy_run.UsersJob(
            run_id=run_id,
            model_version=model.version,
            computed_at=datetime.now(UTC),
            historical=historical,
            cache_version=users_version,
            symbol_events=settings.user_symbol_events,
        )
        users_out = strategy_run.UsersOutcome.total(
            steps.derive_users(settings, tier.books, parts, job)
        )
        timings["users_s"] = time.perf_counter() - t
        timings |= {f"users_{k}": v for k, v in users_out.timings.items()}
        if cached_here and users_out.cached < users_out.users:
            logger.warning(
                "%d user keys not written to Redis (readers use PostgreSQL for them): %s",
                users_out.users - users_out.cached,
                users_out.cache_errors[0] if users_out.cache_errors else "Redis unavailable",
            )
        await reporter.picks(tier.books, run_id)
        tier_info = {
            "sectors_selected": list(tier.analysis.selected),
            "strategies": {p: b.strategy.strategy_id for p, b in tier.books.items()},
            "strategies_inserted": tier.strategies_inserted,
            "users": users_out.users,
            "user_strategies_written": users_out.written,
            "user_events_queued": users_out.events,
            "user_chunks": len(parts),
            "user_keys_cached": users_out.cached,
            # Never silent: Redis failing for some chunks (their users read from PostgreSQL).
            "user_keys_missing": users_out.users - users_out.cached if cached_here else 0,
            # One per signal, as the original executor consumes them (profiles and users).
            "signal_events_queued": tier.signal_events + users_out.signal_events,
            # Never silent: `bloasis status` shows it from the run's stored result.
            "optimiser_fallbacks": tier.optimiser_fallbacks,
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
    cache_status = steps.publish_run(settings, model.version, stored.as_of, req.strategies,
                                     users_version)  # fmt: skip
    timings["cache_s"] = time.perf_counter() - t
    relay_status = "skipped"
    if req.relay:
        t = time.perf_counter()
        relay_status = await steps.relay_outbox(settings)
        timings["relay_s"] = time.perf_counter() - t
    logger.info("cache: %s; relay: %s", cache_status, relay_status)
    await reporter.markdown(
        "regime-summary",
        regime_markdown(
            stored,
            inserted=outcome.inserted,
            events=outcome.events,
            previous=prev,
            historical=historical,
            strategies=tier_info.get("strategies"),
        ),
        f"Regime {stored.as_of}: {stored.regime}",
    )
    return {
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
