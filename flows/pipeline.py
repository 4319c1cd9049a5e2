"""The daily pipeline flow: `bloasis.app.daily.run_daily` with Prefect tasks, artifacts and
catch-up sessions as subflows (regime -> sectors -> strategies -> users -> publish)."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from bloasis.app.daily import DailyRequest, DailySteps, run_daily
from bloasis.config import load_settings
from flows.common import PrefectReporter, flow_run_id, one_api_client
from tasks.publish import relay_outbox
from tasks.regime import compute_regime, load_market_data, persist_regime, warm_up_history
from tasks.strategy import (
    derive_all,
    publish_run,
    sectors_and_profiles,
    task_runner_for,
    user_slices,
)

FLOW_STEPS = DailySteps(
    load_market_data=load_market_data,
    warm_up_history=warm_up_history,
    compute_regime=compute_regime,
    persist_regime=persist_regime,
    sectors_and_profiles=sectors_and_profiles,
    user_slices=user_slices,
    derive_users=derive_all,
    publish_run=publish_run,
    relay_outbox=relay_outbox,
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
    (default: the newest session in the data; with live data, missed sessions first, each a
    subflow run, in order). See `bloasis.app.daily.DailyRequest` for the parameters."""
    req = DailyRequest(
        as_of=as_of,
        trigger=trigger,
        relay=relay,
        history_days=history_days,
        strategies=strategies,
        users=users,
        universe=universe,
        replay=replay,
        scheduled=_scheduled(),
    )

    async def session(d: date, days: int) -> dict[str, Any]:
        # A missed session of a catch-up: its own run (and pipeline_runs row) in the UI.
        return await daily_pipeline(
            as_of=d,
            trigger=trigger,
            relay=False,
            history_days=days,
            strategies=strategies,
            universe=universe,
        )

    return await run_daily(
        req,
        run_id=flow_run_id(),
        steps=FLOW_STEPS,
        reporter=PrefectReporter(),
        run_session=session,
        logger=get_run_logger(),
    )
