"""Publishing tasks: the Redis cache and the outbox relay. Both run after the commit, so a
failure here delays what readers see; it never loses or corrupts a result."""

from __future__ import annotations

import asyncio

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bloasis.config import Settings
from bloasis.publish.kafka_options import client_options
from bloasis.publish.relay import RelayError, RelayStats, relay_pending
from bloasis.store.db import get_engine
from tasks.common import named


async def relay_now(settings: Settings, *, max_events: int | None = None) -> RelayStats:
    return await relay_pending(
        get_engine(settings),
        settings.require("kafka_bootstrap_servers"),
        idempotence=settings.kafka_idempotence,
        batch_size=settings.relay_batch_size,
        max_events=max_events,
        options=client_options(settings),
    )


def run_relay(settings: Settings, *, max_events: int | None = None) -> RelayStats:
    """`relay_now` for callers without an event loop (the CLI)."""
    return asyncio.run(relay_now(settings, max_events=max_events))


@task(name="relay-outbox", cache_policy=NO_CACHE, task_run_name=named("relay-outbox"))
async def relay_outbox(settings: Settings) -> str:
    """Publish pending events; a broker outage leaves them in the outbox for the next relay."""
    try:
        stats = await relay_now(settings)
    except RelayError as exc:
        get_run_logger().warning("events stay in the outbox: %s", exc)
        return f"broker unavailable, events pending ({exc})"
    return f"published {stats.published} events, {stats.pending} pending"
