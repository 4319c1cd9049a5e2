"""Scheduled runs in exchange time: holidays and weekends are found by the flow itself."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from sqlalchemy import Engine, func, select

from bloasis.calendar import is_session
from bloasis.store.models import PipelineRun


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (date(2026, 11, 26), False),  # Thanksgiving
        (date(2026, 11, 27), True),  # half day, still a session
        (date(2026, 11, 28), False),  # Saturday
        (date(2026, 12, 25), False),
        (date(2022, 12, 28), True),
    ],
)
def test_nyse_trading_days(d: date, expected: bool) -> None:
    assert is_session(d) is expected


@pytest.mark.prefect
def test_scheduled_run_on_a_holiday_exits_early(
    flow_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.pipeline as fp
    from bloasis import calendar

    monkeypatch.setattr(calendar, "exchange_today", lambda now=None: date(2026, 11, 26))
    out = asyncio.run(fp.daily_pipeline(trigger="baseline"))
    assert out == {"skipped": "2026-11-26 is not a NYSE trading day"}
    with flow_db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(PipelineRun)).scalar() == 0
    # A manual run, or one for a given date, is never skipped.
    assert asyncio.run(fp.daily_pipeline(trigger="manual", strategies=False, relay=False))["regime"]
