"""Retry policy shared by the tasks: retry what a server outage causes, fail fast on bugs."""

from __future__ import annotations

from typing import Any

import redis
from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, OperationalError

TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
    KafkaError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only when the failure came from a server outage."""
    try:
        state.result()
    except BaseException as exc:  # the task's own exception is re-raised by result()
        return is_transient(exc)
    return False


# The retry policy of every task that writes to the store: three tries after a server outage.
STORE_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [1, 2, 4],
    "retry_condition_fn": retry_on_transient,
}
