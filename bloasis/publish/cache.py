"""Redis: the latest results as proto3 JSON, every key with a TTL, a run's keys switched at once.

User strategies are too many for one MULTI/EXEC (a million keys would block Redis for seconds):
a run writes them under a version of its own (`user:{id}:strategy@{version}`) in bounded,
non-transactional pipelines, invisible to readers until the run's one small MULTI/EXEC sets
the shared keys and the pointer `user-strategies:version` together. Readers resolve the pointer
first, so they never mix two runs' users; an old version's keys expire with their TTL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Final

import redis

from bloasis.regime.types import RegimeResult
from bloasis.wire import regime_from_json, regime_to_json

REGIME_CURRENT_KEY: Final = "market:regime:current"
# The version of the user keys readers use; set only in a run's switch (`write_run_keys`).
USERS_VERSION_KEY: Final = "user-strategies:version"
# How long the previous version's user keys outlive a switch: readers holding the old pointer
# (a server between the switch and its NOTIFY, or its 60 s poll when LISTEN is down) still
# find them; then they go, so two versions share Redis memory for minutes, not a whole TTL.
OLD_USERS_VERSION_GRACE_S: Final = 300
# SETs per non-transactional pipeline: a few ms of Redis time each (bench `users_1m` measures the
# longest command), so readers are never held up for long.
USER_KEYS_PER_PIPELINE: Final = 2000


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


def user_key(user_id: str, version: str) -> str:
    """A user's compact strategy as written by the run of `version` (see the module doc)."""
    return f"user:{user_id}:strategy@{version}"


def new_users_version(run_id: uuid.UUID) -> str:
    """The version a run that derives every user writes its user keys under."""
    return run_id.hex[-12:]  # the low bits: random in a uuid4, distinct for small test ids


def read_users_version(client: redis.Redis) -> str | None:
    raw = client.get(USERS_VERSION_KEY)
    if isinstance(raw, bytes):
        raw = raw.decode()
    return raw or None


def write_user_keys(
    client: redis.Redis,
    version: str,
    values: Iterable[tuple[str, str]],
    ttl: int,
    *,
    per_pipeline: int = USER_KEYS_PER_PIPELINE,
) -> int:
    """SET (user id, value) under `version` in pipelines of `per_pipeline` commands, not
    transactions: the keys are not read before the switch names their version. Returns the
    number written."""
    if ttl <= 0:
        raise ValueError(f"TTL for user keys must be positive, got {ttl}")
    n = 0
    with client.pipeline(transaction=False) as pipe:
        for user_id, value in values:
            pipe.set(user_key(user_id, version), value, ex=ttl)
            n += 1
            if n % per_pipeline == 0:
                pipe.execute()
        pipe.execute()
    return n


def expire_users_version(
    client: redis.Redis, version: str, grace_s: int = OLD_USERS_VERSION_GRACE_S
) -> int:
    """Shorten the TTL of every user key of `version` to `grace_s` (never lengthen it): SCAN in
    steps of a few thousand keys, EXPIRE ... LT in pipelines, so Redis is never held for long.
    Returns the number of keys found."""
    n = 0
    with client.pipeline(transaction=False) as pipe:
        for key in client.scan_iter(match=user_key("*", version), count=5000):
            pipe.expire(key, grace_s, lt=True)
            n += 1
            if n % USER_KEYS_PER_PIPELINE == 0:
                pipe.execute()
        pipe.execute()
    return n
