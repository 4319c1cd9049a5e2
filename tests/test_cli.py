"""The `bloasis` command as a user runs it: clear one-line errors, JSON output, reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bloasis.config import Settings


def bloasis(
    *args: str, state_dir: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")}
    if state_dir is not None:
        env["BLOASIS_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "-m", "bloasis.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_run_rejects_a_non_session_date(stack_settings: Settings, stack_state_dir: Path) -> None:
    proc = bloasis("run", "--as-of", "2022-12-25", state_dir=stack_state_dir)
    assert proc.returncode == 1
    assert "2022-12-25 is not a trading session; the session before is 2022-12-23" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = bloasis("run", "--as-of", "1950-01-03", state_dir=stack_state_dir)
    assert proc.returncode == 1 and "outside the data (1990-01-02..2022-12-28)" in proc.stderr


def test_bad_date_argument() -> None:
    proc = bloasis("run", "--as-of", "yesterday")
    assert proc.returncode == 2 and "expected a date YYYY-MM-DD" in proc.stderr


def test_get_without_server_is_unavailable(tmp_path: Path) -> None:
    proc = bloasis("get", "regime", "--address", "127.0.0.1:1", state_dir=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert "UNAVAILABLE" in proc.stderr and "Traceback" not in proc.stderr


def test_run_without_database_names_the_variable(tmp_path: Path) -> None:
    proc = bloasis("run", state_dir=tmp_path)
    assert proc.returncode == 1
    assert "BLOASIS_DATABASE_URL is not set" in proc.stderr


def test_stack_status_and_cache_listing(stack_settings: Settings, stack_state_dir: Path) -> None:
    status = bloasis("stack", "status", state_dir=stack_state_dir)
    assert status.returncode == 0
    for name in ("postgres", "redis", "kafka"):
        assert name in status.stdout
    assert status.stdout.count("running") >= 3
    topics = bloasis("topics", "--ensure", state_dir=stack_state_dir)
    assert topics.returncode == 0, topics.stderr
    assert "regime-events\t3 partitions" in topics.stdout
    assert "strategy-events\t6 partitions" in topics.stdout


def test_db_current(stack_settings: Settings, stack_state_dir: Path) -> None:
    proc = bloasis("db", "current", state_dir=stack_state_dir)
    assert proc.returncode == 0 and "schema revision: 0002" in proc.stdout
