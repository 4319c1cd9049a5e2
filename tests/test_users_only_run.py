"""A users-only run (`bloasis run --users`, v1 RunAIAnalysis) on a session already stored derives
users from books recomputed from today's data, while serving expands them with the stored books.
When the two differ (data revised since), the run must refuse, not store strategies that cannot
be expanded ("X is not in the book of ...")."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from bloasis.app.daily import DailyRequest, run_daily
from bloasis.config import Settings
from bloasis.pipeline import PipelineError
from bloasis.store import strategies as store
from bloasis.store.db import get_engine
from bloasis.strategy.compact import expand
from bloasis.users import random_population, seed_population


def _expand(engine: Engine, mv: str, user_id: str) -> None:
    """Serving's expansion of the user's stored strategy with the stored profile book."""
    with engine.connect() as conn:
        rec = store.get_user_strategy(conn, mv, user_id, None)
        assert rec is not None
        profile = rec.profile_strategy_id.split(":", 1)[0]
        got = store.get_profile_strategy(conn, mv, profile, rec.as_of)
    assert got is not None
    strategy, book, _ = got
    expand(
        strategy_id=f"user:{user_id}",
        user_id=user_id,
        positions=rec.positions,
        cash_weight=rec.cash_weight,
        profile=strategy,
        book=book,
    )


def test_users_only_run_refuses_when_the_stored_books_differ(stack_settings: Settings) -> None:
    s = stack_settings.model_copy(
        update={"model_version": f"regime-v2-usersonly-{uuid.uuid4().hex[:8]}"}
    )
    engine = get_engine(s)
    mv = s.model_version
    people = random_population(4, seed=3, prefix=f"uo-{uuid.uuid4().hex[:6]}-")
    seed_population(engine, people)
    first = asyncio.run(run_daily(DailyRequest(relay=False), run_id=uuid.uuid4(), settings=s))
    assert first["user_strategies_written"] >= 4
    user = people[0]

    # Same data again: the stored books equal the recomputed ones, the run goes through.
    again = asyncio.run(
        run_daily(DailyRequest(users=[user.user_id], relay=False), run_id=uuid.uuid4(), settings=s)
    )
    assert again["users"] == 1 and again["user_strategies_written"] == 0
    _expand(engine, mv, user.user_id)

    # The stored book of the user's profile loses its best candidates (as if the data had been
    # revised since it was computed). The user's preferences change, so they are recomputed.
    with engine.begin() as conn:
        n = conn.execute(
            text(
                "UPDATE strategies SET book = book - 0 - 0 - 0 "
                "WHERE model_version = :m AND risk_profile = :p"
            ),
            {"m": mv, "p": user.risk_profile},
        ).rowcount
        assert n == 1
        store.upsert_preferences(conn, replace(user, max_single_position=Decimal("0.07")))
    with pytest.raises(PipelineError) as err:
        asyncio.run(
            run_daily(
                DailyRequest(users=[user.user_id], relay=False), run_id=uuid.uuid4(), settings=s
            )
        )
    msg = str(err.value)
    assert f"{user.risk_profile}: symbols only in the recomputed one" in msg
    assert "cannot be derived consistently" in msg
    # Nothing was stored for the user: the record is the one computed before.
    with engine.connect() as conn:
        rec = store.get_user_strategy(conn, mv, user.user_id, None)
    assert rec is not None and rec.preferences_version == 1
    with engine.connect() as conn:
        status = conn.execute(
            text(
                "SELECT status FROM pipeline_runs WHERE model_version = :m "
                "ORDER BY started_at DESC LIMIT 1"
            ),
            {"m": mv},
        ).scalar_one()
    assert status == "failed"
