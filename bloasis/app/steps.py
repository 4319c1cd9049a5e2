"""The steps of a pipeline run as plain functions taking settings (no Prefect here).

`tasks/` turns each of them into a Prefect task (`task(...)(steps.persist_regime)`), so a flow
and a plain run call exactly the same code; the run services (`bloasis.app.daily`,
`bloasis.app.backfill`) compose them. Settings rather than engines in the signatures: a step
may run on a Dask worker, which builds its own connections from them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING

from bloasis import pipeline, strategy_run
from bloasis.config import Settings
from bloasis.marketdata import MarketData
from bloasis.publish.kafka_options import client_options
from bloasis.publish.relay import RelayError, RelayStats, relay_pending
from bloasis.regime.model import RegimeModel
from bloasis.regime.types import RegimeResult
from bloasis.store.db import get_engine
from bloasis.strategy.engine import ProfileBook

if TYPE_CHECKING:
    from bloasis.app.ingest import IngestOutcome

log = logging.getLogger(__name__)


def load_market_data(settings: Settings, universe: str, end: date | None = None) -> MarketData:
    """What the source has up to `end` (default: its newest usable session; for the live
    store, the newest session complete at this moment, read as known now; with `end`, as known
    at that session's cut-off: see `pipeline.load_market_data_with_issues`)."""
    md, issues = pipeline.load_market_data_with_issues(end, universe, settings=settings)
    if issues:
        shown = "; ".join(f"{i.symbol} {i.date} {i.rule}" for i in issues[:10])
        more = f" and {len(issues) - 10} more" if len(issues) > 10 else ""
        log.warning("quarantined %d bad rows: %s%s", len(issues), shown, more)
    return md


def compute_regime(
    md: MarketData, as_of: date, trigger: str, run_id: uuid.UUID, model: RegimeModel
) -> RegimeResult:
    return pipeline.compute_regime(md, as_of, trigger=trigger, run_id=run_id, model=model)


def persist_regime(
    settings: Settings, result: RegimeResult, historical: bool = False
) -> pipeline.PersistOutcome:
    return pipeline.persist_regime(get_engine(settings), result, historical=historical)


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


def sectors_and_profiles(
    settings: Settings,
    md: MarketData,
    regime: RegimeResult,
    run_id: uuid.UUID,
    historical: bool = False,
) -> strategy_run.TierOutcome:
    out = strategy_run.compute_and_store_tiers(
        get_engine(settings),
        md,
        regime,
        run_id=run_id,
        top_n=settings.top_n,
        min_history=settings.min_history_sessions,
        quarantine=settings.quarantine,
        historical=historical,
    )
    if out.quarantined:
        log.warning(
            "left out %d symbols: %s",
            len(out.quarantined),
            "; ".join(str(i) for i in out.quarantined[:10]),
        )
    return out


def user_slices(settings: Settings, user_ids: Sequence[str] | None) -> list[strategy_run.UserSlice]:
    return strategy_run.user_slices(get_engine(settings), user_ids, settings.user_chunk_size)


def derive_users(
    settings: Settings,
    books: dict[str, ProfileBook],
    part: strategy_run.UserSlice,
    job: strategy_run.UsersJob,
) -> strategy_run.UsersOutcome:
    """One chunk of users: loaded, derived, stored and cached where this runs (a Dask worker
    builds its own connections from the settings); only its counts come back."""
    return strategy_run.derive_store_cache(
        get_engine(settings),
        books,
        part,
        job,
        redis_url=settings.value_of("redis_url"),
        ttl=settings.strategy_ttl_seconds,
    )


def publish_run(
    settings: Settings,
    model_version: str,
    as_of: date,
    with_strategies: bool,
    users_version: str | None = None,
) -> str:
    return strategy_run.publish_run(
        get_engine(settings),
        settings,
        model_version=model_version,
        as_of=as_of,
        with_strategies=with_strategies,
        users_version=users_version,
    )


async def relay_now(
    settings: Settings, *, max_events: int | None = None, own_process: bool = False
) -> RelayStats:
    """Publish pending outbox events (the relay's own retry policy applies: `relay_pending`)."""
    return await relay_pending(
        get_engine(settings),
        settings.require("kafka_bootstrap_servers"),
        idempotence=settings.kafka_idempotence,
        batch_size=settings.relay_batch_size,
        max_events=max_events,
        options=client_options(settings),
        own_process=own_process,
    )


def run_relay(
    settings: Settings, *, max_events: int | None = None, own_process: bool = False
) -> RelayStats:
    """`relay_now` for callers without an event loop (the CLI: `own_process`)."""
    return asyncio.run(relay_now(settings, max_events=max_events, own_process=own_process))


async def relay_outbox(settings: Settings) -> str:
    """Publish pending events; a broker outage leaves them in the outbox for the next relay."""
    try:
        stats = await relay_now(settings)
    except RelayError as exc:
        log.warning("events stay in the outbox: %s", exc)
        return f"broker unavailable, events pending ({exc})"
    return f"published {stats.published} events, {stats.pending} pending"


def ingest_market_data(
    settings: Settings, since: date | None = None, providers: tuple[str, ...] | None = None
) -> IngestOutcome:
    """Live providers -> the point-in-time store (`bloasis.app.ingest.run_ingest`)."""
    from bloasis.app import ingest

    req = ingest.IngestRequest(since=since, providers=providers)
    return ingest.run_ingest(settings, req)
