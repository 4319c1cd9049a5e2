"""Degradations an operator is told about (issue 16): the risk-parity optimiser falling back to
volatility-targeted weights is in the run's result and `pipeline_runs`, logged, counted and
shown by `bloasis status`; what is a bug (not a solver failure) fails instead of falling back."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from bloasis import metrics
from bloasis.app.daily import DailyRequest, run_daily
from bloasis.config import Settings
from bloasis.store.db import get_engine
from bloasis.strategy import optimiser
from bloasis.strategy.types import PROFILES
from tests.test_cli import bloasis

RNG = np.random.default_rng(7)
CLOSES = np.cumprod(1 + RNG.normal(0, 0.01, (253, 4)), axis=0) * 100


def _fit_raising(exc: BaseException):  # type: ignore[no-untyped-def]
    def fit(self: object, *_a: object, **_k: object) -> object:
        raise exc

    return fit


def test_a_solver_failure_falls_back_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from cvxpy import SolverError
    from skfolio.optimization import RiskBudgeting

    ok = optimiser.risk_parity(CLOSES)
    assert ok.weights is not None and ok.fallback == ""
    few = optimiser.risk_parity(CLOSES[:, :1])
    assert few.weights is None and few.fallback == optimiser.FEW_ASSETS
    monkeypatch.setattr(RiskBudgeting, "fit", _fit_raising(SolverError("Solver failed")))
    failed = optimiser.risk_parity(CLOSES)
    assert failed.weights is None and failed.fallback == optimiser.SOLVER_FAILED
    assert "optimiser failed (SolverError: Solver failed)" in failed.note


@pytest.mark.parametrize("exc", [KeyError("weights_"), TypeError("bad call"), ImportError("x")])
def test_a_bug_in_the_optimiser_fails_instead_of_falling_back(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    from skfolio.optimization import RiskBudgeting

    monkeypatch.setattr(RiskBudgeting, "fit", _fit_raising(exc))
    with pytest.raises(type(exc)):
        optimiser.risk_parity(CLOSES)


def test_a_run_records_logs_counts_and_shows_the_fallback(
    stack_settings: Settings,
    stack_state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cvxpy import SolverError
    from skfolio.optimization import RiskBudgeting

    s = stack_settings.model_copy(
        update={"model_version": f"regime-v2-fallback-{uuid.uuid4().hex[:8]}"}
    )
    monkeypatch.setattr(RiskBudgeting, "fit", _fit_raising(SolverError("infeasible")))
    before = {
        p: metrics.OPTIMISER_FALLBACKS.labels(p, optimiser.SOLVER_FAILED)._value.get()
        for p in PROFILES
    }
    run_id = uuid.uuid4()
    with caplog.at_level(logging.WARNING):
        out = asyncio.run(run_daily(DailyRequest(relay=False), run_id=run_id, settings=s))
    assert set(out["optimiser_fallbacks"]) == set(PROFILES)
    assert all(v["kind"] == "solver_failed" for v in out["optimiser_fallbacks"].values())
    assert "infeasible" in out["optimiser_fallbacks"]["moderate"]["note"]
    with get_engine(s).connect() as conn:
        stored = conn.execute(
            text("SELECT result -> 'optimiser_fallbacks' FROM pipeline_runs WHERE id = :i"),
            {"i": run_id},
        ).scalar_one()
    assert stored == out["optimiser_fallbacks"]
    warned = [r.getMessage() for r in caplog.records if "fell back" in r.getMessage()]
    assert len(warned) == 3 and "moderate: the optimiser fell back" in " ".join(warned)
    for p in PROFILES:
        now = metrics.OPTIMISER_FALLBACKS.labels(p, optimiser.SOLVER_FAILED)._value.get()
        assert now == before[p] + 1
    # `bloasis status` shows it from the stored result (this is the newest daily run).
    proc = bloasis("status", "--json", state_dir=stack_state_dir)
    assert proc.returncode == 0, proc.stderr
    daily = next(
        r for r in json.loads(proc.stdout)["store"]["last_runs"] if r["flow"] == "daily-pipeline"
    )
    assert set(daily["optimiser_fallbacks"]) == set(PROFILES)
    text_out = bloasis("status", state_dir=stack_state_dir)
    assert "WARNING moderate: volatility-targeted weights only" in text_out.stdout


def test_user_keys_redis_refused_are_counted_and_shown(
    stack_settings: Settings,
    stack_state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis refusing a chunk's user keys (the switch itself works) does not fail the run, nor
    pass unnoticed: the run counts the keys missing, warns, and `bloasis status` shows it."""
    import redis

    from bloasis import strategy_run
    from bloasis.strategy.types import UserPreferences
    from bloasis.users import ensure_user

    s = stack_settings.model_copy(
        update={"model_version": f"regime-v2-nokeys-{uuid.uuid4().hex[:8]}"}
    )
    ensure_user(get_engine(s), UserPreferences("nokeys-1", "moderate"))

    def refused(*_a: object, **_k: object) -> int:
        raise redis.ConnectionError("Connection refused (injected)")

    monkeypatch.setattr(strategy_run, "write_user_keys", refused)
    with caplog.at_level(logging.WARNING):
        out = asyncio.run(run_daily(DailyRequest(relay=False), run_id=uuid.uuid4(), settings=s))
    assert out["users"] >= 1 and out["user_keys_cached"] == 0
    assert out["user_keys_missing"] == out["users"]
    assert "Redis keys switched (current)" in out["cache"]
    warned = [r.getMessage() for r in caplog.records if "user keys not written" in r.getMessage()]
    assert warned and "injected" in warned[-1]
    text_out = bloasis("status", state_dir=stack_state_dir)
    assert f"WARNING {out['users']} users' Redis keys were not written" in text_out.stdout

    # A run over some users: Redis failing when their version is looked up is said too.
    monkeypatch.undo()
    monkeypatch.setattr(strategy_run, "read_users_version", refused)
    some = asyncio.run(
        run_daily(DailyRequest(relay=False, users=["nokeys-1"]), run_id=uuid.uuid4(), settings=s)
    )
    assert (some["users"], some["user_keys_cached"], some["user_keys_missing"]) == (1, 0, 1)
    assert some["cache"].endswith("Redis keys switched (current)")  # no pointer to move


