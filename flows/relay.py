"""The outbox relay as its own flow: publish what is pending, mark it published."""

from __future__ import annotations

from prefect import flow, get_run_logger

from bloasis.app.steps import relay_now
from bloasis.config import load_settings


# No flow retries: `relay_pending` is the relay's one retry layer (3 attempts with backoff);
# retrying the flow as well would multiply them (up to 9). A relay that gives up leaves the
# events in the outbox for the next scheduled run.
@flow(name="outbox-relay", retries=0)
async def outbox_relay(max_events: int | None = None) -> dict[str, float]:
    stats = await relay_now(load_settings(), max_events=max_events)
    get_run_logger().info(
        "published %d events in %d batches (%.2fs), %d pending",
        stats.published,
        stats.batches,
        stats.seconds,
        stats.pending,
    )
    return {"published": stats.published, "pending": stats.pending, "seconds": stats.seconds}
