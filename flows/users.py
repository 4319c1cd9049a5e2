"""User strategies on demand: recompute the given users (or all) for the latest stored date,
e.g. right after preference updates instead of waiting for the next daily run."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow

from flows.pipeline import daily_pipeline


@flow(name="user-strategies", flow_run_name="user-strategies-{as_of}")
async def user_strategies(
    users: list[str] | None = None, as_of: date | None = None
) -> dict[str, Any]:
    """The daily pipeline as a subflow, restricted to `users`: the regime, sectors and profile
    strategies of that date are already stored (idempotent, nothing rewritten); only users
    whose preferences changed since their strategy was computed get a new one and an event."""
    return await daily_pipeline(as_of=as_of, trigger="manual", users=users)
