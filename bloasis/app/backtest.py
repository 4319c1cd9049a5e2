"""The backtest application service: what the CLI, the `strategy-backtest` flow, the gRPC
BacktestingService and the bench all call.

run: validate -> load the configured market data and regime model -> key the inputs (spec,
model and parameters, data snapshot hash, engine version) -> a succeeded backtest with that key
is returned as found, not recomputed -> otherwise a `backtests` row (running, with progress)
-> the engine -> result, report and daily equity curves stored in one transaction.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from bloasis import __version__
from bloasis.app import steps
from bloasis.backtest import engine as bt_engine
from bloasis.backtest import report
from bloasis.backtest.types import (
    DEFAULT_INITIAL_CASH,
    BacktestSpec,
    Costs,
    Portfolio,
    UnknownUserError,
    inputs_key,
)
from bloasis.config import Settings, load_settings
from bloasis.marketdata.types import MarketData
from bloasis.regime.model import RegimeModel, resolve_model
from bloasis.store import backtests as store
from bloasis.store import strategies as prefs_store
from bloasis.store.db import get_engine
from bloasis.strategy.types import PROFILES

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0  # progress rows are written at most this often


@dataclass(frozen=True)
class BacktestRequest:
    start: date
    end: date
    profiles: tuple[str, ...] = ()  # () and no users: all three
    user_ids: tuple[str, ...] = ()
    rebalance: str = "weekly"
    commission: float = Costs().commission
    slippage: float = Costs().slippage
    initial_cash: Decimal = DEFAULT_INITIAL_CASH
    symbols: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    stored: store.StoredBacktest
    found: bool  # an earlier backtest with the same inputs
    result: bt_engine.BacktestResult | None  # None when found


def build_spec(settings: Settings, req: BacktestRequest) -> BacktestSpec:
    """The engine's spec; users' preferences are read from PostgreSQL (unknown: an error)."""
    portfolios = [Portfolio.of_profile(p) for p in req.profiles]
    if req.user_ids:
        with get_engine(settings).connect() as conn:
            found = {p.prefs.user_id: p for p in prefs_store.list_preferences(conn, req.user_ids)}
        for uid in req.user_ids:
            if uid not in found:
                raise UnknownUserError(uid)
            portfolios.append(Portfolio.of_user(found[uid].prefs))
    if not portfolios:
        portfolios = [Portfolio.of_profile(p) for p in PROFILES]
    spec = BacktestSpec(
        start=req.start,
        end=req.end,
        portfolios=tuple(portfolios),
        rebalance=req.rebalance,
        costs=Costs(req.commission, req.slippage),
        initial_cash=req.initial_cash,
        top_n=settings.top_n,
        min_history=settings.min_history_sessions,
        symbols=tuple(req.symbols),
    )
    spec.check()
    return spec


@dataclass(frozen=True)
class Prepared:
    spec: BacktestSpec
    md: MarketData
    model: RegimeModel
    key: str


def prepare(settings: Settings, req: BacktestRequest) -> Prepared:
    """Validate and key a request: the configured universe (BLOASIS_UNIVERSE) and model."""
    spec = build_spec(settings, req)
    model = resolve_model(settings.model_version, settings.universe, settings.regime_overrides)
    data = steps.load_market_data(settings, settings.universe)
    bt_engine.check_inputs(data, spec)
    key = inputs_key(
        spec,
        model={"version": model.version, "params": model.params.as_dict()},
        data_hash=data.snapshot_hash(),
    )
    return Prepared(spec, data, model, key)


def report_of(result: bt_engine.BacktestResult) -> dict[str, Any]:
    return {
        "names": result.names,
        "per_regime": result.per_regime,
        "per_year": result.per_year,
        "samples": result.samples,
        "sample_split": result.sample_split.isoformat() if result.sample_split else None,
        "notes": result.notes,
        "execution": result.execution,
        "timings": result.timings,
        "start": result.dates[0].isoformat(),
        "end": result.dates[-1].isoformat(),
        "regimes": report.regime_segments(result.dates, result.session_regimes),
    }


MAX_DRAWN = 8  # portfolios drawn beside the benchmarks (a thousand users' curves are noise)


def pictures(settings: Settings, stored: store.StoredBacktest) -> tuple[dict[str, bytes], str]:
    """The stored backtest's PNG charts and its self-contained HTML page."""
    names = stored.names
    drawn = [n for n in names if n not in bt_engine.BENCHMARKS][:MAX_DRAWN] + [
        n for n in names if n in bt_engine.BENCHMARKS
    ]
    with get_engine(settings).connect() as conn:
        curves = store.equity(conn, stored.id)
    dates = [d for d, _ in curves[names[0]]]
    images = report.charts(
        dates, {n: [v for _, v in curves[n]] for n in drawn}, stored.report.get("regimes", [])
    )
    title = (
        f"Backtest {stored.id}: {', '.join(names[: len(names) - len(bt_engine.BENCHMARKS)][:5])}"
        f" {stored.report.get('start')} to {stored.report.get('end')}, "
        f"{stored.spec.get('rebalance')} ({stored.model_version})"
    )
    return images, report.html_page(title, stored.summary, stored.report, images)


