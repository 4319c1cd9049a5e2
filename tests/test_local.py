"""`bloasis up` refuses clearly what it cannot do, before starting anything of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bloasis.config import Settings


def _env(stack_settings: Settings, state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOASIS_", "PREFECT_API"))}
    # The session stack's servers, as configured URLs: `up` starts no embedded server here.
    for name in ("database_url", "redis_url", "kafka_bootstrap_servers"):
        env[f"BLOASIS_{name.upper()}"] = str(stack_settings.value_of(name))
    return env | {"BLOASIS_STATE_DIR": str(state), "BLOASIS_KAFKA_IDEMPOTENCE": "false", **extra}


def test_up_names_the_busy_prefect_port_and_starts_nothing(
    stack_settings: Settings, tmp_path: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = _env(stack_settings, tmp_path / "state", BLOASIS_PREFECT_PORT=str(port))
        done = subprocess.run(
            [sys.executable, "-m", "bloasis.cli", "up"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("bloasis: local deployment: port 127.0.0.1:")
    assert f"{port} is in use" in last and "BLOASIS_PREFECT_PORT" in last
    assert not (tmp_path / "state" / "local.json").exists()
    assert not (tmp_path / "state" / "serve.pid").exists()


def test_up_rejects_a_bad_replay_span(stack_settings: Settings, tmp_path: Path) -> None:
    env = _env(stack_settings, tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-m", "bloasis.cli", "up", "--replay", "2009-06-30:2007-06-01"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "BLOASIS_REPLAY_END=2009-06-30" not in done.stderr  # the values are the other way
    assert "BLOASIS_REPLAY_END=2007-06-01 is before BLOASIS_REPLAY_START=2009-06-30" in done.stderr
    assert not (tmp_path / "state" / "local.json").exists()


def test_replay_refuses_a_store_with_later_regimes(stack_settings: Settings) -> None:
    """`up --replay START` on a store that already has later regimes would keep serving those
    ("current" is the latest as-of): it refuses, naming the setting and what to do."""
    from datetime import date

    from bloasis.local import LocalError, check_replay_state
    from tests.test_grpc import _seed_sync, _settings

    s = _settings(stack_settings)
    _seed_sync(s, [(date(2009, 3, 9), "bear")], notify=False)
    check_replay_state(s.model_copy(update={"replay_start": date(2009, 3, 9)}))  # not later
    with pytest.raises(LocalError) as err:
        check_replay_state(s.model_copy(update={"replay_start": date(2007, 6, 1)}))
    msg = str(err.value)
    assert "BLOASIS_REPLAY_START=2007-06-01" in msg and "up to 2009-03-09" in msg
    assert "fresh state dir" in msg
