"""The `strategy-backtest` flow under the session's Prefect harness: the stored backtest, its
artifacts (progress, summary, links) and pictures, a second identical run found rather than
recomputed, the decision blocks as tasks (also on Dask worker processes), and the deployment of
prefect.yaml with its parameters."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from bloasis.backtest.engine import BENCHMARKS
from bloasis.backtest.types import BacktestInputError
from bloasis.store import backtests as store

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_facts(flow_run_id: str) -> tuple[dict[str, Any], list[str]]:
    """The artifacts of one flow run (key -> data) and the names of its task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    run_id = uuid.UUID(flow_run_id)

    async def read() -> tuple[dict[str, Any], list[str]]:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        return {a.key: a.data for a in arts if a.key}, [t.name for t in tasks]

    return asyncio.run(read())


def test_backtest_flow_stores_reports_and_finds_the_same_inputs(flow_db: Engine) -> None:
    from flows.backtest import strategy_backtest

    params: dict[str, Any] = {
        "start": date(2021, 1, 4),
        "end": date(2022, 12, 28),
        "profiles": ["moderate"],
        "rebalance": "monthly",
    }
    t0 = time.perf_counter()
    first = asyncio.run(strategy_backtest(**params))
    first_s = time.perf_counter() - t0
    assert first["found"] is False
    names = ["moderate", *BENCHMARKS]
    assert list(first["summary"]) == names
    for name, measures in first["summary"].items():
        assert set(measures) == {"cagr", "sharpe", "max_drawdown"}
        for key, value in measures.items():
            assert isinstance(value, float) and math.isfinite(value), (name, key, value)
        assert -1.0 <= measures["max_drawdown"] <= 0.0

    bid = uuid.UUID(first["backtest_id"])
    with flow_db.connect() as conn:
        stored = store.get(conn, bid)
        curves = store.equity(conn, bid)
    assert stored is not None and stored.status == "succeeded" and stored.progress == 1.0
    assert stored.spec["rebalance"] == "monthly" and stored.spec["start"] == "2021-01-04"
    assert set(curves) == set(names)
    sessions = stored.summary["moderate"]["sessions"]
    assert all(len(c) == sessions > 400 for c in curves.values())
    assert curves["moderate"][0] == (date(2021, 1, 4), 100000.0)

    arts, tasks = _run_facts(first["flow_run_id"])
    assert arts["backtest-progress"] == 100.0
    summary = str(arts["backtest-summary"])
    assert "| measure | moderate | S&P 500 buy and hold |" in summary
    assert all(b in summary for b in BENCHMARKS)
    assert "## Whole range" in summary and "Survivorship bias" in summary
    # regime-v2 was fitted on the whole history: no second table repeating the first.
    assert "All of the range is in sample (the notes say why)." in summary
    assert "Out of sample" not in summary and summary.count("| measure |") == 1
    assert "Computed in" in summary and "bloasis backtest --profile moderate" in summary
    # 24 monthly decision sessions: one block (64 sessions a block), named by its sessions.
    blocks = [t for t in tasks if t.startswith("decide-block")]
    assert len(blocks) == 1 and blocks[0].startswith("decide-block-2021-"), tasks
    assert "backtest-pictures" in " ".join(tasks)

    folder = Path(first["folder"])
    assert folder == (Path(os.environ["BLOASIS_STATE_DIR"]) / "backtests" / str(bid)).resolve()
    for name in ("equity", "drawdown", "regimes"):
        png = folder / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert str(png) in str(arts[f"backtest-{name}"])  # the link artifact names the file
    page = (folder / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "data:image/png;base64" in page
    assert str(folder / "report.html") in str(arts["backtest-report"])

    # The same inputs again: the stored backtest, nothing decided again.
    t0 = time.perf_counter()
    again = asyncio.run(strategy_backtest(**params))
    again_s = time.perf_counter() - t0
    assert again["found"] is True and again["backtest_id"] == first["backtest_id"]
    assert again["summary"] == first["summary"] and again["flow_run_id"] != first["flow_run_id"]
    arts2, tasks2 = _run_facts(again["flow_run_id"])
    assert not [t for t in tasks2 if t.startswith("decide-block")], tasks2
    assert "**Found**" in str(arts2["backtest-summary"]) and arts2["backtest-progress"] == 100.0
    assert again_s < first_s, (again_s, first_s)

    # A bad input fails the run with the field named, before anything is stored.
    with pytest.raises(BacktestInputError, match="initial_cash"):
        asyncio.run(strategy_backtest(**params | {"initial_cash": "lots"}))
    with pytest.raises(BacktestInputError, match="rebalance"):
        asyncio.run(strategy_backtest(**params | {"rebalance": "hourly"}))


def test_summary_markdown_splits_in_and_out_of_sample() -> None:
    """Without servers: a model chosen on part of the range gets both tables (the return
    measures only: samples have no trade measures), the found wording and the file links."""
    from datetime import UTC, datetime

    from flows.backtest import summary_markdown

    names = ["moderate", *BENCHMARKS]
    measures = {"total_return": 0.5, "cagr": 0.04, "sharpe": 0.6, "max_drawdown": -0.3}
    whole = {n: measures | {"trades": 10, "win_rate": 0.5} for n in names}
    samples = {
        n: {
            "in_sample": measures | {"from": "2000-01-04", "to": "2006-12-29"},
            "out_of_sample": measures | {"from": "2007-01-03", "to": "2022-12-28"},
        }
        for n in names
    }
    stored = store.StoredBacktest(
        uuid.uuid4(), "k" * 64, "succeeded", {"rebalance": "weekly"}, "regime-v3", "h" * 64, 1.0,
        "done", whole,
        {"names": names, "samples": samples, "notes": ["a note"], "execution": "at the close",
         "start": "2000-01-03", "end": "2022-12-28"},
        None, datetime(2026, 12, 3, 12, 0, tzinfo=UTC), None,
    )  # fmt: skip
    png = Path("/state/backtests/x/equity.png")
    md = summary_markdown(stored, found=True, seconds=0.1, files={"equity": png}, cli="bloasis")
    assert "## In sample: 2000-01-04 to 2006-12-29\n" in md
    assert "## Out of sample: 2007-01-03 to 2022-12-28\n" in md
    assert md.count("| measure |") == 3 and md.count("| trades |") == 1  # the whole range's
    assert "**Found**" in md and "2026-12-03 12:00 UTC" in md and "- a note" in md
    assert f"[{png}]({png.as_uri()})" in md


def test_backtest_blocks_run_on_dask_worker_processes(flow_db: Engine) -> None:
    """BLOASIS_TASK_RUNNER=dask: the decision blocks (inputs, outputs and the run-name
    function pickled) run on a local cluster's worker processes, results in block order."""
    from prefect_dask import DaskTaskRunner

    from bloasis.config import load_settings
    from flows.backtest import strategy_backtest
    from tasks.strategy import task_runner_for

    runner = task_runner_for(load_settings(task_runner="dask"))
    assert isinstance(runner, DaskTaskRunner)
    out = asyncio.run(
        strategy_backtest.with_options(task_runner=runner)(
            start=date(2021, 6, 1), end=date(2022, 12, 28), profiles=["aggressive"]
        )
    )
    assert out["found"] is False
    assert all(math.isfinite(v) for m in out["summary"].values() for v in m.values())
    with flow_db.connect() as conn:
        stored = store.get(conn, uuid.UUID(out["backtest_id"]))
    assert stored is not None and stored.status == "succeeded"
    _, tasks = _run_facts(out["flow_run_id"])
    # ~83 weekly sessions: two blocks, the first from June 2021, the second ending in 2022.
    blocks = sorted(t for t in tasks if t.startswith("decide-block"))
    assert len(blocks) == 2, tasks
    assert blocks[0].startswith("decide-block-2021-06-") and blocks[1].endswith(
        tuple(f"-to-2022-12-{d}" for d in range(19, 29))
    ), blocks


def test_strategy_backtest_deployment_registers_with_its_parameters(
    prefect_harness: None,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run(
        [prefect, "work-pool", "create", "bloasis-process", "--type", "process", "--overwrite"],
        env=env, cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    proc = subprocess.run(
        [prefect, "deploy", "--name", "strategy-backtest", "--no-prompt"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_deployment_by_name("strategy-backtest/strategy-backtest")

    d = asyncio.run(read())
    assert d.schedules == [] and d.work_pool_name == "bloasis-process"
    gcl, opts = d.global_concurrency_limit, d.concurrency_options
    assert gcl is not None and gcl.limit == 1  # one backtest at a time, others wait
    assert opts is not None and opts.collision_strategy.value == "ENQUEUE"
    assert d.parameters == {
        "profiles": ["conservative", "moderate", "aggressive"],
        "start": "2000-01-03",
        "end": "2022-12-28",
        "rebalance": "weekly",
    }
    schema = d.parameter_openapi_schema
    assert schema["required"] == ["start", "end"]
    assert set(schema["properties"]) == {
        "start", "end", "profiles", "user_ids", "rebalance", "commission", "slippage",
        "initial_cash", "symbols",
    }  # fmt: skip
    assert schema["properties"]["initial_cash"]["default"] == "100000"
