"""Settings from `BLOASIS_` environment variables, validated at start.

Precedence: real environment > `<state dir>/env` written by `bloasis stack up` > defaults. A bad
value raises `SettingsError` whose message names the variable and what was expected.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BLOASIS_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def default_state_dir() -> Path:
    return Path(os.environ.get(f"{ENV_PREFIX}STATE_DIR", ".bloasis"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    state_dir: Path = Field(default=Path(".bloasis"), description="where the embedded stack lives")
    database_url: str | None = Field(
        default=None, description="postgresql://user@host:port/db (psycopg 3 is used)"
    )
    redis_url: str | None = Field(default=None, description="redis://host:port/db")
    kafka_bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port]")
    kafka_idempotence: bool = Field(
        default=True, description="idempotent producer; Redpanda supports it, Tansu does not"
    )
    grpc_address: str = Field(default="127.0.0.1:50051", description="host:port to serve on")
    regime_ttl_seconds: int = Field(default=21600, gt=0, le=30 * 86400)
    sectors_ttl_seconds: int = Field(default=21600, gt=0, le=30 * 86400)
    strategy_ttl_seconds: int = Field(default=86400, gt=0, le=30 * 86400)
    history_max_days: int = Field(
        default=14000, gt=0, description="longest GetRegimeHistory range accepted"
    )
    history_page_size: int = Field(default=1000, gt=0, le=10000)
    model_version: str = Field(default="regime-v2", min_length=1, max_length=64)
    universe: str = Field(
        default="embedded",
        description="embedded (the real dataset) or synthetic:N[:seed[:years]] for scale",
    )
    demo_user: str = Field(default="test", max_length=128, description="seeded by stack up")
    task_runner: str = Field(
        default="thread", pattern="^(thread|dask)$", description="fan-out of user strategies"
    )
    dask_address: str | None = Field(
        default=None, description="tcp://scheduler:8786; unset with task_runner=dask: LocalCluster"
    )
    user_chunk_size: int = Field(default=10000, gt=0, le=1_000_000)
    top_n: int = Field(default=15, gt=0, le=100, description="picks per strategy")
    relay_batch_size: int = Field(default=500, gt=0, le=100000)
    log_level: str = Field(default="INFO")

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        scheme = v.split("://", 1)[0]
        if "://" not in v or not scheme.startswith("postgresql"):
            raise ValueError("expected a postgresql://user@host:port/dbname URL")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not (v.startswith("redis://") or v.startswith("rediss://")):
            raise ValueError("expected a redis://host:port/db or rediss:// URL")
        return v

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _kafka(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        for part in v.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("expected host:port[,host:port...] with ports in 1..65535")
        return v

    @field_validator("grpc_address")
    @classmethod
    def _grpc(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:50051")
        return v

    @field_validator("universe")
    @classmethod
    def _universe(cls, v: str) -> str:
        parse_universe(v)
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        up = v.upper()
        if up not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return up

    def require(self, name: str) -> str:
        value = getattr(self, name)
        if not value:
            raise SettingsError(
                f"{ENV_PREFIX}{name.upper()} is not set: run `bloasis stack up` (and "
                f"`source {self.state_dir}/env`) or point it at a server"
            )
        return str(value)


def parse_universe(spec: str) -> tuple[str, int, int, int]:
    """("embedded", 0, 0, 0) or ("synthetic", n_symbols, seed, years)."""
    if spec == "embedded":
        return ("embedded", 0, 0, 0)
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind != "synthetic" or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError("expected embedded or synthetic:N[:seed[:years]], e.g. synthetic:500:7")
    n, seed, years = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0,
                      int(parts[2]) if len(parts) > 2 else 10)  # fmt: skip
    if not (1 <= n <= 100_000 and 1 <= years <= 50):
        raise ValueError("synthetic universes take 1..100000 symbols and 1..50 years")
    return ("synthetic", n, seed, years)


def _read_env_file(path: Path) -> dict[str, str]:
    """Parse `export KEY=VALUE` lines written by the embedded stack."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if sep and key.startswith(ENV_PREFIX):
            out[key] = value.strip().strip("'\"")
    return out


def load_settings(**overrides: Any) -> Settings:
    """Build settings; raises SettingsError naming the bad variable."""
    state_dir = Path(overrides.get("state_dir") or default_state_dir())
    file_values = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in _read_env_file(state_dir / "env").items()
        if k not in os.environ
    }
    init = {**file_values, **overrides}
    try:
        return Settings(**init)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            got = err.get("input")
            lines.append(f"{ENV_PREFIX}{field.upper()}={got!r}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
