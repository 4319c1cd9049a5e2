"""The strategy backtest flow: `bloasis.app.backtest.run_backtest` with its decision blocks as
Prefect tasks (spread over Dask workers with BLOASIS_TASK_RUNNER=dask), a progress artifact,
the metrics as a markdown artifact, and the charts and HTML report written under the state dir
with link artifacts to them."""

from __future__ import annotations

import asyncio
import shlex
import time
import uuid
from datetime import UTC, date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_link_artifact, acreate_progress_artifact
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.context import SyncClientContext
from prefect.runtime import flow_run

from bloasis.app.backtest import BacktestRequest, run_backtest
from bloasis.backtest import report
from bloasis.backtest.types import BacktestInputError
from bloasis.config import load_settings
from bloasis.store.backtests import StoredBacktest
from flows.common import PrefectReporter, flow_run_id, one_api_client
from tasks.backtest import map_blocks, render_pictures
from tasks.strategy import task_runner_for

PROGRESS_KEY: Final = "backtest-progress"
SUMMARY_KEY: Final = "backtest-summary"
# The decisions are nearly all of a backtest's time; simulating, measuring, storing and drawing
# get the last 5%, reached when the run ends.
DECIDE_SHARE: Final = 95.0
UPDATE_EVERY_S: Final = 0.5  # one API call per block would be too many for daily rebalancing


class ArtifactProgress:
    """`bloasis.backtest.engine.Progress` onto a progress artifact. Synchronous: the engine
    calls it from the synchronous backtest inside the async flow, so it goes through the
    flow's sync client (`one_api_client`), not Prefect's async-dispatching helpers."""

    def __init__(self, artifact_id: uuid.UUID) -> None:
        self.artifact_id = artifact_id
        self._last = 0.0

    def __call__(self, label: str, done: int, total: int) -> None:
        if label != "decide":
            return
        now = time.monotonic()
        if done < total and now - self._last < UPDATE_EVERY_S:
            return
        self._last = now
        self.set(DECIDE_SHARE * done / max(total, 1))

    def set(self, percent: float) -> None:
        with SyncClientContext.get_or_create() as ctx:
            ctx.client.update_artifact(
                artifact_id=self.artifact_id, artifact=ArtifactUpdate(data=percent)
            )


def _run_name() -> str:
    p = flow_run.parameters
    return f"backtest-{p.get('start')}-{p.get('end')}-{p.get('rebalance', 'weekly')}"


def cli_equivalent(req: BacktestRequest, folder: Path) -> str:
    """The `bloasis backtest` command that finds (or computes) the same backtest and writes the
    same files."""
    argv = ["bloasis", "backtest"]
    for p in req.profiles:
        argv += ["--profile", p]
    for u in req.user_ids:
        argv += ["--user", u]
    argv += [
        "--start", req.start.isoformat(), "--end", req.end.isoformat(),
        "--rebalance", req.rebalance,
        "--commission", str(req.commission), "--slippage", str(req.slippage),
        "--initial-cash", str(req.initial_cash),
    ]  # fmt: skip
    if req.symbols:
        argv += ["--symbols", *req.symbols]
    argv += ["--html", str(folder / "report.html"), "--png", str(folder)]
    return shlex.join(argv)


