"""What the flows share."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import date
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from prefect.context import SyncClientContext

if TYPE_CHECKING:
    from bloasis.strategy.engine import ProfileBook

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


@contextlib.contextmanager
def progress_artifact(key: str, description: str) -> Iterator[None]:
    """A progress artifact in the UI that follows `bloasis.progress` reports in the body."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    from bloasis import progress

    artifact_id = cast(
        uuid.UUID, create_progress_artifact(progress=0.0, key=key, description=description)
    )

    def to_artifact(stage: str, done: int, total: int) -> None:
        update_progress_artifact(artifact_id, progress=100.0 * done / max(total, 1))

    with progress.listen(to_artifact):
        yield


def flow_run_id() -> uuid.UUID:
    """The Prefect flow run id, which is also the pipeline run id: the UI and the database
    share one key (a fresh id outside a flow run)."""
    from prefect.runtime import flow_run

    return uuid.UUID(str(flow_run.id)) if flow_run.id else uuid.uuid4()


class PrefectReporter:
    """`bloasis.app.daily.Reporter` for flows: the run named after the session it computed,
    its task runs named by that as-of, and its artifacts in the UI."""

    async def resolved(self, as_of: date, *, replay: bool) -> None:
        from prefect.client.orchestration import get_client
        from prefect.runtime import flow_run

        from tasks.common import set_run_as_of

        set_run_as_of(as_of)
        if flow_run.id:
            # Named "pipeline-latest" at start; the UI should show the date it resolved to.
            name = f"{'replay' if replay else 'pipeline'}-{as_of.isoformat()}"
            if flow_run.name != name:
                async with get_client() as client:
                    await client.update_flow_run(flow_run.id, name=name)

    async def markdown(self, key: str, markdown: str, description: str) -> None:
        from prefect.artifacts import acreate_markdown_artifact

        await acreate_markdown_artifact(key=key, markdown=markdown, description=description)

    async def picks(self, books: dict[str, ProfileBook], run_id: uuid.UUID) -> None:
        """One table per profile: the picks with their weights and levels (created
        concurrently: one API round trip of wall time instead of one per profile)."""
        from prefect.artifacts import acreate_table_artifact

        creations = []
        for profile, book in books.items():
            s = book.strategy
            weights = {g.symbol: g for g in s.signals}
            rows = []
            for p in s.picks:
                g = weights.get(p.symbol)
                rows.append(
                    {
                        "rank": p.rank,
                        "symbol": p.symbol,
                        "sector": p.sector,
                        "score": round(p.final_score, 1),
                        "action": g.action if g else "",
                        "weight": str(g.weight) if g else "",
                        "entry": str(g.entry_price) if g else "",
                        "stop": str(g.stop_loss) if g else "",
                    }
                )
            creations.append(
                acreate_table_artifact(
                    key=f"picks-{profile}",
                    table=rows,
                    description=f"{s.strategy_id} (run {run_id}): regime {s.regime},"
                    f" cash {s.cash_weight}",
                )
            )
        await asyncio.gather(*creations)
