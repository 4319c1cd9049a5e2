"""The pipeline's steps as plain functions (no Prefect here): tasks/ wraps them, tests call them.

Order: load data -> compute -> persist (results + outbox events + NOTIFY, one transaction) ->
cache (Redis, from what is stored) -> relay (outbox -> Kafka). Everything after the commit can
fail and be repaired by the next run or relay; nothing before it is visible to anyone.
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from bloasis import __version__, calendar
from bloasis.publish.events import regime_events
from bloasis.regime.model import RegimeModel, classify_as_of, classify_frame, results_from_frame
from bloasis.regime.types import RegimeResult
from bloasis.store import outbox, regimes, runs

if TYPE_CHECKING:
    from bloasis.config import Settings
    from bloasis.marketdata import DataIssue, MarketData

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    pass


def load_market_data(
    end: date | None = None, universe: str = "embedded", *, quarantine: bool = False
) -> MarketData:
    return load_market_data_with_issues(end, universe, quarantine=quarantine)[0]


def load_market_data_with_issues(
    end: date | None = None,
    universe: str = "embedded",
    *,
    quarantine: bool = False,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> tuple[MarketData, list[DataIssue]]:
    """The embedded real dataset, the point-in-time store (`live`/`database`: only sessions
    complete at `now` — closed at least BLOASIS_SESSION_SETTLE_SECONDS ago — and only the
    symbols of BLOASIS_LIVE_UNIVERSE), a file (`file:PATH`, validated on load: bad rows fail the
    load, or are dropped and returned as issues when `quarantine`), a bars store (`parquet:DIR`,
    validated the same way) or a seeded synthetic universe (`synthetic:N[:seed[:years]]`).
    With `settings`, quarantine is theirs."""
    from bloasis.config import load_settings, parse_universe
    from bloasis.marketdata import FileSource, SyntheticSource, default_source
    from bloasis.marketdata.parquet import ParquetSource

    kind, n, seed, years = parse_universe(universe)
    if settings is not None:
        quarantine = settings.quarantine
    if kind == "live":
        from bloasis.clock import market_now
        from bloasis.marketdata.database import DatabaseSource
        from bloasis.marketdata.universe import load_universe
        from bloasis.store.db import get_engine
        from bloasis.store.marketdata import last_dates

        settings = settings or load_settings()
        # The session-complete guard: a session still trading (or within its settle delay)
        # is never read, so a partial bar cannot freeze into a stored result.
        complete = calendar.latest_complete_session(
            now or market_now(settings), timedelta(seconds=settings.session_settle_seconds)
        )
        engine = get_engine(settings)
        members = load_universe(settings.live_universe).symbols
        with engine.connect() as conn:
            stored = {r.key for r in last_dates(conn) if r.kind == "stock"}
        # Members the ingest could not store (a symbol the provider does not know, left out
        # with a warning there) are not a reason to stop the run: they are left out here too.
        missing = [m for m in members if m not in stored]
        if missing:
            log.warning(
                "%d of %d universe members have no stored bars and are left out (%s%s); see"
                " `bloasis data status`",
                len(missing),
                len(members),
                ", ".join(missing[:8]),
                " ..." if len(missing) > 8 else "",
            )
        db = DatabaseSource(
            engine, symbols=[m for m in members if m in stored], quarantine=quarantine
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            md = db.load(end=complete if end is None else min(end, complete))
        return md, list(db.issues)
    if kind in ("file", "parquet"):
        cls = FileSource if kind == "file" else ParquetSource
        source = cls(universe.partition(":")[2], quarantine=quarantine)
        with warnings.catch_warnings():
            # The issues are returned for the caller to log; no duplicate Python warning.
            warnings.simplefilter("ignore", category=UserWarning)
            md = source.load(end=end)
        return md, list(source.issues)
    if kind == "embedded":
        return default_source().load(end=end), []
    return SyntheticSource(n, years, seed).load(end=end), []


def newest_live_session(settings: Settings) -> date | None:
    """The newest session a live load would end at: the newest index session stored, at most
    the newest complete one (None: nothing stored). One cheap query, no load."""
    from bloasis.clock import market_now
    from bloasis.marketdata.database import DatabaseSource
    from bloasis.store.db import get_engine

    complete = calendar.latest_complete_session(
        market_now(settings), timedelta(seconds=settings.session_settle_seconds)
    )
    newest = DatabaseSource(get_engine(settings)).newest_session()
    return None if newest is None else min(newest, complete)


def resolve_as_of(md: MarketData, as_of: date | None) -> date:
    """Default: the latest session in the data. A date that is not a session is an error."""
    idx = md.market.index
    if as_of is None:
        return md.last_date
    ts = pd.Timestamp(as_of)
    if ts in idx:
        return as_of
    first, last = idx[0].date(), idx[-1].date()
    if not first <= as_of <= last:
        raise PipelineError(f"--as-of {as_of} is outside the data ({first}..{last})")
    before = idx[idx < ts][-1].date()
    raise PipelineError(f"--as-of {as_of} is not a trading session; the session before is {before}")


def next_replay_session(
    sessions: pd.Index, last: date | None, start: date, end: date | None
) -> date:
    """The replay clock: the first session on/after `start`, then one session after `last`
    per run, held at the last session on/before `end` (and at the end of the data)."""
    if end is not None and end < start:
        raise PipelineError(f"replay end {end} is before its start {start}")
    window = sessions[sessions >= pd.Timestamp(start)]
    if end is not None:
        window = window[window <= pd.Timestamp(end)]
    if len(window) == 0:
        first, final = sessions[0].date(), sessions[-1].date()
        raise PipelineError(
            f"no session to replay between {start} and {end or final} (data: {first}..{final})"
        )
    if last is None:
        return window[0].date()
    after = window[window > pd.Timestamp(last)]
    return (after[0] if len(after) else window[-1]).date()


def replay_as_of(engine: Engine, md: MarketData, model_version: str, start: date,
                 end: date | None) -> date:  # fmt: skip
    """The as-of of the next replay run, from what completed replay runs reached."""
    with engine.connect() as conn:
        last = runs.last_replayed_as_of(conn, model_version=model_version, start=start, end=end)
    return next_replay_session(md.market.index, last, start, end)


def compute_regime(
    md: MarketData,
    as_of: date,
    *,
    trigger: str,
    run_id: uuid.UUID,
    model: RegimeModel,
) -> RegimeResult:
    # Cut before computing: nothing published after as_of can reach the result.
    return classify_as_of(
        md.as_of(as_of).market,
        as_of,
        trigger=trigger,
        run_id=run_id,
        model_version=model.version,
        computed_at=datetime.now(UTC),
        params=model.params,
    )


def begin_run(
    engine: Engine,
    *,
    run_id: uuid.UUID,
    flow: str,
    trigger: str,
    as_of: date | None,
    parameters: dict[str, Any],
    md: MarketData,
    model_version: str,
) -> None:
    with engine.begin() as conn:
        runs.start_run(
            conn,
            run_id=run_id,
            flow=flow,
            trigger=trigger,
            as_of=as_of,
            parameters=parameters,
            data_source=md.source,
            data_snapshot_hash=md.snapshot_hash(),
            code_version=__version__,
            model_version=model_version,
        )


def end_run(
    engine: Engine,
    run_id: uuid.UUID,
    *,
    status: str,
    timings: dict[str, float] | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    with engine.begin() as conn:
        runs.finish_run(conn, run_id, status=status, timings=timings, result=result, error=error)


def _int4(name: str) -> int:
    """A signed 32-bit key (the two-key form of the advisory lock functions takes int4s)."""
    return zlib.crc32(name.encode()) - (1 << 31)


# Run locks use the two-int4 advisory key space, apart from the single-bigint keys of
# `_lock_key`, so a run lock can never collide with (and deadlock on) a step's xact lock.
RUN_LOCK_CLASS = _int4("bloasis:run")


def run_lock_key(model_version: str, as_of: date) -> tuple[int, int]:
    """(classid, objid) of the run lock, as `pg_advisory_lock(int4, int4)` takes them."""
    return RUN_LOCK_CLASS, _int4(f"{model_version}:{as_of.isoformat()}")


@contextmanager
def run_lock(
    engine: Engine, model_version: str, as_of: date, *, timeout_s: float
) -> Iterator[float]:
    """Hold the run lock of (model version, as-of) for the body; yields the seconds waited.

    A second run of the same as-of queues here (visible in `pg_locks`), then finds every step
    stored and writes nothing. Correctness does not rest on it (every step is idempotent on its
    natural keys and event ids); it makes the second run a cheap no-op and tells stale
    `running` rows apart from live ones (`abandon_stale_runs`). See `advisory_lock`."""
    with advisory_lock(
        engine,
        run_lock_key(model_version, as_of),
        what=f"run of {model_version} for {as_of}",
        timeout_s=timeout_s,
    ) as waited:
        yield waited


@contextmanager
def advisory_lock(
    engine: Engine, key: tuple[int, int], *, what: str, timeout_s: float
) -> Iterator[float]:
    """Hold a session-level PostgreSQL advisory lock (two-int4 key) for the body, on a
    dedicated autocommit connection (no transaction stays open for the body); yields the
    seconds waited. The server drops the lock when the holder dies (SIGKILL, lost
    connection), so a killed holder never blocks the next one. Waiting longer than
    `timeout_s` raises PipelineError naming `what`."""
    c, k = key
    params = {"c": c, "k": k}
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    t0 = time.monotonic()
    try:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:c, :k)"), params).scalar_one():
            log.info("another %s is in progress: waiting", what)
            conn.execute(
                text("SELECT set_config('lock_timeout', :t, false)"),
                {"t": f"{max(1, int(timeout_s * 1000))}ms"},
            )
            try:
                conn.execute(text("SELECT pg_advisory_lock(:c, :k)"), params)
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                raise PipelineError(
                    f"another {what} still holds its lock after"
                    f" {time.monotonic() - t0:.0f}s; try again later"
                ) from None
            finally:
                conn.execute(text("RESET lock_timeout"))  # the connection goes back to the pool
    except BaseException:
        # Closed for good, not pooled: an interrupted wait could still be granted the lock.
        conn.invalidate()
        conn.close()
        raise
    try:
        yield time.monotonic() - t0
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:c, :k)"), params)
        except Exception:
            # The connection is gone (PostgreSQL restarted): the server released the lock with
            # the session. Never hand this connection back to the pool.
            conn.invalidate()
        conn.close()


def abandon_stale_runs(
    engine: Engine, *, run_id: uuid.UUID, flow: str, model_version: str, as_of: date
) -> list[uuid.UUID]:
    """Call under `run_lock`: earlier runs of this as-of still `running` died without recording
    their end (SIGKILL, PostgreSQL down when they failed); mark them `failed`."""
    with engine.begin() as conn:
        stale = runs.abandon_running(
            conn,
            flow=flow,
            model_version=model_version,
            as_of=as_of,
            keep=run_id,
            error=f"abandoned: ended without recording its outcome (found by run {run_id})",
        )
    if stale:
        log.warning(
            "marked %d abandoned run(s) of %s failed: %s",
            len(stale),
            as_of,
            ", ".join(map(str, stale)),
        )
    return stale


@dataclass(frozen=True)
class PersistOutcome:
    stored: RegimeResult  # what the store holds for the as-of date (this run's or an earlier one's)
    inserted: bool
    events: int
    previous: RegimeResult | None


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode())


def session_before(conn: Connection, model_version: str, as_of: date) -> RegimeResult | None:
    """The stored regime of the session just before `as_of`, which a change is judged
    against (None when that session has no stored regime: no change can be judged)."""
    return regimes.regime_at(conn, model_version, calendar.previous_session(as_of))


def persist_regime(
    engine: Engine, result: RegimeResult, *, historical: bool = False
) -> PersistOutcome:
    """Store the result and its events atomically; a rerun for a stored as-of changes nothing.
    `historical`: a session older than the newest in the data (see `regime_events`)."""
    with engine.begin() as conn:
        # Serialise writers of one model version so "previous regime" is judged consistently.
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"),
            {"k": _lock_key(f"regimes:{result.model_version}")},
        )
        inserted = bool(regimes.insert_regimes(conn, [result]))
        previous = session_before(conn, result.model_version, result.as_of)
        n_events = 0
        if inserted:
            n_events = outbox.enqueue(conn, regime_events(previous, result, historical=historical))
            outbox.notify_results(conn, f"regime:{result.as_of.isoformat()}")
        stored = regimes.regime_at(conn, result.model_version, result.as_of)
    assert stored is not None
    return PersistOutcome(stored=stored, inserted=inserted, events=n_events, previous=previous)


def compute_regime_range(
    md: MarketData,
    start: date,
    end: date,
    *,
    trigger: str,
    run_id: uuid.UUID,
    model: RegimeModel,
) -> list[RegimeResult]:
    """Every session in [start, end] in one vectorised pass over data cut at `end`; row D equals
    `compute_regime(md, D)` because every indicator is causal."""
    frame = classify_frame(md.as_of(end).market, model.params)
    frame = frame.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    return results_from_frame(
        frame,
        trigger=trigger,
        run_id=run_id,
        model_version=model.version,
        computed_at=datetime.now(UTC),
    )


@dataclass(frozen=True)
class BulkOutcome:
    inserted: int
    existing: int
    events: int


def persist_regime_range(
    engine: Engine, results: list[RegimeResult], *, with_events: bool = True
) -> BulkOutcome:
    """Store a date-ordered run of results and the events of the new ones, in one transaction.

    A change is judged against the result stored for the session before, so a backfill emits
    the changes in date order exactly as day-by-day runs would have. The results are history
    (a backfill, a warm-up before a run's as-of): their events are historical, no alerts.
    `with_events=False` stores the results only (a model that is not the one served).
    """
    if not results:
        return BulkOutcome(0, 0, 0)
    results = sorted(results, key=lambda r: r.as_of)
    mv = results[0].model_version
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(f"regimes:{mv}")})
        new = set(regimes.insert_regimes(conn, results))
        previous = session_before(conn, mv, results[0].as_of)
        events = []
        if new and with_events:
            stored = {
                r.as_of: r
                for r in regimes.regime_history(
                    conn, mv, results[0].as_of, results[-1].as_of, limit=len(results) + 1
                )
            }
            for r in results:
                cur = stored.get(r.as_of, r)
                if r.as_of in new:
                    events.extend(regime_events(previous, cur, historical=True))
                previous = cur
        n_events = outbox.enqueue(conn, events)
        if new and with_events:
            outbox.notify_results(conn, f"regime:{max(new).isoformat()}")
    return BulkOutcome(inserted=len(new), existing=len(results) - len(new), events=n_events)
