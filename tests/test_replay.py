"""Replay mode: the replay clock walks history one trading day per run (issue 6, item 3)."""

from __future__ import annotations

import asyncio
from datetime import date

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from bloasis.config import SettingsError, load_settings
from bloasis.marketdata import nyse_sessions
from bloasis.pipeline import PipelineError, next_replay_session
from bloasis.store.models import PipelineRun

SESSIONS = pd.DatetimeIndex(nyse_sessions(date(2007, 1, 1), date(2009, 12, 31)))


def test_replay_clock_starts_at_the_first_session_on_or_after_start() -> None:
    # 2007-06-02 is a Saturday: the clock starts on Monday 2007-06-04.
    assert next_replay_session(SESSIONS, None, date(2007, 6, 2), None) == date(2007, 6, 4)
    assert next_replay_session(SESSIONS, date(2007, 6, 4), date(2007, 6, 2), None) == date(
        2007, 6, 5
    )
    # Across a holiday: 2007-07-04 is skipped.
    assert next_replay_session(SESSIONS, date(2007, 7, 3), date(2007, 6, 1), None) == date(
        2007, 7, 5
    )


def test_replay_clock_holds_at_the_end() -> None:
    end = date(2007, 6, 10)  # a Sunday: the last session is Friday 2007-06-08
    assert next_replay_session(SESSIONS, date(2007, 6, 8), date(2007, 6, 1), end) == date(
        2007, 6, 8
    )
    assert next_replay_session(SESSIONS, date(2009, 12, 31), date(2009, 12, 1), None) == date(
        2009, 12, 31
    )


def test_replay_clock_errors_name_the_problem() -> None:
    with pytest.raises(PipelineError, match="no session to replay between 2030-01-01"):
        next_replay_session(SESSIONS, None, date(2030, 1, 1), None)
    with pytest.raises(PipelineError, match="before its start"):
        next_replay_session(SESSIONS, None, date(2008, 1, 1), date(2007, 1, 1))


@given(
    start=st.integers(0, len(SESSIONS) - 40),
    steps=st.integers(1, 30),
)
def test_replay_clock_advances_exactly_one_session_per_run(start: int, steps: int) -> None:
    first = SESSIONS[start].date()
    last = None
    seen = []
    for _ in range(steps):
        last = next_replay_session(SESSIONS, last, first, None)
        seen.append(last)
    assert seen == [d.date() for d in SESSIONS[start : start + steps]]


def test_replay_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOASIS_REPLAY_END", "2009-06-30")
    with pytest.raises(SettingsError, match="BLOASIS_REPLAY_END needs BLOASIS_REPLAY_START"):
        load_settings()
    monkeypatch.setenv("BLOASIS_REPLAY_START", "2010-01-04")
    with pytest.raises(SettingsError, match="BLOASIS_REPLAY_END=2009-06-30 is before"):
        load_settings()
    monkeypatch.setenv("BLOASIS_REPLAY_START", "2007-13-01")
    with pytest.raises(SettingsError, match="BLOASIS_REPLAY_START"):
        load_settings()


@pytest.mark.prefect
def test_replay_runs_walk_history_one_session_per_run(
    flow_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.pipeline as fp

    with pytest.raises(ValueError, match="BLOASIS_REPLAY_START"):
        asyncio.run(fp.daily_pipeline(replay=True, strategies=False, relay=False))
    monkeypatch.setenv("BLOASIS_REPLAY_START", "2008-09-12")
    monkeypatch.setenv("BLOASIS_REPLAY_END", "2008-09-16")
    got = [
        asyncio.run(fp.daily_pipeline(replay=True, strategies=False, relay=False))["as_of"]
        for _ in range(4)
    ]
    # Friday, then Monday 15th (Lehman), Tuesday 16th, then held at the end.
    assert got == ["2008-09-12", "2008-09-15", "2008-09-16", "2008-09-16"]
    with flow_db.connect() as conn:
        rows = conn.execute(
            select(PipelineRun.as_of, PipelineRun.parameters["replay"].as_boolean()).order_by(
                PipelineRun.started_at
            )
        ).all()
    assert [(r[0].isoformat(), r[1]) for r in rows] == [(d, True) for d in got]
