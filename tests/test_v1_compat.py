"""Existing BLOASIS clients work unchanged: a client generated from the original contract
(tests/v1_contract, in a process of its own: tests/v1_client.py) calls every original method of
the three services over a real channel, against a server over one real pipeline run."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bloasis.app.daily import DailyRequest, run_daily
from bloasis.config import Settings
from bloasis.pb.v1 import market_regime_pb2 as mr1
from bloasis.pb.v1 import market_regime_pb2_grpc as mr1_grpc
from bloasis.pb.v1 import strategy_pb2 as st1
from bloasis.pb.v1 import strategy_pb2_grpc as st1_grpc
from bloasis.pb.v2 import market_regime_pb2 as mr2
from bloasis.pb.v2 import market_regime_pb2_grpc as mr2_grpc
from bloasis.publish.cache import REGIME_CURRENT_KEY, make_redis
from bloasis.serve.server import RegimeServer
from bloasis.serve.v1_wire import V1_SECTORS
from bloasis.store.db import engine_for
from bloasis.users import random_population, seed_population
from tests.grpc_harness import Harness
from tests.kafka_util import consume_all

CLIENT = Path(__file__).parent / "v1_client.py"
ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
REGIMES = {"crisis", "bear", "bull", "sideways", "recovery"}


async def _client(srv: RegimeServer, user: str) -> dict[str, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        srv.address,
        "--user",
        user,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-2000:]
    rows = [json.loads(line) for line in out.decode().splitlines()]
    return {r["method"].split("/")[1]: r for r in rows}


@pytest.fixture(scope="module")
async def served(stack_settings: Settings) -> AsyncIterator[tuple[RegimeServer, str, Settings]]:
    s = stack_settings.model_copy(
        update={"model_version": f"regime-v2-v1c-{uuid.uuid4().hex[:10]}"}
    )
    prefix = f"v1c-{uuid.uuid4().hex[:6]}-"
    people = random_population(3, seed=11, prefix=prefix)
    seed_population(engine_for(s.require("database_url")), people)
    await run_daily(DailyRequest(trigger="manual", relay=False), run_id=uuid.uuid4(), settings=s)
    h = Harness()
    try:
        srv, _ = await h.start(s)
        yield srv, people[0].user_id, s
    finally:
        await h.close()


async def test_every_original_method_answers_with_real_data(
    served: tuple[RegimeServer, str, Settings],
) -> None:
    srv, user, s = served
    # Health names both versions' services.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    v1_services = [f"bloasis.{x}" for x in ("market_regime.MarketRegimeService",
                   "classification.ClassificationService", "strategy.StrategyService",
                   "backtesting.BacktestingService")]  # fmt: skip
    assert set(v1_services) <= set(srv.service_names)
    ch = grpc.aio.insecure_channel(srv.address)
    try:
        for name in (*v1_services, *(n for n in srv.service_names if ".v2." in n)):
            resp = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=name), timeout=5
            )
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, name
    finally:
        await ch.close()
    assert len(srv.service_names) == 8
    got = await _client(srv, user)
    assert {m: r["code"] for m, r in got.items()} == dict.fromkeys(got, "OK"), got
    assert len(got) == 11

    cur = got["GetCurrentRegime"]["response"]
    assert cur["regime"] in REGIMES and 0.0 <= cur["confidence"] <= 1.0
    assert ISO.fullmatch(cur["timestamp"]) and cur["riskLevel"] in {"low", "medium", "high"}
    assert cur["reasoning"] and cur["trigger"] == "manual"
    ind = cur["indicators"]
    assert ind["vix"] > 0 and ind["sp500Trend"] in {"up", "down", "flat"}
    assert ind["yieldCurve"] in {"normal", "flat", "inverted", "unknown"}

    hist = got["GetRegimeHistory"]["response"]["regimes"]
    assert hist and all(r["regime"] in REGIMES and ISO.fullmatch(r["timestamp"]) for r in hist)

    saved = got["SaveRegime"]["response"]
    assert saved["success"] and saved["regime"]["regime"] == "bear"
    assert saved["regime"]["confidence"] == 0.7 and saved["regime"]["trigger"] == "manual"
    assert saved["regime"]["reasoning"].startswith("Operator override")

    sectors = got["GetSectorAnalysis"]["response"]
    assert len(sectors["sectors"]) == 11 and sectors["regime"] in REGIMES
    assert {s["sector"] for s in sectors["sectors"]} == set(V1_SECTORS)
    assert all(0 <= s.get("score", 0) <= 100 and s["rationale"] for s in sectors["sectors"])
    assert ISO.fullmatch(sectors["cachedAt"])

    themes = got["GetThematicAnalysis"]["response"]["themes"]
    assert themes and all(0 <= t["score"] <= 100 and t["representativeSymbols"] for t in themes)
    assert [t["score"] for t in themes] == sorted((t["score"] for t in themes), reverse=True)

    cands = got["GetCandidateSymbols"]["response"]
    assert 0 < len(cands["candidates"]) <= 10 and cands["selectedSectors"]
    assert all(c["sector"] in V1_SECTORS and c["theme"] for c in cands["candidates"])

    picks = got["GetStockPicks"]["response"]
    assert 0 < len(picks["picks"]) <= 5
    assert [p["rank"] for p in picks["picks"]] == list(range(1, len(picks["picks"]) + 1))
    assert picks["appliedPreferences"]["userId"] == user and ISO.fullmatch(picks["generatedAt"])

    strat = got["GetPersonalizedStrategy"]["response"]
    assert strat["userId"] == user and strat["regime"] in REGIMES and strat["stockPicks"]
    buys = [g for g in strat["signals"] if g["action"] == "buy"]
    for g in buys:  # ATR stop under the entry, profit tiers above it
        assert 0 < g["stopLoss"] < g["entryPrice"] < g["takeProfit"]
        assert [t["level"] for t in g["profitTiers"]] == sorted(
            t["level"] for t in g["profitTiers"]
        )
        assert 0 < g["sizeRecommendation"] <= 1 and 0 <= g["confidence"] <= 1

    prefs = got["GetPreferences"]["response"]
    assert prefs["userId"] == user and prefs["riskProfile"] in {
        "CONSERVATIVE",
        "MODERATE",
        "AGGRESSIVE",
    }
    assert prefs["maxSinglePosition"] > 0
    upd = got["UpdatePreferences"]["response"]
    assert upd["success"]
    assert upd["preferences"] == {
        "userId": user,
        "riskProfile": "CONSERVATIVE",
        "excludedSectors": ["Energy"],
        "maxSinglePosition": 0.08,
    }

    ai = got["RunAIAnalysis"]["response"]
    assert ai["userId"] == user and ai["analysisId"]
    # New preferences (just updated): a new strategy, its events relayed to the stack's broker.
    assert ai["phase"] == "published" and ai["signals"]
    assert ai["signalsPublished"] == len(ai["signals"]) and "errors" not in ai

    # A second client session sees what the first changed: the override is current (and
    # marked), the preferences round-trip, and the recompute used them.
    again = await _client(srv, user)
    cur2 = again["GetCurrentRegime"]["response"]
    # An original client knows no `override` field: the reasoning tells it.
    assert cur2["regime"] == "bear" and cur2["reasoning"].startswith("Operator override")
    assert "override" not in cur2
    # Clients of today's v1 (fields added at new numbers) and v2 see the flag itself.
    ch = grpc.aio.insecure_channel(srv.address)
    try:
        v1 = await mr1_grpc.MarketRegimeServiceStub(ch).GetCurrentRegime(
            mr1.GetCurrentRegimeRequest(user_id=user), timeout=5
        )
        assert (v1.regime, v1.override) == ("bear", True)
        assert v1.model_version.endswith("+override") and v1.as_of == "2022-12-28"
        v2 = await mr2_grpc.MarketRegimeServiceStub(ch).GetCurrentRegime(
            mr2.GetCurrentRegimeRequest(), timeout=5
        )
        assert (v2.regime.regime, v2.regime.override, v2.regime.trigger) == (
            "bear",
            True,
            "manual",
        )
    finally:
        await ch.close()
    assert again["GetPreferences"]["response"] == upd["preferences"]
    strat2 = again["GetPersonalizedStrategy"]["response"]
    assert strat2["preferences"] == upd["preferences"]
    assert all(s != "Energy" for s in strat2["selectedSectors"])
    # The users-only runs RunAIAnalysis started switched Redis keys: the current regime there is
    # the override too (one definition of "current", bloasis.store.regimes.current_regime).
    r = make_redis(s.require("redis_url"))
    try:
        cached = json.loads(r.get(REGIME_CURRENT_KEY) or b"{}")
    finally:
        r.close()
    assert (cached["regime"], cached["model_version"]) == ("bear", s.model_version + "+override")
    # The session wrote the preferences again (a new version) before its RunAIAnalysis; a
    # recompute with nothing new since stores and publishes nothing.
    assert again["RunAIAnalysis"]["response"]["phase"] == "published"
    ch = grpc.aio.insecure_channel(srv.address)
    try:
        ai2 = await st1_grpc.StrategyServiceStub(ch).RunAIAnalysis(
            st1.RunAIAnalysisRequest(user_id=user), timeout=120
        )
    finally:
        await ch.close()
    assert (ai2.phase, ai2.signals_published) == ("unchanged", 0)

    # v2's latest answer is a shared body plus the user's ids, concatenated (the cache keeps
    # one body for every user of the same content): it decodes to exactly the whole strategy
    # the dated read builds in one piece.
    from bloasis.pb.v2 import strategy_pb2 as st2
    from bloasis.pb.v2 import strategy_pb2_grpc as st2_grpc

    ch = grpc.aio.insecure_channel(srv.address)
    try:
        v2 = st2_grpc.StrategyServiceStub(ch)
        latest = [await v2.GetStrategy(st2.GetStrategyRequest(user_id=user)) for _ in range(2)]
        dated = await v2.GetStrategy(
            st2.GetStrategyRequest(user_id=user, as_of=latest[0].strategy.as_of)
        )
    finally:
        await ch.close()
    assert latest[1].served_from == "snapshot"  # the second from the answer cache
    for got in latest:
        assert got.strategy == dated.strategy and got.regime == dated.regime
    assert dated.strategy.user_id == user and dated.strategy.strategy_id.startswith(f"user:{user}:")
    assert [g.symbol for g in ai2.signals] == [g["symbol"] for g in strat2["signals"]]


async def _original_consumer(lines: list[str]) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        "--decode",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate("".join(lines).encode()), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    return [json.loads(x) for x in out.decode().splitlines()]


async def test_an_original_consumer_decodes_every_topic(
    served: tuple[RegimeServer, str, Settings],
) -> None:
    """After the v1 session above (SaveRegime, RunAIAnalysis), read the three topics from the
    real broker and decode every record of this model version with the original messages."""
    _, user, s = served
    mv = s.model_version
    lines = []
    for topic in ("regime-events", "alert-events", "strategy-events"):
        for rec in await consume_all(s.require("kafka_bootstrap_servers"), topic):
            if mv in rec.value:
                lines.append(json.dumps({"topic": topic, "payload": rec.value}) + "\n")
    got = await _original_consumer(lines)
    assert got and all("error" not in g for g in got), [g for g in got if "error" in g][:3]
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for g in got:
        by_topic.setdefault(g["topic"], []).append(g["event"])
    # The operator's override: a change event with the original keys.
    overrides = [e for e in by_topic["regime-events"] if "+override" in e["event_id"]]
    assert overrides and overrides[0]["new_regime"] == "bear"
    assert ISO.fullmatch(overrides[0]["timestamp"]) and 0 <= overrides[0]["confidence"] <= 1
    assert overrides[0]["priority"] == "EVENT_PRIORITY_HIGH"
    # One signal event per symbol for the recomputed user, as the executor consumes them.
    mine = [
        e for e in by_topic["strategy-events"] if e["symbol"] and f"user:{user}:" in e["event_id"]
    ]
    assert mine, "no per-symbol signal events for the user"
    for e in mine:
        assert e["action"] in {"buy", "sell", "hold"} and e["signal_type"] in {
            "entry",
            "exit",
            "hold",
        }
        assert ISO.fullmatch(e["timestamp"]) and 0 <= e["confidence"] <= 1
        assert e["priority"] == "EVENT_PRIORITY_MEDIUM" and e["parameters"]["user_id"] == user
        if e["action"] == "buy":
            p = e["parameters"]
            assert float(p["stop_loss"]) < float(p["entry_price"]) < float(p["take_profit"])
    # The per-strategy events are still there, and decode too (no symbol: not a trade).
    assert any(not e["symbol"] for e in by_topic["strategy-events"])


# --- per-principal access, on v1 and v2 ---------------------------------------------------

TOKENS = {
    "alice_read": "alice-read-token-0123456789",
    "alice_write": "alice-write-token-0123456789",
    "operator": "operator-write-token-0123456789",
    "admin": "admin-token-0123456789abcdef",
}


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_tokens_bound_to_users_see_and_change_only_their_users(
    served: tuple[RegimeServer, str, Settings],
) -> None:
    from pydantic import SecretStr

    from bloasis.pb.v2 import strategy_pb2 as st2
    from bloasis.pb.v2 import strategy_pb2_grpc as st2_grpc

    _, alice, base = served
    bob = alice[:-1] + "1"  # random_population's next user
    inline = "; ".join(
        [
            f"{TOKENS['alice_read']} read alice-r sub={alice}",
            f"{TOKENS['alice_write']} write alice-w sub={alice}",
            f"{TOKENS['operator']} write operator",
            f"{TOKENS['admin']} admin root",
        ]
    )
    s = base.model_copy(update={"grpc_tokens": SecretStr(inline), "watch_max_streams": 1})
    h = Harness()
    try:
        srv, _ = await h.start(s)
        ch = h.channel(srv)
        v1 = st1_grpc.StrategyServiceStub(ch)
        v2 = st2_grpc.StrategyServiceStub(ch)

        def md(who: str) -> list[tuple[str, str]]:
            return [("authorization", f"Bearer {TOKENS[who]}")]

        # The admin reads bob first: his answers are in the answer cache now.
        for _ in range(2):
            assert (
                await _code(
                    v1.GetPersonalizedStrategy(
                        st1.StrategyRequest(user_id=bob), metadata=md("admin")
                    )
                )
                == grpc.StatusCode.OK
            )
            assert (
                await _code(
                    v2.GetStrategy(st2.GetStrategyRequest(user_id=bob), metadata=md("admin"))
                )
                == grpc.StatusCode.OK
            )
        hits_before = dict(srv.answer_cache.hits)
        # Alice's tokens: her own data (twice: the second from the cache), never bob's.
        for who in ("alice_read", "alice_write"):
            for _ in range(2):
                ok = await v1.GetPersonalizedStrategy(
                    st1.StrategyRequest(user_id=alice), metadata=md(who)
                )
                assert ok.user_id == alice
                ok2 = await v2.GetStrategy(st2.GetStrategyRequest(user_id=alice), metadata=md(who))
                assert ok2.strategy.user_id == alice
            for call in (
                v1.GetPersonalizedStrategy(st1.StrategyRequest(user_id=bob), metadata=md(who)),
                v1.GetStockPicks(st1.StockPicksRequest(user_id=bob), metadata=md(who)),
                v1.GetPreferences(st1.GetPreferencesRequest(user_id=bob), metadata=md(who)),
                v2.GetStrategy(st2.GetStrategyRequest(user_id=bob), metadata=md(who)),
                v2.GetStockPicks(st2.GetStrategyRequest(user_id=bob), metadata=md(who)),
                v2.GetPreferences(st2.GetPreferencesRequest(user_id=bob), metadata=md(who)),
            ):
                assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED
        # Bob's cached answers were not handed to alice: the only hits are alice's own calls
        # after her first (3 per method).
        hits_after = srv.answer_cache.hits
        for method in ("bloasis.strategy.StrategyService/GetPersonalizedStrategy",
                       "bloasis.strategy.v2.StrategyService/GetStrategy"):  # fmt: skip
            assert hits_after[method] - hits_before[method] == 3, (method, hits_after)

        # Changes: a read token may not, a bound write token only for its user.
        upd = st1.UpdatePreferencesRequest(user_id=alice, risk_profile=st1.MODERATE)
        assert await _code(v1.UpdatePreferences(upd, metadata=md("alice_read"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await _code(v1.UpdatePreferences(upd, metadata=md("alice_write"))) == (
            grpc.StatusCode.OK
        )
        upd_bob = st1.UpdatePreferencesRequest(user_id=bob, risk_profile=st1.MODERATE)
        assert await _code(v1.UpdatePreferences(upd_bob, metadata=md("alice_write"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        v2_bob = st2.UpdatePreferencesRequest(
            preferences=st2.UserPreferences(user_id=bob, risk_profile="moderate")
        )
        assert await _code(v2.UpdatePreferences(v2_bob, metadata=md("alice_write"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        run_bob = st1.RunAIAnalysisRequest(user_id=bob)
        assert await _code(v1.RunAIAnalysis(run_bob, metadata=md("alice_write"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        # SaveRegime changes what every user is served: not with a token bound to users.
        save = mr1.SaveRegimeRequest(regime="bull", confidence=0.5)
        mr = mr1_grpc.MarketRegimeServiceStub(ch)
        assert await _code(mr.SaveRegime(save, metadata=md("alice_write"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await _code(mr.SaveRegime(save, metadata=md("alice_read"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )

        # WatchRegime: at most BLOASIS_WATCH_MAX_STREAMS (1 here) at once, v1 server-wide.
        watch = mr2_grpc.MarketRegimeServiceStub(ch).WatchRegime(
            mr2.WatchRegimeRequest(), metadata=md("admin")
        )
        first = await watch.read()
        assert first.regime.regime in REGIMES
        second = mr2_grpc.MarketRegimeServiceStub(ch).WatchRegime(
            mr2.WatchRegimeRequest(), metadata=md("admin")
        )
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await second.read()
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "BLOASIS_WATCH_MAX_STREAMS" in (full.value.details() or "")
        watch.cancel()
    finally:
        await h.close()


async def test_bad_v1_input_is_refused_naming_the_field(
    served: tuple[RegimeServer, str, Settings],
) -> None:
    """The v1 methods' error paths: INVALID_ARGUMENT naming the field (or NOT_FOUND), and a
    refused SaveRegime changes nothing."""
    from bloasis.pb.v1 import classification_pb2 as cl1
    from bloasis.pb.v1 import classification_pb2_grpc as cl1_grpc

    srv, user, _ = served
    ch = grpc.aio.insecure_channel(srv.address)
    try:
        mr = mr1_grpc.MarketRegimeServiceStub(ch)
        st = st1_grpc.StrategyServiceStub(ch)
        cl = cl1_grpc.ClassificationServiceStub(ch)
        before = await mr.GetCurrentRegime(mr1.GetCurrentRegimeRequest(), timeout=5)
        cases: list[tuple[Any, str]] = [
            (mr.SaveRegime(mr1.SaveRegimeRequest(regime="boom", confidence=0.5)), "regime"),
            (mr.SaveRegime(mr1.SaveRegimeRequest(regime="bull", confidence=1.5)), "confidence"),
            (mr.SaveRegime(mr1.SaveRegimeRequest(regime="bull", confidence=float("nan"))),
             "confidence"),
            (mr.SaveRegime(mr1.SaveRegimeRequest(regime="bull", trigger="moon")), "trigger"),
            (mr.SaveRegime(mr1.SaveRegimeRequest(regime="bull", timestamp="yesterday")),
             "timestamp"),
            (mr.SaveRegime(mr1.SaveRegimeRequest(regime="bull", timestamp="2022-12-28T10:00:00")),
             "time zone"),
            (mr.SaveRegime(mr1.SaveRegimeRequest(regime="bull", timestamp="9999-01-01T00:00:00Z")),
             "future"),
            (mr.SaveRegime(mr1.SaveRegimeRequest(regime="bull", risk_level="extreme")),
             "risk_level"),
            (mr.GetRegimeHistory(mr1.GetRegimeHistoryRequest(
                time_range={"start_date": "2022-12-28", "end_date": "2022-12-01"})), "start_date"),
            (cl.GetThematicAnalysis(cl1.GetThematicAnalysisRequest(sectors=["Crypto"])),
             "sectors"),
            (cl.GetSectorAnalysis(cl1.GetSectorAnalysisRequest(regime="boom")), "regime"),
            (cl.GetCandidateSymbols(cl1.GetCandidateSymbolsRequest(max_candidates=-1)),
             "max_candidates"),
            (st.GetStockPicks(st1.StockPicksRequest(user_id=user, max_picks=5000)), "max_picks"),
            (st.UpdatePreferences(st1.UpdatePreferencesRequest(
                user_id=user, max_single_position=0.12345)), "max_single_position"),
            (st.UpdatePreferences(st1.UpdatePreferencesRequest(user_id=user, risk_profile=9)),
             "risk_profile"),
            (st.UpdatePreferences(st1.UpdatePreferencesRequest(
                user_id=user, excluded_sectors=["Crypto"])), "excluded_sectors"),
            (st.RunAIAnalysis(st1.RunAIAnalysisRequest()), "user_id"),
        ]  # fmt: skip
        for call, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await call
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, bad.value)
            assert field in (bad.value.details() or ""), (field, bad.value.details())
        for call in (
            st.RunAIAnalysis(st1.RunAIAnalysisRequest(user_id="v1c-nobody")),
            st.GetPersonalizedStrategy(st1.StrategyRequest(user_id="v1c-nobody")),
            st.GetPreferences(st1.GetPreferencesRequest(user_id="v1c-nobody")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await call
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        after = await mr.GetCurrentRegime(mr1.GetCurrentRegimeRequest(), timeout=5)
        assert after.regime == before.regime and after.reasoning == before.reasoning
    finally:
        await ch.close()
