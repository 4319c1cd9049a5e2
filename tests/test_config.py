"""Settings: defaults, precedence, and errors that name the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bloasis.config import SettingsError, load_settings


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(state_dir=tmp_path)
    assert s.grpc_address == "127.0.0.1:50051"
    assert s.regime_ttl_seconds == 21600
    assert s.kafka_idempotence is True
    assert s.database_url is None


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("BLOASIS_DATABASE_URL", "mysql://x", "postgresql"),
        ("BLOASIS_REDIS_URL", "localhost:6379", "redis://"),
        ("BLOASIS_KAFKA_BOOTSTRAP_SERVERS", "localhost", "host:port"),
        ("BLOASIS_KAFKA_BOOTSTRAP_SERVERS", "h:99999", "1..65535"),
        ("BLOASIS_GRPC_ADDRESS", "nope", "host:port"),
        ("BLOASIS_REGIME_TTL_SECONDS", "0", "greater than 0"),
        ("BLOASIS_REGIME_TTL_SECONDS", "soon", "integer"),
        ("BLOASIS_KAFKA_IDEMPOTENCE", "maybe", "boolean"),
        ("BLOASIS_LOG_LEVEL", "LOUD", "DEBUG"),
    ],
)
def test_bad_value_names_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load_settings(state_dir=tmp_path)
    assert var in str(err.value)
    assert expected in str(err.value)


def test_env_file_is_read_and_real_env_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "env").write_text(
        "# written by bloasis stack up\n"
        "export BLOASIS_REDIS_URL=redis://127.0.0.1:7001/0\n"
        "export BLOASIS_KAFKA_IDEMPOTENCE=false\n"
        "export BLOASIS_GRPC_ADDRESS=127.0.0.1:6000\n"
    )
    monkeypatch.setenv("BLOASIS_GRPC_ADDRESS", "127.0.0.1:7000")
    s = load_settings(state_dir=tmp_path)
    assert s.require("redis_url") == "redis://127.0.0.1:7001/0"
    assert s.kafka_idempotence is False
    assert s.grpc_address == "127.0.0.1:7000"


def test_require_names_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="BLOASIS_DATABASE_URL is not set"):
        load_settings(state_dir=tmp_path).require("database_url")


def test_cli_fails_at_start_naming_variable(tmp_path: Path) -> None:
    env = {"BLOASIS_STATE_DIR": str(tmp_path), "BLOASIS_REDIS_URL": "localhost", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "bloasis.cli", "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "BLOASIS_REDIS_URL='localhost'" in proc.stderr
    assert "Traceback" not in proc.stderr