def _create(conn: Connection, bid: uuid.UUID, p: Prepared) -> None:
    """The `running` row of a prepared backtest, with its inputs."""
    store.create(
        conn,
        backtest_id=bid,
        inputs_key=p.key,
        spec=p.spec.canonical(),
        model_version=p.model.version,
        model_params=p.model.params.as_dict(),
        data_source=p.md.source,
        data_snapshot_hash=p.md.snapshot_hash(),
        code_version=__version__,
    )


def _found_or_created(
    settings: Settings, p: Prepared
) -> tuple[store.StoredBacktest | None, uuid.UUID]:
    """The succeeded backtest of `p`'s inputs, or the id of a new `running` row for it."""
    db = get_engine(settings)
    with db.connect() as conn:
        found = store.find_succeeded(conn, p.key)
    if found is not None:
        log.info("backtest %s: same inputs as %s, found (not recomputed)", p.key[:12], found.id)
        return found, found.id
    bid = uuid.uuid4()
    with db.begin() as conn:
        _create(conn, bid, p)
    return None, bid


def _compute(
    settings: Settings,
    p: Prepared,
    bid: uuid.UUID,
    mapper: bt_engine.Mapper,
    progress: bt_engine.Progress | None,
) -> Outcome:
    """Run the engine for the `running` row `bid` and store its result (or mark it failed)."""
    db = get_engine(settings)
    last = [0.0]

    def on_progress(label: str, done: int, total: int) -> None:
        if progress is not None:
            progress(label, done, total)
        now = time.monotonic()
        if done < total and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        # Deciding is nearly all of the time; simulating, measuring and storing get the rest.
        store.set_progress(db, bid, 0.9 * done / max(total, 1), f"{label}: {done}/{total} sessions")

    try:
        result = bt_engine.run(p.md, p.spec, p.model, mapper=mapper, progress=on_progress)
        with db.begin() as conn:
            store.succeed(
                conn,
                bid,
                summary=result.summary,
                report=report_of(result),
                names=result.names,
                dates=result.dates,
                equity=result.equity,
            )
    except IntegrityError:
        # The same inputs finished in another process meanwhile: theirs is the result.
        store.fail(db, bid, "a backtest with the same inputs finished first")
        with db.connect() as conn:
            other = store.find_succeeded(conn, p.key)
        if other is None:
            raise
        return Outcome(other, True, None)
    except BaseException as exc:
        store.fail(db, bid, f"{type(exc).__name__}: {exc}")
        raise
    with db.connect() as conn:
        stored = store.get(conn, bid)
    assert stored is not None
    return Outcome(stored, False, result)


def run_backtest(
    req: BacktestRequest,
    *,
    settings: Settings | None = None,
    mapper: bt_engine.Mapper = bt_engine.sequential,
    progress: bt_engine.Progress | None = None,
) -> Outcome:
    """Find or compute the backtest of `req` (see the module doc)."""
    settings = settings or load_settings()
    p = prepare(settings, req)
    found, bid = _found_or_created(settings, p)
    if found is not None:
        return Outcome(found, True, None)
    return _compute(settings, p, bid, mapper, progress)


def submit(
    req: BacktestRequest,
    *,
    settings: Settings,
    on_done: Callable[[uuid.UUID], None] | None = None,
) -> tuple[uuid.UUID, bool]:
    """Validate now (errors raise here), then run in a background thread. Returns the id at
    once, and whether it was found (an earlier backtest with the same inputs)."""
    p = prepare(settings, req)
    found, bid = _found_or_created(settings, p)
    if found is not None:
        return bid, True

    def work() -> None:
        try:
            _compute(settings, p, bid, bt_engine.sequential, None)
        except Exception:
            log.exception("backtest %s failed", bid)
        finally:
            if on_done is not None:
                on_done(bid)

    threading.Thread(target=work, name=f"backtest-{bid}", daemon=True).start()
    return bid, False
