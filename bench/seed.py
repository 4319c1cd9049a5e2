"""What the serving benches read: one pipeline run stored the way `daily_pipeline` stores it
(regime, sector analysis, three profile strategies, the demo user's strategy, Redis keys), by
the same plain functions the flow's tasks call, on a small synthetic universe."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from bloasis.config import Settings
    from bloasis.marketdata import MarketData
    from bloasis.regime.model import RegimeModel

UNIVERSE: Final = "synthetic:120:7:4"
DEMO_USER: Final = "test"


@dataclass(frozen=True)
class Seeded:
    universe: str
    model_version: str  # the settings' model version (what the server is configured with)
    resolved_version: str  # the version results are stored under for this universe
    as_of: date
    md: MarketData
    model: RegimeModel


def load(settings: Settings, universe: str = UNIVERSE) -> tuple[MarketData, RegimeModel]:
    from bloasis.pipeline import load_market_data
    from bloasis.regime.model import resolve_model

    return load_market_data(None, universe), resolve_model(
        settings.model_version, universe, settings.regime_overrides
    )


def commit_regime(
    engine: Engine, settings: Settings, md: MarketData, model: RegimeModel, as_of: date
) -> float:
    """The regime step of a run for `as_of`: compute, persist (commit + NOTIFY), Redis keys.
    Returns `time.monotonic()` right after the commit."""
    from bloasis import strategy_run
    from bloasis.pipeline import begin_run, compute_regime, persist_regime

    run_id = uuid.uuid4()
    begin_run(
        engine, run_id=run_id, flow="bench", trigger="manual", as_of=as_of, parameters={},
        md=md, model_version=model.version,
    )  # fmt: skip
    result = compute_regime(md, as_of, trigger="manual", run_id=run_id, model=model)
    persist_regime(engine, result)
    committed = time.monotonic()
    strategy_run.publish_run(
        engine, settings, model_version=model.version, as_of=as_of, with_strategies=False
    )
    return committed


def seed_run(
    engine: Engine, settings: Settings, *, universe: str = UNIVERSE, as_of: date | None = None
) -> Seeded:
    """A full run (regime, tiers, the demo user) for `as_of` (default: the last session)."""
    from bloasis import strategy_run
    from bloasis.pipeline import begin_run, compute_regime, persist_regime
    from bloasis.strategy.types import UserPreferences
    from bloasis.users import ensure_user

    md, model = load(settings, universe)
    as_of = as_of or md.last_date
    ensure_user(engine, UserPreferences(DEMO_USER, "moderate"))
    run_id = uuid.uuid4()
    begin_run(
        engine, run_id=run_id, flow="bench", trigger="manual", as_of=as_of, parameters={},
        md=md, model_version=model.version,
    )  # fmt: skip
    regime = persist_regime(
        engine, compute_regime(md, as_of, trigger="manual", run_id=run_id, model=model)
    ).stored
    tier = strategy_run.compute_and_store_tiers(
        engine, md, regime, run_id=run_id, top_n=settings.top_n
    )
    redis_url = settings.require("redis_url")
    version = strategy_run.users_cache_version(redis_url, run_id, every_user=True)
    job = strategy_run.UsersJob(run_id, model.version, datetime.now(UTC), cache_version=version)
    strategy_run.derive_store_cache(
        engine, tier.books, strategy_run.UserSlice(ids=(DEMO_USER,)), job,
        redis_url=redis_url, ttl=settings.strategy_ttl_seconds,
    )  # fmt: skip
    strategy_run.publish_run(
        engine, settings, model_version=model.version, as_of=as_of, with_strategies=True,
        users_version=version,
    )  # fmt: skip
    return Seeded(universe, settings.model_version, model.version, as_of, md, model)