def summary_markdown(
    stored: StoredBacktest, *, found: bool, seconds: float, files: dict[str, Path], cli: str
) -> str:
    """The `backtest-summary` artifact: the measures over the whole range and in/out of
    sample, the notes, whether it was found, where the pictures are."""
    rep = stored.report
    names = stored.names
    if found:
        how = (
            f"**Found**: an earlier backtest with the same inputs (stored "
            f"{stored.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC) was returned, not "
            "recomputed."
        )
    else:
        how = f"Computed in {seconds:.1f} s."
    spec = stored.spec
    lines = [
        f"# Backtest `{stored.id}`",
        "",
        f"{rep.get('start')} to {rep.get('end')}, {spec.get('rebalance')} rebalancing, "
        f"commission {spec.get('commission')}, slippage {spec.get('slippage')}, initial cash "
        f"{spec.get('initial_cash')}; model {stored.model_version}, data snapshot "
        f"`{stored.data_snapshot_hash[:12]}`, inputs key `{stored.inputs_key[:12]}`.",
        "",
        how,
        "",
        "## Whole range",
        "",
        report.markdown_table(stored.summary, names),
    ]
    sections = report.sample_sections(rep, names)
    for title, rows in sections:
        lines += ["", f"## {title.capitalize()}", "", report.markdown_table(rows, names)]
    if not sections and rep.get("sample_split"):
        lines += ["", "All of the range is in sample (the notes say why)."]
    lines += ["", "## Notes", "", f"- Execution: {rep.get('execution', '')}"]
    lines += [f"- {note}" for note in rep.get("notes", [])]
    lines += ["", "## Pictures", ""]
    lines += [f"- {name}: [{path}]({path.as_uri()})" for name, path in files.items()]
    lines += ["", "The same from the command line:", "", "```sh", cli, "```", ""]
    return "\n".join(lines)


@flow(
    name="strategy-backtest",
    flow_run_name=_run_name,
    retries=0,
    task_runner=task_runner_for(load_settings()),
)
@one_api_client
async def strategy_backtest(
    start: date,
    end: date,
    profiles: list[str] | None = None,
    user_ids: list[str] | None = None,
    rebalance: str = "weekly",
    commission: float = 0.0005,
    slippage: float = 0.0005,
    initial_cash: str = "100000",
    symbols: list[str] | None = None,
) -> dict[str, Any]:
    """Replay the strategies of `profiles` and `user_ids` (none: the three profiles) over
    [start, end] with costs, beside the benchmarks (see `bloasis.app.backtest`). The same
    inputs as an earlier backtest return that one (`found`), not recomputed."""
    logger = get_run_logger()
    settings = load_settings()
    try:
        cash = Decimal(initial_cash)
    except InvalidOperation:
        raise BacktestInputError("initial_cash", f"not a number: {initial_cash!r}") from None
    req = BacktestRequest(
        start=start,
        end=end,
        profiles=tuple(profiles or ()),
        user_ids=tuple(user_ids or ()),
        rebalance=rebalance,
        commission=commission,
        slippage=slippage,
        initial_cash=cash,
        symbols=tuple(s.upper() for s in symbols or ()),
    )
    progress = ArtifactProgress(
        await acreate_progress_artifact(
            0.0, key=PROGRESS_KEY, description=f"Backtest {start} to {end}: sessions decided"
        )
    )
    t0 = time.perf_counter()
    out = run_backtest(
        req,
        settings=settings,
        mapper=map_blocks,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    stored = out.stored
    folder = (settings.state_dir / "backtests" / str(stored.id)).resolve()
    # Drawn from what is stored, so a found backtest's pictures are the same as the first time.
    images, page = render_pictures(settings, stored)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name, data in images.items():
        files[name] = folder / f"{name}.png"
        files[name].write_bytes(data)
    files["report"] = folder / "report.html"
    files["report"].write_text(page)
    cli = cli_equivalent(req, folder)
    await PrefectReporter().markdown(
        SUMMARY_KEY,
        summary_markdown(stored, found=out.found, seconds=seconds, files=files, cli=cli),
        f"Backtest {stored.id}" + (" (found, not recomputed)" if out.found else ""),
    )
    await asyncio.gather(
        *(
            acreate_link_artifact(
                path.as_uri(),
                link_text=str(path),
                key=f"backtest-{name}",
                description=f"Backtest {stored.id}: {name}",
            )
            for name, path in files.items()
        )
    )
    progress.set(100.0)
    names = stored.names
    logger.info(
        "backtest %s%s: %s", stored.id, " (found, not recomputed)" if out.found else "", folder
    )
    return {
        "backtest_id": str(stored.id),
        "found": out.found,
        "flow_run_id": str(flow_run_id()),
        "model_version": stored.model_version,
        "folder": str(folder),
        "summary": {
            n: {k: stored.summary[n].get(k) for k in ("cagr", "sharpe", "max_drawdown")}
            for n in names
        },
    }
