"""The user fan-out on a real Dask cluster: a `dask scheduler` and two `dask worker` processes
started separately, in their own directories (nothing read from the flow's working directory),
addressed as BLOASIS_DASK_ADDRESS would; one worker killed mid-run, and the run still completes
with nothing duplicated."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine, text

from bloasis import dask_cluster
from bloasis.local import project_root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any], Path]]:
    state = tmp_path_factory.mktemp("dask")
    address, records = dask_cluster.start(state, 2)
    try:
        yield address, records, state
    finally:
        dask_cluster.stop(records)  # only what this fixture started, by PID


def test_workers_are_processes_of_their_own_in_their_own_directories(
    cluster: tuple[str, dict[str, Any], Path],
) -> None:
    address, records, state = cluster
    assert len(dask_cluster.wait_for_workers(address, 2)) == 2
    for name in dask_cluster.worker_names(2):
        nanny = psutil.Process(records[name]["pid"])
        procs = [nanny, *nanny.children(recursive=True)]
        assert any("distributed" in " ".join(p.cmdline()) or "dask" in " ".join(p.cmdline())
                   for p in procs)  # fmt: skip
        for p in procs:
            assert Path(p.cwd()) == state / "dask" / name
            assert Path(p.cwd()) != project_root()


def _kill_a_worker_once_busy(address: str, rec: dict[str, Any], done: dict[str, Any]) -> None:
    """SIGKILL worker 1 (its nanny and its process: a lost machine) as soon as the scheduler has
    the users' derivation tasks processing (Dask keys the daily run's `derive_users` tasks by
    that function's name)."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not done.get("stop"):
            processing = client.processing()
            ours = [w for w, keys in processing.items() if any("derive" in str(k) for k in keys)]
            if ours:
                nanny = psutil.Process(rec["pid"])
                victims = [*nanny.children(recursive=True), nanny]
                done["busy_workers"] = len(ours)
                for p in victims:
                    p.send_signal(signal.SIGKILL)
                done["killed"] = [p.pid for p in victims]
                return
            time.sleep(0.005)


def test_the_pipeline_survives_a_lost_worker_without_duplicates(
    flow_db: Engine,
    cluster: tuple[str, dict[str, Any], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect_dask import DaskTaskRunner

    from bloasis.config import load_settings
    from bloasis.users import random_population, seed_population
    from flows.pipeline import daily_pipeline
    from tasks.strategy import task_runner_for

    address, records, _ = cluster
    monkeypatch.setenv("BLOASIS_TASK_RUNNER", "dask")
    monkeypatch.setenv("BLOASIS_DASK_ADDRESS", address)
    monkeypatch.setenv("BLOASIS_USER_CHUNK_SIZE", "250")
    n = 6000
    seed_population(flow_db, random_population(n, seed=5, prefix="dc"))
    runner = task_runner_for(load_settings())
    assert isinstance(runner, DaskTaskRunner)  # BLOASIS_DASK_ADDRESS: the cluster, not a local one
    state: dict[str, Any] = {}
    killer = threading.Thread(
        target=_kill_a_worker_once_busy, args=(address, records["dask-worker-1"], state)
    )
    killer.start()
    try:
        out = asyncio.run(
            daily_pipeline.with_options(task_runner=runner)(
                as_of=date(2017, 6, 15), trigger="manual", relay=False
            )
        )
    finally:
        state["stop"] = True
        killer.join(30)
    assert state.get("killed"), "the worker was not killed while the run was busy"
    assert out["users"] == out["user_strategies_written"] == out["user_events_queued"] == n
    with flow_db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT user_id) FROM user_strategies "
                "WHERE user_id LIKE 'dc%'"
            )
        ).one()
        events = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT event_id) FROM outbox "
                "WHERE key LIKE 'user:dc%' AND headers ->> 'event_type' = 'strategy_signal'"
            )
        ).one()
    assert tuple(rows) == (n, n)
    assert tuple(events) == (n, n)
    assert len(dask_cluster.wait_for_workers(address, 1)) == 1  # the other one did the rest
    # Every user's Redis key is there, under the version the run switched to.
    from bloasis.publish.cache import USERS_VERSION_KEY, make_redis, user_key

    r = make_redis(load_settings().require("redis_url"))
    version = (r.get(USERS_VERSION_KEY) or b"").decode()
    assert version == uuid.UUID(out["run_id"]).hex[-12:] and out["user_keys_cached"] == n
    with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.exists(user_key(f"dc{i:04d}", version))
        assert sum(pipe.execute()) == n
    r.close()
