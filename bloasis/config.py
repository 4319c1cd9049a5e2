"""Settings from `BLOASIS_` environment variables, validated at start.

Precedence: real environment > `<state dir>/env` written by `bloasis stack up` > defaults. A bad
value raises `SettingsError` whose message names the variable and what was expected.
"""

from __future__ import annotations

import os
import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BLOASIS_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def default_state_dir() -> Path:
    return Path(os.environ.get(f"{ENV_PREFIX}STATE_DIR", ".bloasis"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    state_dir: Path = Field(default=Path(".bloasis"), description="where the embedded stack lives")
    # URLs may carry passwords: SecretStr keeps them out of repr; `require`/`value_of` unwrap.
    database_url: SecretStr | None = Field(
        default=None, description="postgresql://user:pass@host:port/db (psycopg 3 is used)"
    )
    redis_url: SecretStr | None = Field(
        default=None, description="redis://[user:pass@]host:port/db or rediss:// (TLS)"
    )
    kafka_bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port]")
    kafka_idempotence: bool = Field(
        default=True, description="idempotent producer; Redpanda supports it, Tansu does not"
    )
    # Kafka client security (bloasis.publish.kafka_options builds the aiokafka arguments).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle (PEM) for SSL")
    grpc_address: str = Field(default="127.0.0.1:50051", description="host:port to serve on")
    grpc_processes: int = Field(
        default=1, ge=1, le=64,
        description="`bloasis serve` processes sharing the port (SO_REUSEPORT); 1: one process",
    )  # fmt: skip
    grpc_reuseport: bool = Field(
        default=False, description="bind with SO_REUSEPORT (set for each process of a group)"
    )
    # gRPC security (bloasis.serve.auth; README "Security"). Server: TLS when cert and key are
    # set, bearer tokens when a tokens file or inline tokens are set. Clients: CA and token.
    grpc_tls_cert: Path | None = Field(default=None, description="server certificate chain (PEM)")
    grpc_tls_key: Path | None = Field(default=None, description="server private key (PEM)")
    grpc_tls_ca: Path | None = Field(default=None, description="clients: trust these roots (TLS)")
    grpc_tokens_file: Path | None = Field(default=None, description="lines `TOKEN SCOPE [NAME]`")
    grpc_tokens: SecretStr | None = Field(default=None, description="`TOKEN SCOPE [NAME]; ...`")
    grpc_token: SecretStr | None = Field(default=None, description="clients: bearer token sent")
    regime_ttl_seconds: int = Field(default=21600, gt=0, le=30 * 86400)
    sectors_ttl_seconds: int = Field(default=21600, gt=0, le=30 * 86400)
    strategy_ttl_seconds: int = Field(default=86400, gt=0, le=30 * 86400)
    user_strategy_cache_seconds: float = Field(
        default=300.0, ge=0, le=3600,
        description="how long `serve` reuses a user's latest strategy answer in process (dropped "
        "at once on a new run, or a preference change or recompute on that server; the bound "
        "for changes it is not notified of); 0: off",
    )  # fmt: skip
    answer_cache: bool = Field(
        default=True,
        description="`serve` keeps serialised answers of the hot methods in process "
        "(bloasis.serve.answer_cache); false: every call reads through the stores",
    )
    answer_cache_entries: int = Field(
        default=200_000, gt=0, le=10_000_000,
        description="at most this many answers cached (the oldest dropped first)",
    )  # fmt: skip
    answer_cache_mb: int = Field(
        default=512, gt=0, le=65536,
        description="at most this many MiB of cached answers (the oldest dropped first)",
    )  # fmt: skip
    watch_max_streams: int = Field(
        default=1000, ge=0,
        description="WatchRegime streams one server serves at once (v1 and v2); beyond it "
        "RESOURCE_EXHAUSTED; 0: no limit",
    )  # fmt: skip
    history_max_days: int = Field(
        default=14000, gt=0, description="longest GetRegimeHistory range accepted"
    )
    history_page_size: int = Field(default=1000, gt=0, le=10000)
    model_version: str = Field(default="regime-v2", min_length=1, max_length=64)
    # The market data the pipeline reads. BLOASIS_MARKET_DATA is its name; BLOASIS_UNIVERSE, its
    # older name, is still read (see `_market_data_alias`).
    universe: str = Field(
        default="embedded",
        description="embedded (real data), live or database (the point-in-time store),"
        " file:PATH (CSV/Parquet), parquet:DIR (bars store), synthetic:N[:seed[:years]]",
    )
    market_data: str | None = Field(default=None, description="alias of universe (see above)")
    # Live market data (bloasis.ingest, bloasis.marketdata.providers; README "Live data").
    live_universe: str = Field(
        default="sp500",
        description="symbols ingested and scored with live data: sp500 (shipped S&P 500 file),"
        " current20 (the embedded 20 stocks) or file:PATH (CSV symbol,name,sector[,yahoo])",
    )
    live_providers: str = Field(
        default="fred,yahoo",
        description="providers the ingest uses: fred,yahoo (both), or yahoo alone (no FRED key:"
        " VIX from Yahoo, no Treasury or credit series)",
    )
    fred_url: str = Field(default="https://api.stlouisfed.org", description="FRED API base URL")
    fred_api_key: SecretStr | None = Field(default=None, description="FRED API key (a secret)")
    yahoo_url: str = Field(
        default="https://query1.finance.yahoo.com", description="Yahoo Finance chart API base URL"
    )
    provider_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    provider_attempts: int = Field(
        default=4, ge=1, le=10, description="tries per provider request (429/5xx/timeouts)"
    )
    provider_max_retry_after_seconds: float = Field(
        default=120.0, ge=0, le=3600,
        description="longest 429 Retry-After honoured; a longer one fails the request",
    )  # fmt: skip
    fred_requests_per_second: float = Field(default=2.0, gt=0, le=1000)
    yahoo_requests_per_second: float = Field(default=5.0, gt=0, le=1000)
    provider_concurrency: int = Field(default=8, ge=1, le=64, description="requests in flight")
    session_settle_seconds: int = Field(
        default=1800, ge=0, le=86400,
        description="a session is ingested and classified only this long after its close",
    )  # fmt: skip
    splice_tolerance: float = Field(
        default=0.02, gt=0, lt=1,
        description="relative gap allowed where live data joins the stored history",
    )  # fmt: skip
    crosscheck_tolerance: float = Field(
        default=0.01, gt=0, lt=1,
        description="relative disagreement between two providers that is only a warning below",
    )  # fmt: skip
    revision_lookback_sessions: int = Field(
        default=5, ge=0, le=250, description="stored sessions re-fetched to detect revisions"
    )
    live_history_start: date = Field(
        default=date(2020, 1, 2),
        description="first session fetched for a symbol or series the store does not have",
    )
    market_clock: str = Field(
        default="wall",
        description="wall, or file:PATH written by the local provider of a live replay"
        " (bloasis.clock)",
    )
    catch_up_max_sessions: int = Field(
        default=60, ge=1, le=2520,
        description="missed sessions computed one by one; older ones get a regime-only pass",
    )  # fmt: skip
    quarantine: bool = Field(
        default=False,
        description="drop bad rows/symbols with a warning instead of failing the run",
    )
    min_history_sessions: int = Field(
        default=21, ge=1, le=2520, description="a symbol needs this many closes to be scored"
    )
    demo_user: str = Field(default="test", max_length=128, description="seeded by stack up")
    task_runner: str = Field(
        default="thread", pattern="^(thread|dask)$", description="fan-out of user strategies"
    )
    dask_address: str | None = Field(
        default=None, description="tcp://scheduler:8786; unset with task_runner=dask: LocalCluster"
    )
    user_chunk_size: int = Field(
        default=10000, gt=0, le=1_000_000, description="users per task (loaded, derived, stored)"
    )
    user_symbol_events: bool = Field(
        default=True,
        description="besides each user's strategy event, one event per signal (the original "
        "executor's input): about 8 per user, so at a million users they dominate a run "
        "(bench users_1m); off, executors read the signals of the user's strategy event",
    )
    top_n: int = Field(default=15, gt=0, le=100, description="picks per strategy")
    relay_batch_size: int = Field(
        default=5000, gt=0, le=100000, description="events per relay transaction (one claim)"
    )
    run_lock_timeout_seconds: float = Field(
        default=900, gt=0, le=86400, description="how long a run waits for one of its as-of"
    )
    log_level: str = Field(default="INFO")
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one object per line (ts, level, logger, message, run_id)"
    )
    # Observability (bloasis.metrics, bloasis.freshness). A port of 0 turns that endpoint off.
    metrics_host: str = Field(
        default="127.0.0.1", min_length=1, description="address the /metrics endpoints bind"
    )
    metrics_port: int = Field(default=9464, ge=0, lt=65536, description="`bloasis serve` metrics")
    relay_metrics_port: int = Field(
        default=9465, ge=0, lt=65536, description="looping `bloasis relay` metrics"
    )
    freshness_sla_seconds: int = Field(
        default=129600, ge=0, le=30 * 86400,
        description="alert when the served regime is older (trading days only); 0: off",
    )  # fmt: skip
    # Local deployment (`bloasis up`): the Prefect server's UI/API port, and replay mode.
    prefect_port: int = Field(default=4200, gt=0, lt=65536, description="Prefect UI/API port")
    replay_start: date | None = Field(
        default=None, description="replay runs walk history one trading day per run from here"
    )
    replay_end: date | None = Field(default=None, description="replay stops advancing here")
    replay_interval_seconds: int = Field(
        default=30, ge=5, le=86400, description="seconds between replay runs (`bloasis up`)"
    )
    # `BLOASIS_REGIME_<NAME>` model parameters, collected once by `load_settings` ({name: raw
    # value}); `bloasis.regime.params.params_for` validates them against the chosen model.
    regime_overrides: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _market_data_alias(cls, data: Any) -> Any:
        """BLOASIS_MARKET_DATA sets `universe`; both set and different is an error."""
        if not isinstance(data, dict):
            return data
        md, un = data.get("market_data"), data.get("universe")
        if md in (None, ""):
            return data
        if un not in (None, "", md):
            raise ValueError(
                f"{ENV_PREFIX}MARKET_DATA={md!r} and {ENV_PREFIX}UNIVERSE={un!r} disagree: "
                f"{ENV_PREFIX}UNIVERSE is the older name of the same setting, set one of them"
            )
        return {**data, "universe": md}

    @field_validator(
        "database_url", "redis_url", "grpc_tokens", "grpc_token", "fred_api_key", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        # An exported-but-empty variable means "not set" (also for secrets: never SecretStr("")).
        raw = v.get_secret_value() if isinstance(v, SecretStr) else v
        return None if raw is None or raw == "" else raw

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        v = secret.get_secret_value()
        scheme = v.split("://", 1)[0]
        if "://" not in v or not scheme.startswith("postgresql"):
            raise ValueError("expected a postgresql://user@host:port/dbname URL")
        return secret

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        v = secret.get_secret_value()
        if not (v.startswith("redis://") or v.startswith("rediss://")):
            raise ValueError("expected a redis://host:port/db or rediss:// URL")
        return secret

    @field_validator(
        "kafka_ssl_cafile", "grpc_tls_cert", "grpc_tls_key", "grpc_tls_ca", "grpc_tokens_file",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _file(cls, v: Any) -> Any:
        if v is None or v == "":
            return None
        if not Path(v).is_file():
            raise ValueError("no such file (expected the path of a readable file)")
        return v

    @model_validator(mode="after")
    def _together(self) -> Settings:
        """Settings that only make sense together; the message names every variable involved."""
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ValueError(
                f"{ENV_PREFIX}GRPC_TLS_CERT and {ENV_PREFIX}GRPC_TLS_KEY go together: "
                "set both (TLS) or neither (plaintext)"
            )
        protocol = self.kafka_security_protocol
        sasl = {
            "KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        if protocol.startswith("SASL_"):
            missing = [ENV_PREFIX + k for k, v in sasl.items() if not v]
            if missing:
                raise ValueError(
                    f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}"
                )
        elif any(sasl.values()):
            raise ValueError(
                f"{', '.join(ENV_PREFIX + k for k, v in sasl.items() if v)}: only used with "
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL (it is {protocol})"
            )
        if self.replay_end is not None and self.replay_start is None:
            raise ValueError(f"{ENV_PREFIX}REPLAY_END needs {ENV_PREFIX}REPLAY_START")
        if self.replay_start and self.replay_end and self.replay_end < self.replay_start:
            raise ValueError(
                f"{ENV_PREFIX}REPLAY_END={self.replay_end} is before "
                f"{ENV_PREFIX}REPLAY_START={self.replay_start}"
            )
        if self.kafka_ssl_cafile is not None and not protocol.endswith("SSL"):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SSL_CAFILE needs {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL=SSL or "
                f"SASL_SSL (it is {protocol})"
            )
        return self

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

    @field_validator("live_universe")
    @classmethod
    def _live_universe(cls, v: str) -> str:
        if v in ("sp500", "current20"):
            return v
        if v.startswith("file:") and v[5:]:
            if not Path(v[5:]).expanduser().is_file():
                raise ValueError(f"no such file: {v[5:]}")
            return v
        raise ValueError("expected sp500, current20 or file:PATH (CSV symbol,name,sector[,yahoo])")

    @field_validator("live_providers")
    @classmethod
    def _live_providers(cls, v: str) -> str:
        names = [n.strip() for n in v.split(",") if n.strip()]
        if not names or sorted(set(names)) != sorted(names) or set(names) - {"fred", "yahoo"}:
            raise ValueError("expected a comma-separated subset of fred,yahoo, e.g. fred,yahoo")
        if "yahoo" not in names:
            raise ValueError("yahoo is required: it is the source of the index and stock bars")
        return ",".join(names)

    @field_validator("market_clock")
    @classmethod
    def _market_clock(cls, v: str) -> str:
        if v == "wall" or (v.startswith("file:") and v[5:]):
            return v
        raise ValueError("expected wall or file:PATH (the clock file of a live replay)")

    @field_validator("fred_url", "yahoo_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("expected an http:// or https:// base URL")
        return v.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        up = v.upper()
        if up not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return up

    def require(self, name: str) -> str:
        value = self.value_of(name)
        if not value:
            raise SettingsError(
                f"{ENV_PREFIX}{name.upper()} is not set: run `bloasis stack up` (and "
                f"`source {self.state_dir}/env`) or point it at a server"
            )
        return value

    def value_of(self, name: str) -> str | None:
        """The plain text of a setting (secrets unwrapped), None when unset."""
        value = getattr(self, name)
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return None if value is None else str(value)


# Settings whose values never appear in an error message: URLs lose their password, the rest
# is replaced entirely.
SECRET_URL_FIELDS: Final = frozenset({"database_url", "redis_url"})
SECRET_FIELDS: Final = frozenset(
    {"grpc_tokens", "grpc_token", "kafka_sasl_password", "fred_api_key"}
)


def redact_url(url: str) -> str:
    """`url` with its password (userinfo or `password=` query value) replaced by `***`."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _ = userinfo.partition(":")
            netloc = f"{user}{':***' if sep else ''}@{hostport}"
        query = re.sub(r"(?i)((?:^|&)[^=&]*(?:password|secret|token)[^=&]*=)[^&]*", r"\1***",
                       parts.query)  # fmt: skip
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:  # not parseable as a URL: show nothing of it
        return "***"


def _shown(field: str, value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if field in SECRET_FIELDS and value not in (None, ""):
        return "'***'"
    if field in SECRET_URL_FIELDS and isinstance(value, str):
        return repr(redact_url(value))
    return repr(value)


def parse_universe(spec: str) -> tuple[str, int, int, int]:
    """("embedded", 0, 0, 0), ("live", 0, 0, 0) for `live` or `database` (the point-in-time
    store), ("file", 0, 0, 0) for `file:PATH`, ("parquet", 0, 0, 0) for
    `parquet:DIR` (a bars store written by `bloasis data import`), or ("synthetic", n_symbols,
    seed, years)."""
    if spec == "embedded":
        return ("embedded", 0, 0, 0)
    if spec in ("live", "database"):
        return ("live", 0, 0, 0)
    if spec.startswith("file:"):
        if not spec[5:]:
            raise ValueError("file: needs a path, e.g. file:data/bars.csv")
        return ("file", 0, 0, 0)
    if spec.startswith("parquet:"):
        if not spec[8:]:
            raise ValueError("parquet: needs a directory, e.g. parquet:data/bars")
        return ("parquet", 0, 0, 0)
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind != "synthetic" or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(
            "expected embedded, live, database, file:PATH, parquet:DIR or"
            " synthetic:N[:seed[:years]], e.g. synthetic:500:7"
        )
    n, seed, years = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0,
                      int(parts[2]) if len(parts) > 2 else 10)  # fmt: skip
    if not (1 <= n <= 100_000 and 1 <= years <= 50):
        raise ValueError("synthetic universes take 1..100000 symbols and 1..50 years")
    return ("synthetic", n, seed, years)


def universe_tag(spec: str) -> str:
    """A short, stable name for a universe, used to namespace its results' model version:
    a file or a store is named by its base name and a hash of its absolute path."""
    if spec in ("live", "database"):
        return "live"  # two names for the point-in-time store: one namespace of results
    kind, sep, rest = spec.partition(":")
    if kind not in ("file", "parquet") or not sep:
        return spec
    import hashlib

    path = Path(rest).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"{kind}:{path.name[:24]}:{digest}"


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


_REGIME_PREFIX = f"{ENV_PREFIX}REGIME_"


def _regime_overrides(file_values: dict[str, str]) -> dict[str, str]:
    """`BLOASIS_REGIME_*` variables that are not settings of their own (`..._TTL_SECONDS`):
    the regime model's parameters, from the state dir's env file, then the environment."""
    own = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    pairs = [(f"{ENV_PREFIX}{k.upper()}", v) for k, v in file_values.items()]
    pairs += list(os.environ.items())
    return {
        k[len(_REGIME_PREFIX) :].lower(): v
        for k, v in pairs
        if k.startswith(_REGIME_PREFIX) and k not in own
    }


def load_settings(**overrides: Any) -> Settings:
    """Build settings; raises SettingsError naming the bad variable."""
    state_dir = Path(overrides.get("state_dir") or default_state_dir())
    file_values = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in _read_env_file(state_dir / "env").items()
        if k not in os.environ
    }
    init = {**file_values, **overrides}
    if "regime_overrides" not in overrides:
        init["regime_overrides"] = _regime_overrides(file_values)
    try:
        return Settings(**init)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if not err["loc"]:  # a rule over several settings: its message names them
                lines.append(str(err["msg"]).removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            lines.append(f"{ENV_PREFIX}{field.upper()}={_shown(field, err.get('input'))}: "
                         f"{err['msg']}")  # fmt: skip
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
