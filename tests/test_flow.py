"""The Prefect pipeline flow end to end under one session-scoped Prefect test harness, and the
prefect.yaml deployments registered against that server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, func, select

from bloasis.config import Settings
from bloasis.publish.cache import REGIME_CURRENT_KEY, read_current_regime
from bloasis.publish.events import REGIME_TOPIC
from bloasis.regime.types import REGIMES
from bloasis.store import runs
from bloasis.store.models import OutboxRow, RegimeRow
from tests.kafka_util import consume_all

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parent.parent


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_pipeline_flow_end_to_end(
    flow_db: Engine,
    stack_settings: Settings,
) -> None:
    from prefect.client.orchestration import get_client

    from flows.pipeline import daily_pipeline

    r = redis.Redis.from_url(stack_settings.require("redis_url"))
    r.delete(REGIME_CURRENT_KEY)
    first = asyncio.run(daily_pipeline(as_of=date(2022, 12, 28), trigger="manual"))
    assert first["as_of"] == "2022-12-28" and first["regime"] in REGIMES
    assert first["inserted"] is True and first["previous_regime"] == ""
    assert first["events_queued"] >= 1  # a change from an empty previous regime
    assert first["relay"].startswith("published") and first["relay"].endswith("0 pending")
    assert first["regime_run_id"] == first["run_id"]
    assert str(first["trigger"]) in {"manual", "circuit_breaker", "vix_spike"}

    cached = read_current_regime(r)
    assert cached is not None and cached.as_of == date(2022, 12, 28)
    assert cached.regime == first["regime"] and 0 < r.ttl(REGIME_CURRENT_KEY) <= 21600

    with flow_db.connect() as conn:
        run = runs.get_run(conn, uuid.UUID(first["run_id"]))
    assert run is not None and run["status"] == "completed"
    assert len(run["data_snapshot_hash"]) == 64 and run["data_source"] == "embedded"
    assert {"load_s", "compute_s", "persist_s", "total_s"} <= set(run["timings"])

    events = [
        json.loads(e.value)
        for e in asyncio.run(
            consume_all(stack_settings.require("kafka_bootstrap_servers"), REGIME_TOPIC)
        )
    ]
    assert any(e["regime"]["as_of"] == "2022-12-28" for e in events)

    async def artifact_keys() -> list[str]:
        async with get_client() as client:
            return [a.key or "" for a in await client.read_artifacts()]

    assert "regime-summary" in asyncio.run(artifact_keys())

    # Rerun of the same as-of: nothing new stored or queued.
    outbox_before = _count(flow_db, OutboxRow)
    again = asyncio.run(daily_pipeline(as_of=date(2022, 12, 28), trigger="manual"))
    assert again["inserted"] is False and again["events_queued"] == 0
    assert again["regime_run_id"] == first["run_id"] != again["run_id"]
    assert _count(flow_db, OutboxRow) == outbox_before
    assert _count(flow_db, RegimeRow) == 1

    # An older as-of is stored but does not replace what is current.
    older = asyncio.run(daily_pipeline(as_of=date(2008, 10, 10), trigger="manual"))
    assert older["inserted"] is True and older["regime"] == "crisis"
    cached = read_current_regime(r)
    assert cached is not None and cached.as_of == date(2022, 12, 28)


def test_prefect_deploy_all_registers_deployments(prefect_harness: None) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run(
        [prefect, "work-pool", "create", "bloasis-process", "--type", "process", "--overwrite"],
        env=env, cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    proc = subprocess.run(
        [prefect, "deploy", "--all", "--no-prompt"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    from prefect.client.orchestration import get_client

    async def deployments() -> dict[str, tuple[int, str, list[str], str]]:
        async with get_client() as client:
            out = {}
            for d in await client.read_deployments():
                crons = [getattr(s.schedule, "cron", "") for s in d.schedules]
                tz = d.schedules[0].schedule.timezone if d.schedules else ""
                gcl = d.global_concurrency_limit
                opts = d.concurrency_options
                out[d.name] = (
                    gcl.limit if gcl else 0,
                    str(opts.collision_strategy.value) if opts else "",
                    crons,
                    str(tz),
                )
            return out

    got = asyncio.run(deployments())
    assert got["daily-pipeline"] == (1, "ENQUEUE", ["30 17 * * 1-5"], "America/New_York")
    assert got["replay"][:2] == (1, "CANCEL_NEW")

    async def replay_schedules() -> list[tuple[float, bool]]:
        async with get_client() as client:
            d = await client.read_deployment_by_name("daily-pipeline/replay")
            return [(s.schedule.interval.total_seconds(), s.active) for s in d.schedules]  # type: ignore[union-attr]

    # Off until `bloasis up --replay` turns it on.
    assert asyncio.run(replay_schedules()) == [(30.0, False)]
    assert got["outbox-relay"][:2] == (1, "CANCEL_NEW")
    assert got["strategy-backtest"] == (1, "ENQUEUE", [], "")  # on demand only


def test_cli_run_json_prints_one_object(
    prefect_harness: None, clean_db: Engine, stack_state_dir: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")}
    env |= {
        "BLOASIS_STATE_DIR": str(stack_state_dir),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bloasis.cli", "run", "--json", "--as-of", "2008-09-29",
         "--history-days", "30"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)  # stdout holds the JSON object and nothing else
    assert out["as_of"] == "2008-09-29" and out["regime"] == "crisis"
    assert out["trigger"] == "circuit_breaker"  # -8.8% that day
    assert 0 <= out["confidence"] <= 1 and out["risk_level"] == "high"
    # 2008-08-30..2008-09-26: 19 sessions (Labor Day closed)
    assert out["history_inserted"] == 19 and len(out["run_id"]) == 36
    assert _count(clean_db, RegimeRow) == 20


def test_backfill_flow_artifacts_and_report(
    flow_db: Engine,
) -> None:
    from prefect.client.orchestration import get_client

    from flows.backfill import regime_backfill

    out = asyncio.run(regime_backfill(start=date(2020, 1, 2), end=date(2020, 6, 30), chunk_size=40))
    assert out["sessions"] == 125 == out["inserted"] == len(out["days"])
    assert out["events_queued"] > 0 and out["relay"].startswith("published")
    windows = {w["peak"]: w for w in out["validation"]["windows"]}
    assert windows["2020-02-19"]["stress_share"] >= 0.7
    assert out["days"][0] == {
        "as_of": "2020-01-02",
        "regime": out["days"][0]["regime"],
        "confidence": out["days"][0]["confidence"],
        "risk_level": out["days"][0]["risk_level"],
    }
    with flow_db.connect() as conn:
        run = runs.get_run(conn, uuid.UUID(out["run_id"]))
    assert run is not None and run["status"] == "completed"
    assert run["result"]["validation"]["sessions"] == 125  # the report is stored with the run

    async def artifacts() -> dict[str, object]:
        async with get_client() as client:
            return {a.key: a.data for a in await client.read_artifacts() if a.key}

    arts = asyncio.run(artifacts())
    assert arts["backfill-progress"] == 100.0
    assert "Bear market (peak -> trough)" in str(arts["backfill-validation"])
    again = asyncio.run(regime_backfill(start=date(2020, 1, 2), end=date(2020, 6, 30)))
    assert (again["inserted"], again["existing"], again["events_queued"]) == (0, 125, 0)


def test_pipeline_fans_users_out_on_a_dask_local_cluster(
    flow_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BLOASIS_TASK_RUNNER=dask: the user chunks run on Dask worker processes."""
    monkeypatch.setenv("BLOASIS_USER_CHUNK_SIZE", "60")
    from prefect.client.orchestration import get_client
    from prefect_dask import DaskTaskRunner

    from bloasis.config import load_settings
    from bloasis.users import random_population, seed_population
    from flows.pipeline import daily_pipeline
    from tasks.strategy import task_runner_for

    seed_population(flow_db, random_population(240, seed=9, prefix="dk"))
    runner = task_runner_for(load_settings(task_runner="dask"))
    assert isinstance(runner, DaskTaskRunner)
    out = asyncio.run(
        daily_pipeline.with_options(task_runner=runner)(
            as_of=date(2017, 6, 15), trigger="manual", relay=False
        )
    )
    assert out["regime"] == "bull"
    assert out["users"] == out["user_strategies_written"] == out["user_events_queued"] == 240
    assert out["strategies_inserted"] == 3 and 3 <= len(out["sectors_selected"]) <= 7

    async def facts() -> tuple[int, set[str]]:
        async with get_client() as client:
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(out["run_id"])]))
            )
            derive = [t for t in tasks if t.name.startswith("derive-users")]
            keys = {a.key for a in await client.read_artifacts() if a.key}
            return len(derive), keys

    n_derive, keys = asyncio.run(facts())
    assert n_derive == 4  # 240 users in chunks of 60
    assert {"picks-conservative", "picks-moderate", "picks-aggressive"} <= keys


