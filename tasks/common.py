"""Retry policy shared by the tasks: retry what a server outage causes, fail fast on bugs."""

from __future__ import annotations

from datetime import date
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


# The as-of each flow run resolved to ("latest" -> a date), by flow run id: its tasks carry it in
# their run names. Not a ContextVar: Prefect's Dask runner pickles the context, and a ContextVar
# set in it cannot be pickled.
_RUN_AS_OF: dict[str, str] = {}


def set_run_as_of(as_of: date) -> None:
    from prefect.runtime import flow_run

    if flow_run.id:
        if len(_RUN_AS_OF) > 1000:  # a long-lived process (tests) runs many flows
            _RUN_AS_OF.clear()
        _RUN_AS_OF[str(flow_run.id)] = as_of.isoformat()


class named:  # lower case: used like a function, task_run_name=named("store-users")
    """A task_run_name callable: `<base>-<as-of>`, so the UI shows which date a task ran for.
    A class, not a closure: Dask pickles the task, and its run-name callable with it."""

    def __init__(self, base: str) -> None:
        self.base = base

    def __call__(self) -> str:
        from prefect.runtime import flow_run, task_run

        params = task_run.parameters or {}
        as_of = (
            _RUN_AS_OF.get(str(flow_run.id)) or params.get("as_of") or params.get("end") or "latest"
        )
        return f"{self.base}-{as_of}"