def test_the_relay_is_the_one_retry_layer() -> None:
    """`relay_pending` retries the broker (3 attempts); the flows and tasks around it do not
    retry it again (a flow's retries=2 made it up to 9)."""
    from flows.relay import outbox_relay
    from tasks.publish import relay_outbox

    assert outbox_relay.retries == 0
    assert not relay_outbox.retries


@pytest.mark.parametrize("own_process", [False, True])
def test_the_relay_defers_gc_only_in_its_own_process(
    stack_settings: Settings, own_process: bool
) -> None:
    """In a flow's process the relay must not switch the cyclic GC off for everything else
    that runs meanwhile; `bloasis relay` (its own process) may, for throughput."""
    import gc
    import threading

    from bench.relay_throughput import make_events
    from bloasis.publish.relay import relay_pending
    from bloasis.store.outbox import copy_enqueue

    engine = get_engine(stack_settings)
    with engine.begin() as conn:
        copy_enqueue(conn, make_events(4000, f"gc-{uuid.uuid4().hex[:8]}"))
    seen: list[bool] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(gc.isenabled())
            stop.wait(0.0005)

    t = threading.Thread(target=watch)
    t.start()
    try:
        stats = asyncio.run(
            relay_pending(
                engine, stack_settings.require("kafka_bootstrap_servers"), idempotence=False,
                batch_size=500, own_process=own_process,
            )
        )  # fmt: skip
    finally:
        stop.set()
        t.join(5)
    assert stats.published >= 4000 and gc.isenabled()
    assert len(seen) > 20
    if own_process:
        assert not all(seen)  # full collections were deferred while it ran
    else:
        assert all(seen)
