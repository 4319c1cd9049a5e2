"""Shared fixtures: one real embedded stack (PostgreSQL, Redis, Kafka) per test session under a
temporary state dir, and one Prefect test harness for the flow tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Hermetic: a developer's sourced .bloasis/env must not point tests at their servers, and
# Prefect reads its settings at import time. Kept: what the opt-in smoke test against the real
# providers reads (tests/test_network.py), which changes nothing for the other tests.
_KEPT = ("BLOASIS_NETWORK_TESTS", "BLOASIS_FRED_API_KEY")
for _k in [k for k in os.environ if k.startswith("BLOASIS_") and k not in _KEPT]:
    del os.environ[_k]
_PREFECT_HOME = tempfile.mkdtemp(prefix="bloasis-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
# gRPC's fork handlers can crash a child forked (by the stack, to start a server as another
# user) while gRPC threads are busy; must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import pytest  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from bloasis.config import Settings  # noqa: E402
from bloasis.store.models import Base  # noqa: E402
from tests.grpc_harness import Harness  # noqa: E402

# A test that uses one of these (directly or through its fixtures) talks to real servers.
SERVER_FIXTURES = frozenset(
    {"stack_state_dir", "stack_settings", "engine", "clean_db", "prefect_harness", "harness"}
)
# Modules whose tests start servers or processes of their own (the fast tier leaves them out).
SERVER_MODULES = frozenset(
    {
        "test_bench_grpc_users", "test_bench_pipeline", "test_bench_backfill", "test_cli",
        "test_serve_group", "test_faults", "test_stack", "test_local", "test_ui_e2e",
        "test_soak", "test_flow", "test_flow_backtest", "test_deployments_material",
        "test_live_replay_e2e", "test_bench_suite", "test_network", "test_dask_cluster",
    }
)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks `servers` on tests that talk to real servers (`make test-unit` runs the others:
    the fast tier). Tests against the real FRED and Yahoo services (marker `network`) run only
    when asked for with BLOASIS_NETWORK_TESTS=1: CI and these machines have no internet. They
    are deselected otherwise (listed as deselected, never skipped)."""
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SERVER_MODULES:
            item.add_marker(pytest.mark.servers)
    if os.environ.get("BLOASIS_NETWORK_TESTS") == "1":
        return
    network = [i for i in items if i.get_closest_marker("network")]
    if network:
        config.hook.pytest_deselected(items=network)
        items[:] = [i for i in items if not i.get_closest_marker("network")]


@pytest.fixture(scope="session")
def stack_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from bloasis import stack

    state = tmp_path_factory.mktemp("stack")
    try:
        stack.up(state)
        yield state
    finally:
        stack.down(state)


@pytest.fixture(scope="session")
def stack_settings(stack_state_dir: Path) -> Settings:
    from bloasis.config import load_settings
    from bloasis.store.db import upgrade

    # Reads <state>/env exactly as a user's shell would.
    settings = load_settings(state_dir=stack_state_dir)
    upgrade(settings.require("database_url"))
    return settings


@pytest.fixture(scope="session")
def engine(stack_settings: Settings) -> Engine:
    from bloasis.store.db import get_engine

    return get_engine(stack_settings)


def truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        tables = ", ".join(Base.metadata.tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def clean_db(engine: Engine) -> Engine:
    truncate_all(engine)
    return engine


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    # ~16 s to start: once per session, and only for the tests that run flows.
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def flow_db(
    prefect_harness: None, clean_db: Engine, stack_state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Engine:
    """For tests that run flows: the session's Prefect harness, an empty database, and flows
    that find the embedded stack (they load their settings through BLOASIS_STATE_DIR)."""
    monkeypatch.setenv("BLOASIS_STATE_DIR", str(stack_state_dir))
    return clean_db


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    """gRPC servers and channels a test starts, stopped at its end."""
    h = Harness()
    try:
        yield h
    finally:
        await h.close()