def test_pipeline_on_a_synthetic_universe_keeps_real_results_apart(
    flow_db: Engine,
) -> None:
    from bloasis.strategy.types import UserPreferences
    from bloasis.users import ensure_user
    from flows.pipeline import daily_pipeline

    ensure_user(flow_db, UserPreferences("syn1", "aggressive"))
    out = asyncio.run(daily_pipeline(trigger="manual", relay=False, universe="synthetic:80:3:3"))
    assert out["users"] == 1 and out["strategies_inserted"] == 3
    assert all(sid.endswith("@synthetic:80:3:3") for sid in out["strategies"].values())
    with flow_db.connect() as conn:
        versions = {v for (v,) in conn.execute(select(RegimeRow.model_version).distinct())}
    assert versions == {"regime-v2@synthetic:80:3:3"}
    with pytest.raises(ValueError, match="synthetic:N"):
        asyncio.run(daily_pipeline(trigger="manual", universe="synthetic:lots"))


def test_user_strategies_flow_runs_the_pipeline_as_a_subflow_for_some_users(
    flow_db: Engine,
) -> None:
    # Both flows are async: the subflow is awaited inside the parent's run.
    from bloasis.users import random_population, seed_population
    from flows.pipeline import daily_pipeline
    from flows.users import user_strategies

    people = random_population(4, seed=3, prefix="sub")
    seed_population(flow_db, people)
    day = date(2022, 12, 28)
    first = asyncio.run(daily_pipeline(as_of=day, trigger="manual", relay=False))
    assert first["users"] >= 4 and first["user_strategies_written"] >= 4
    some = [p.user_id for p in people[:2]]
    out = asyncio.run(user_strategies(users=some, as_of=day))
    assert out["as_of"] == day.isoformat() and out["users"] == 2
    assert out["inserted"] is False and out["user_strategies_written"] == 0  # nothing changed
    with flow_db.connect() as conn:
        statuses = [runs.get_run(conn, uuid.UUID(x["run_id"])) for x in (first, out)]
    assert [r["status"] if r else None for r in statuses] == ["completed", "completed"]


def test_regime_comparison_flow_artifact_has_the_tables_and_the_chart(
    prefect_harness: None, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from flows.regime_compare import regime_comparison

    chart = tmp_path / "cmp.png"
    doc = asyncio.run(regime_comparison(chart=str(chart)))
    assert chart.is_file() and doc["chart"] == str(chart)
    assert len(doc["targets"]) == 11

    async def artifact() -> str:
        async with get_client() as client:
            arts = [a for a in await client.read_artifacts() if a.key == "regime-comparison"]
            return str(arts[-1].data)

    text = asyncio.run(artifact())
    assert "| stock/cash Sharpe |" in text and "**out of sample** (2007-01-03" in text
    assert "| balanced accuracy >= 0.88 |" in text and str(chart.resolve()) in text
