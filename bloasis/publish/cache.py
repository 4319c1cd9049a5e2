"""Redis: the latest results as proto3 JSON, every key with a TTL, a run's keys switched at once."""

from __future__ import annotations

from typing import Final

import redis

from bloasis.regime.types import RegimeResult
from bloasis.wire import regime_from_json, regime_to_json

REGIME_CURRENT_KEY: Final = "market:regime:current"


def make_redis(url: str, *, timeout: float = 2.0) -> redis.Redis:
    # Short timeouts: a cache that hangs is worse than a cache miss.
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )


def write_run_keys(client: redis.Redis, values: dict[str, tuple[str, int]]) -> None:
    """Set every key of a run (value, TTL seconds) in one MULTI/EXEC, so readers never mix runs."""
    with client.pipeline(transaction=True) as pipe:
        for key, (value, ttl) in values.items():
            if ttl <= 0:
                raise ValueError(f"TTL for {key} must be positive, got {ttl}")
            pipe.set(key, value, ex=ttl)
        pipe.execute()


def write_current_regime(client: redis.Redis, result: RegimeResult, ttl: int) -> None:
    write_run_keys(client, {REGIME_CURRENT_KEY: (regime_to_json(result), ttl)})


def read_current_regime(client: redis.Redis) -> RegimeResult | None:
    raw = client.get(REGIME_CURRENT_KEY)
    return regime_from_json(raw) if isinstance(raw, bytes | str) and raw else None


def sectors_key(regime: str) -> str:
    return f"sectors:{regime}:analysis"


def strategy_key(profile: str) -> str:
    return f"strategy:{profile}:current"


def preferences_key(user_id: str) -> str:
    """A user's preferences as the server last read them from PostgreSQL (`bloasis.serve.reads`;
    TTL BLOASIS_USER_STRATEGY_CACHE_SECONDS, dropped by every change through the API)."""
    return f"user:{user_id}:preferences"


def user_key(user_id: str) -> str:
    return f"user:{user_id}:strategy"
