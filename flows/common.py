"""What the flows share."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from prefect.context import SyncClientContext

P = ParamSpec("P")
R = TypeVar("R")


def one_api_client(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Under `@flow`: the flow's sync tasks share one Prefect API client.

    Flows are async (Prefect's sync flow engine joins its heartbeat thread at the end, ~1 s
    per run); sync tasks called from an async flow otherwise open a client each, and each new
    client loads the CA bundle (~20 ms per task run, measured)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with SyncClientContext.get_or_create():
            return await fn(*args, **kwargs)

    # Prefect validates parameters against the signature, resolving string annotations in the
    # globals of the function it holds, which are this module's: hand it resolved ones.
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return wrapper
