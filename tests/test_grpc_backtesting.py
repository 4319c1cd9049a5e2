"""BacktestingService, v1 (the original contract) and v2, over a real server and the embedded
stack: short backtests (two years) started over gRPC run in the server's background threads
while the tests poll their progress; their stored results are served by both versions, compared,
found again for the same inputs (also across versions), and refused with the field named for bad
input. The original client (tests/v1_client.py, stubs from tests/v1_contract) runs, polls and
compares as its users did; RunRLBacktest says why it is not implemented; tokens bound to users
start and read only their users' backtests.

Backtests are keyed on their inputs, the regime model's version among them: this module runs
under a model version of its own, so its backtests are computed here, never found from another
module's (or an earlier session's) rows.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import text

from bloasis.backtest.engine import BENCHMARKS, UNIVERSE_NOTE
from bloasis.config import Settings
from bloasis.pb.v1 import backtesting_pb2 as bt1
from bloasis.pb.v1 import backtesting_pb2_grpc as bt1_grpc
from bloasis.pb.v2 import backtesting_pb2 as bt2
from bloasis.pb.v2 import backtesting_pb2_grpc as bt2_grpc
from bloasis.regime.model import resolve_model
from bloasis.serve.server import RegimeServer
from bloasis.store import backtests as bt_store
from bloasis.store.db import engine_for
from bloasis.store.strategies import upsert_preferences
from bloasis.strategy.types import UserPreferences
from tests.grpc_harness import Harness
from tests.test_grpc import GRPCURL, _run

M = TypeVar("M")

CLIENT = Path(__file__).parent / "v1_client.py"
OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
REGIMES = {"crisis", "bear", "bull", "sideways", "recovery"}
START, END = "2021-01-04", "2022-12-28"
PERIOD = f"{START}:{END}"
END_DATE = date.fromisoformat(END)
POLL_S = 0.5
POLL_LIMIT_S = 120.0
V1_SERVICE = "bloasis.backtesting.BacktestingService"
V2_SERVICE = "bloasis.backtesting.v2.BacktestingService"


@dataclass
class World:
    server: RegimeServer
    settings: Settings
    channel: grpc.aio.Channel
    v1: bt1_grpc.BacktestingServiceStub
    v2: bt2_grpc.BacktestingServiceStub
    alice: str  # users with stored preferences
    bob: str
    prefix: str


@dataclass
class Finished:
    v1_id: str  # moderate over PERIOD, started over v1
    v2_id: str  # conservative and alice's strategy, monthly, started over v2
    v1_started: bt1.BacktestResponse
    v1_polls: list[bt1.BacktestResponse]
    v2_polls: list[bt2.BacktestResults]
    v1_again: bt1.BacktestResponse  # the same request again while it ran


def _drop_users(s: Settings, prefix: str) -> None:
    with engine_for(s.require("database_url")).begin() as conn:
        conn.execute(
            text("DELETE FROM user_preferences WHERE starts_with(user_id, :p)"), {"p": prefix}
        )


@pytest.fixture(scope="module")
async def world(stack_settings: Settings) -> AsyncIterator[World]:
    s = stack_settings.model_copy(
        update={"model_version": f"regime-v2-btg-{uuid.uuid4().hex[:10]}"}
    )
    prefix = f"btg-{uuid.uuid4().hex[:6]}-"
    alice, bob = prefix + "alice", prefix + "bob"

    def seed() -> None:
        with engine_for(s.require("database_url")).begin() as conn:
            upsert_preferences(
                conn, UserPreferences(alice, "moderate", excluded_sectors=("Energy",))
            )
            upsert_preferences(conn, UserPreferences(bob, "aggressive"))

    await asyncio.to_thread(seed)
    h = Harness()
    try:
        srv, _ = await h.start(s)
        ch = h.channel(srv)
        yield World(
            srv, s, ch, bt1_grpc.BacktestingServiceStub(ch), bt2_grpc.BacktestingServiceStub(ch),
            alice, bob, prefix,
        )  # fmt: skip
    finally:
        await h.close()
        await asyncio.to_thread(_drop_users, s, prefix)


async def _poll(get: Callable[[], Awaitable[M]], status_of: Callable[[M], str]) -> list[M]:
    """Every answer until the backtest is no longer running (bounded)."""
    seen: list[M] = []
    t0 = time.monotonic()
    while True:
        got = await get()
        seen.append(got)
        if status_of(got) != "running":
            return seen
        if time.monotonic() - t0 > POLL_LIMIT_S:
            pytest.fail(f"the backtest still runs after {POLL_LIMIT_S}s: {got}")
        await asyncio.sleep(POLL_S)


@pytest.fixture(scope="module")
async def finished(world: World) -> Finished:
    """Two backtests started together (one per API version), polled until done."""
    started = await world.v1.RunBacktest(
        bt1.BacktestRequest(strategy_type="moderate", period=PERIOD), timeout=60
    )
    again = await world.v1.RunBacktest(
        bt1.BacktestRequest(strategy_type="moderate", period=PERIOD), timeout=60
    )
    run2 = await world.v2.RunBacktest(
        bt2.RunBacktestRequest(
            profiles=["conservative"], user_ids=[world.alice], start=START, end=END,
            rebalance="monthly", commission="0.001", initial_cash="250000",
        ),
        timeout=60,
    )  # fmt: skip
    assert not run2.found and run2.status == "running"
    v1_polls, v2_polls = await asyncio.gather(
        _poll(
            lambda: world.v1.GetBacktestResults(
                bt1.GetResultsRequest(backtest_id=started.backtest_id), timeout=10
            ),
            lambda r: r.results.status,
        ),
        _poll(
            lambda: world.v2.GetBacktestResults(
                bt2.GetBacktestResultsRequest(backtest_id=run2.backtest_id), timeout=10
            ),
            lambda r: r.status,
        ),
    )
    v1_final = v1_polls[-1].results
    assert v1_final.status == "succeeded", v1_final.error
    assert v2_polls[-1].status == "succeeded", v2_polls[-1].error
    return Finished(
        started.backtest_id,
        run2.backtest_id,
        started,
        [p.results for p in v1_polls],
        v2_polls,
        again,
    )


def _finite(*xs: float) -> bool:
    return all(math.isfinite(x) for x in xs)


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


# --- v1 ---------------------------------------------------------------------------------------


async def test_v1_run_answers_at_once_and_reports_progress(finished: Finished) -> None:
    started = finished.v1_started
    assert uuid.UUID(started.backtest_id)
    assert started.status == "running" and 0.0 <= started.progress < 1.0
    assert not started.results and not started.HasField("portfolio_metrics")
    assert ISO.fullmatch(started.created_at)
    # The same request while it ran: the same backtest, not a second one.
    assert finished.v1_again.backtest_id == started.backtest_id
    assert finished.v1_again.status in ("running", "succeeded")
    polls = finished.v1_polls
    progress = [p.progress for p in polls]
    assert all(0.0 <= x <= 1.0 for x in progress)
    assert progress == sorted(progress), progress  # never backwards
    for p in polls[:-1]:  # while running: no results yet
        assert p.status == "running" and not p.results
    # Progress is reported while it runs (the sessions decided), and says what it is doing.
    assert any(p.message.startswith("decide:") for p in polls[:-1]), polls
    assert all(p.message for p in polls if p.progress > 0)
    final = polls[-1]
    assert (final.status, final.progress, final.message, final.error) == (
        "succeeded",
        1.0,
        "done",
        "",
    )


async def test_v1_results_are_the_stored_measures(world: World, finished: Finished) -> None:
    got = await world.v1.GetBacktestResults(
        bt1.GetResultsRequest(backtest_id=finished.v1_id), timeout=10
    )
    r = got.results
    assert r.backtest_id == finished.v1_id and ISO.fullmatch(r.created_at)
    assert [x.symbol for x in r.results] == ["moderate", *BENCHMARKS]
    by_name = {x.symbol: x for x in r.results}
    for x in r.results:
        assert _finite(
            x.total_return, x.sharpe_ratio, x.sortino_ratio, x.max_drawdown, x.win_rate,
            x.profit_factor, x.avg_trade_duration_days, x.calmar_ratio,
        ), x  # fmt: skip
        assert -1.0 < x.total_return < 10.0 and -1.0 <= x.max_drawdown <= 0.0
        assert isinstance(x.passed, bool)
        assert x.passed == (x.sharpe_ratio > by_name[BENCHMARKS[0]].sharpe_ratio)
    mod = by_name["moderate"]
    assert mod.total_trades > 0 and mod.avg_trade_duration_days > 0
    assert 0.0 <= mod.win_rate <= 1.0
    assert not by_name[BENCHMARKS[0]].passed  # not above itself
    pm = r.portfolio_metrics
    assert (pm.total_return, pm.sharpe_ratio, pm.max_drawdown) == (
        mod.total_return,
        mod.sharpe_ratio,
        mod.max_drawdown,
    )
    assert 0.0 < pm.volatility < 1.0
    # Exactly what the store holds (the server adds nothing and rounds nothing).
    with engine_for(world.settings.require("database_url")).connect() as conn:
        stored = bt_store.get(conn, uuid.UUID(finished.v1_id))
    assert stored is not None and stored.spec["start"] == START and stored.spec["end"] == END
    assert stored.spec["rebalance"] == "weekly" and stored.spec["initial_cash"] == "100000"
    m = stored.summary["moderate"]
    assert (mod.total_return, mod.sharpe_ratio, mod.total_trades) == (
        m["total_return"],
        m["sharpe"],
        m["trades"],
    )
    assert pm.volatility == m["volatility"]


async def test_the_same_request_again_is_found(world: World, finished: Finished) -> None:
    again = await world.v1.RunBacktest(
        bt1.BacktestRequest(strategy_type="moderate", period=PERIOD), timeout=60
    )
    assert again.backtest_id == finished.v1_id
    assert again.status == "succeeded" and again.progress == 1.0
    assert [x.symbol for x in again.results] == ["moderate", *BENCHMARKS]
    # No strategy_type and no user: moderate; the v1 defaults are v2's, so v2 finds it too.
    default = await world.v1.RunBacktest(bt1.BacktestRequest(period=PERIOD), timeout=60)
    assert (default.backtest_id, default.status) == (finished.v1_id, "succeeded")
    v2 = await world.v2.RunBacktest(
        bt2.RunBacktestRequest(profiles=["moderate"], start=START, end=END), timeout=60
    )
    assert (v2.backtest_id, v2.found, v2.status) == (finished.v1_id, True, "succeeded")


async def test_a_busy_server_answers_stored_backtests_and_refuses_new_ones(
    world: World, finished: Finished
) -> None:
    backtests = world.server.backtests
    limit = backtests.max_running
    backtests.max_running = 0  # as if its backtests were all running
    try:
        found = await world.v1.RunBacktest(
            bt1.BacktestRequest(strategy_type="moderate", period=PERIOD), timeout=60
        )
        assert (found.backtest_id, found.status) == (finished.v1_id, "succeeded")
        code, details = await _code(
            world.v1.RunBacktest(
                bt1.BacktestRequest(strategy_type="aggressive", period=PERIOD), timeout=60
            )
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in details
    finally:
        backtests.max_running = limit


async def test_v1_compare_ranks_first_portfolios_by_sharpe(
    world: World, finished: Finished
) -> None:
    got = await world.v1.CompareStrategies(
        bt1.CompareRequest(backtest_ids=[finished.v1_id, finished.v2_id, finished.v1_id]),
        timeout=10,
    )
    assert [c.rank for c in got.comparisons] == [1, 2]
    assert {(c.backtest_id, c.strategy_name) for c in got.comparisons} == {
        (finished.v1_id, "moderate"),
        (finished.v2_id, "conservative"),
    }
    sharpes = [c.metrics.sharpe_ratio for c in got.comparisons]
    assert sharpes == sorted(sharpes, reverse=True) and _finite(*sharpes)
    assert got.best_strategy_id == got.comparisons[0].backtest_id


async def test_v1_rl_backtest_is_unimplemented_and_says_why(world: World) -> None:
    code, details = await _code(
        world.v1.RunRLBacktest(
            bt1.RLBacktestRequest(rl_algorithm="PPO", train_timesteps=1000, period="1y"),
            timeout=10,
        )
    )
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert "reinforcement-learning" in details and "RunBacktest" in details
    assert "rule-based" in details


# --- v2 ---------------------------------------------------------------------------------------


async def test_v2_results_have_spec_measures_samples_and_provenance(
    world: World, finished: Finished
) -> None:
    polls = finished.v2_polls
    assert [p.progress for p in polls] == sorted(p.progress for p in polls)
    r = polls[-1]
    assert r.backtest_id == finished.v2_id and (r.progress, r.message) == (1.0, "done")
    assert (r.start, r.end, r.rebalance) == (START, END, "monthly")
    assert (r.commission, r.slippage, r.initial_cash) == ("0.001", "0.0005", "250000")
    assert list(r.profiles) == ["conservative"] and list(r.user_ids) == [world.alice]
    assert r.top_n == world.settings.top_n and not r.symbols
    model = resolve_model(world.settings.model_version, world.settings.universe)
    assert r.model_version == model.version and re.fullmatch(r"[0-9a-f]{64}", r.data_snapshot_hash)
    assert r.finished_at.ToDatetime() >= r.created_at.ToDatetime()
    assert START <= r.first_session < r.last_session <= END
    names = ["conservative", f"user:{world.alice}", *BENCHMARKS]
    assert [m.name for m in r.portfolios] == names
    assert [m.benchmark for m in r.portfolios] == [False, False, True, True, True]
    for m in r.portfolios:
        for f in ("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown"):
            assert m.HasField(f) and math.isfinite(getattr(m, f)), (m.name, f)
        assert m.sessions > 400 and 0.0 <= m.exposure <= 1.0
    strat = r.portfolios[0]
    assert strat.trades > 0 and strat.HasField("win_rate") and float(strat.costs) > 0
    # The index bought once and held: no round trip, so no win rate.
    assert not r.portfolios[2].HasField("win_rate") and r.portfolios[2].trades == 1
    # regime-v2's thresholds were chosen on the whole history: every figure is in sample.
    assert r.in_sample.label == "in_sample" and [m.name for m in r.in_sample.portfolios] == names
    assert START <= r.in_sample.start <= r.in_sample.end <= END
    assert not r.HasField("out_of_sample")
    assert [g.label for g in r.per_year] == ["2021", "2022"]
    assert r.per_regime and {g.label for g in r.per_regime} <= REGIMES
    assert UNIVERSE_NOTE in r.notes and r.execution


async def test_v2_compare_ranks_every_strategy_by_sharpe(world: World, finished: Finished) -> None:
    got = await world.v2.CompareStrategies(
        bt2.CompareStrategiesRequest(backtest_ids=[finished.v1_id, finished.v2_id]), timeout=10
    )
    assert not got.skipped
    assert sorted((c.backtest_id, c.metrics.name) for c in got.comparisons) == sorted(
        [
            (finished.v1_id, "moderate"),
            (finished.v2_id, "conservative"),
            (finished.v2_id, f"user:{world.alice}"),
        ]
    )
    assert [c.rank for c in got.comparisons] == [1, 2, 3]
    sharpes = [c.metrics.sharpe for c in got.comparisons]
    assert sharpes == sorted(sharpes, reverse=True)
    assert got.best_backtest_id == got.comparisons[0].backtest_id
    assert {c.rebalance for c in got.comparisons} == {"weekly", "monthly"}


# --- bad input --------------------------------------------------------------------------------


async def test_v1_bad_input_names_the_field(world: World) -> None:
    def run(**kw: Any) -> Awaitable[Any]:
        kw.setdefault("strategy_type", "moderate")
        kw.setdefault("period", PERIOD)
        return world.v1.RunBacktest(bt1.BacktestRequest(**kw), timeout=60)

    cases: list[tuple[dict[str, Any], str]] = [
        ({"period": "last year"}, "period"),
        ({"period": "2022-12-28:2021-01-04"}, "period"),
        ({"period": "2021-02-30:2022-01-03"}, "period"),
        ({"period": "1990-01-02:2030-01-01"}, "period"),  # past the data's last session
        ({"period": "0y"}, "period"),
        ({"period": "80y"}, "period"),  # before the data's first session
        ({"symbols": ["NOPE"]}, "symbols"),  # not in the universe
        ({"symbols": ["no symbol!"]}, "symbols"),
        ({"strategy_type": "balanced"}, "strategy_type"),
        ({"config": bt1.BacktestConfig(commission=-0.001)}, "commission"),
        ({"config": bt1.BacktestConfig(slippage=math.nan)}, "slippage"),
        ({"config": bt1.BacktestConfig(commission=0.5)}, "commission"),  # absurd: the engine
        ({"config": bt1.BacktestConfig(initial_cash=-5)}, "initial_cash"),
        ({"config": bt1.BacktestConfig(stop_loss=0.05)}, "stop_loss"),
        ({"config": bt1.BacktestConfig(take_profit=0.2)}, "take_profit"),
        ({"user_id": "x" * 200}, "user_id"),
    ]
    for kw, field in cases:
        code, details = await _code(run(**kw))
        assert code == INVALID and field in details, (kw, code, details)
    code, details = await _code(run(config=bt1.BacktestConfig(stop_loss=0.05)))
    assert "ATR stops and profit tiers" in details
    # A user's strategy (no strategy_type): an unknown user is NOT_FOUND.
    code, details = await _code(run(strategy_type="", user_id=world.prefix + "nobody"))
    assert code == NOT_FOUND and "nobody" in details
    for bad, expected in (("", INVALID), ("not-a-uuid", INVALID), (str(uuid.uuid4()), NOT_FOUND)):
        code, details = await _code(
            world.v1.GetBacktestResults(bt1.GetResultsRequest(backtest_id=bad), timeout=10)
        )
        assert code == expected and ("backtest_id" in details or "no backtest" in details)
    for ids, expected in (([], INVALID), (["x"], INVALID), ([str(uuid.uuid4())], NOT_FOUND)):
        code, details = await _code(
            world.v1.CompareStrategies(bt1.CompareRequest(backtest_ids=ids), timeout=10)
        )
        assert code == expected, (ids, code, details)


async def test_v2_bad_input_names_the_field(world: World) -> None:
    def run(**kw: Any) -> Awaitable[Any]:
        kw.setdefault("profiles", ["moderate"])
        kw.setdefault("start", START)
        kw.setdefault("end", END)
        return world.v2.RunBacktest(bt2.RunBacktestRequest(**kw), timeout=60)

    cases: list[tuple[dict[str, Any], str]] = [
        ({"start": ""}, "start"),
        ({"start": "2021-1-4"}, "start"),
        ({"end": "2020-01-02"}, "end"),  # before the start
        ({"start": "1900-01-02"}, "start"),  # before the data
        ({"rebalance": "yearly"}, "rebalance"),
        ({"commission": "-0.1"}, "commission"),
        ({"commission": "0.5"}, "commission"),
        ({"slippage": "NaN"}, "slippage"),
        ({"initial_cash": "abc"}, "initial_cash"),
        ({"initial_cash": "0"}, "initial_cash"),
        ({"profiles": ["balanced"]}, "profiles"),
        ({"profiles": ["moderate", "moderate"]}, "profiles"),
        ({"symbols": ["NOPE"]}, "symbols"),
        ({"user_ids": [""]}, "user_ids"),
    ]
    for kw, field in cases:
        code, details = await _code(run(**kw))
        assert code == INVALID and field in details, (kw, code, details)
    code, details = await _code(run(user_ids=[world.prefix + "nobody"]))
    assert code == NOT_FOUND and "nobody" in details
    code, details = await _code(
        world.v2.GetBacktestResults(bt2.GetBacktestResultsRequest(backtest_id="x"), timeout=10)
    )
    assert code == INVALID and "backtest_id" in details
    code, _ = await _code(
        world.v2.CompareStrategies(
            bt2.CompareStrategiesRequest(backtest_ids=[str(uuid.uuid4())]), timeout=10
        )
    )
    assert code == NOT_FOUND


# --- access, health, metrics, the original client ---------------------------------------------

TOKENS = {
    "read": "bt-read-token-0123456789",
    "alice": "bt-alice-write-token-0123456789",
    "bob": "bt-bob-write-token-0123456789",
}


async def test_tokens_run_and_read_only_their_users_backtests(
    world: World, finished: Finished
) -> None:
    inline = "; ".join(
        [
            f"{TOKENS['read']} read dashboard",
            f"{TOKENS['alice']} write alice-w sub={world.alice}",
            f"{TOKENS['bob']} write bob-w sub={world.bob}",
        ]
    )
    h = Harness()
    try:
        srv, _ = await h.start(world.settings.model_copy(update={"grpc_tokens": SecretStr(inline)}))
        ch = h.channel(srv)
        v1, v2 = bt1_grpc.BacktestingServiceStub(ch), bt2_grpc.BacktestingServiceStub(ch)

        def md(who: str) -> list[tuple[str, str]]:
            return [("authorization", f"Bearer {TOKENS[who]}")]

        # RunBacktest needs the write scope (v1 and v2).
        code, details = await _code(
            v1.RunBacktest(bt1.BacktestRequest(period=PERIOD), metadata=md("read"), timeout=10)
        )
        assert code == PERMISSION_DENIED and "write scope" in details
        code, _ = await _code(
            v2.RunBacktest(bt2.RunBacktestRequest(start=START), metadata=md("read"), timeout=10)
        )
        assert code == PERMISSION_DENIED
        # A bound token backtests its own user (here: refused later, for the bad period), never
        # another's.
        mine = bt1.BacktestRequest(user_id=world.alice, period="bad")
        code, details = await _code(v1.RunBacktest(mine, metadata=md("alice"), timeout=60))
        assert code == INVALID and "period" in details
        theirs = bt1.BacktestRequest(user_id=world.bob, period=PERIOD)
        code, details = await _code(v1.RunBacktest(theirs, metadata=md("alice"), timeout=60))
        assert code == PERMISSION_DENIED and world.bob in details
        code, _ = await _code(
            v2.RunBacktest(
                bt2.RunBacktestRequest(user_ids=[world.bob], start=START),
                metadata=md("alice"),
                timeout=60,
            )
        )
        assert code == PERMISSION_DENIED
        # Reading: alice's backtest only with her token (or unbound ones); profiles' with any.
        get = bt2.GetBacktestResultsRequest(backtest_id=finished.v2_id)
        assert (await _code(v2.GetBacktestResults(get, metadata=md("alice"), timeout=10)))[0] == OK
        assert (await _code(v2.GetBacktestResults(get, metadata=md("read"), timeout=10)))[0] == OK
        code, _ = await _code(v2.GetBacktestResults(get, metadata=md("bob"), timeout=10))
        assert code == PERMISSION_DENIED
        compare = bt1.CompareRequest(backtest_ids=[finished.v1_id, finished.v2_id])
        code, _ = await _code(v1.CompareStrategies(compare, metadata=md("bob"), timeout=10))
        assert code == PERMISSION_DENIED
        got = await v1.GetBacktestResults(
            bt1.GetResultsRequest(backtest_id=finished.v1_id), metadata=md("bob"), timeout=10
        )
        assert got.results.status == "succeeded"
    finally:
        await h.close()


async def test_health_reflection_and_metrics_name_both_versions(
    world: World, finished: Finished
) -> None:
    assert {V1_SERVICE, V2_SERVICE} <= set(world.server.service_names)
    health = health_pb2_grpc.HealthStub(world.channel)
    for name in (V1_SERVICE, V2_SERVICE):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, name
    address = world.server.address
    listed = (await _run(GRPCURL, "-plaintext", address, "list")).split()
    assert {V1_SERVICE, V2_SERVICE} <= set(listed), listed
    described = await _run(GRPCURL, "-plaintext", address, "describe", V1_SERVICE)
    assert all(m in described for m in ("RunBacktest", "RunRLBacktest", "CompareStrategies"))
    # An operator's call by reflection alone, as the README shows it.
    out = await _run(
        GRPCURL, "-plaintext", "-d", json.dumps({"backtest_id": finished.v2_id}), address,
        f"{V2_SERVICE}/GetBacktestResults",
    )  # fmt: skip
    body = json.loads(out)
    assert body["status"] == "succeeded" and body["rebalance"] == "monthly"
    for method in (f"{V1_SERVICE}/GetBacktestResults", f"{V2_SERVICE}/GetBacktestResults"):
        n = REGISTRY.get_sample_value(
            "bloasis_grpc_requests_total", {"method": method, "code": "OK"}
        )
        assert n is not None and n >= 1, method


async def test_the_original_client_runs_polls_and_compares(
    world: World, finished: Finished
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CLIENT), world.server.address, "--backtest", PERIOD,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-2000:]
    rows = {r["method"].split("/")[1]: r for r in map(json.loads, out.decode().splitlines())}
    assert list(rows) == ["RunBacktest", "GetBacktestResults", "CompareStrategies", "RunRLBacktest"]
    run = rows["RunBacktest"]
    assert run["code"] == "OK" and run["response"]["backtestId"] == finished.v1_id
    # The original messages have no status: those fields are unknown to it, and skipped.
    assert "status" not in run["response"] and "progress" not in run["response"]
    got = rows["GetBacktestResults"]
    assert got["code"] == "OK" and got["polls"] == 1  # found: the results at once
    results = got["response"]["results"]
    assert [r["symbol"] for r in results["results"]] == ["moderate", *BENCHMARKS]
    assert ISO.fullmatch(results["createdAt"]) and results["portfolioMetrics"]["volatility"] > 0
    compare = rows["CompareStrategies"]["response"]
    assert compare["bestStrategyId"] == finished.v1_id
    assert compare["comparisons"][0]["rank"] == 1
    assert compare["comparisons"][0]["strategyName"] == "moderate"
    rl = rows["RunRLBacktest"]
    assert rl["code"] == "UNIMPLEMENTED" and "reinforcement-learning" in rl["error"]


def test_period_forms() -> None:
    from bloasis.serve.backtesting_v1 import period_kind, resolve_period
    from bloasis.serve.validation import RequestError

    bounds = (date(1990, 1, 2), date(2022, 12, 28))
    assert resolve_period("2021-01-04:2022-12-28", None) == (date(2021, 1, 4), END_DATE)
    assert resolve_period("2y", bounds) == (date(2020, 12, 28), END_DATE)
    assert resolve_period("max", bounds) == bounds
    assert [period_kind(p) for p in ("1y", "10Y", "MAX", " 2021-01-04:2022-12-28 ")] == [
        "years", "years", "max", "range",
    ]  # fmt: skip
    assert resolve_period("1y", (date(1990, 1, 2), date(2024, 2, 29))) == (
        date(2023, 2, 28),
        date(2024, 2, 29),
    )
    for bad in ("", "1", "y", "1.5y", "101y", "2021-01-04", "2021-01-04:", "1m", "ytd"):
        with pytest.raises(RequestError, match="period"):
            period_kind(bad)
