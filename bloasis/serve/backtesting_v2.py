"""bloasis.backtesting.v2.BacktestingService, and `Backtests`, what v1 and v2 share: starting
backtests (`bloasis.app.backtest.submit`) and reading the stored ones (`bloasis.store.backtests`).

- RunBacktest (write scope): the request is checked here and by the app service (its
  `BacktestInputError` names the field: INVALID_ARGUMENT), users are looked up first (NOT_FOUND),
  then the backtest starts in a background thread and the call answers at once with its id. The
  same inputs backtested before are found, not recomputed (status succeeded); the same request
  while its backtest runs on this server gets that backtest's id. At most MAX_RUNNING backtests
  run per server (RESOURCE_EXHAUSTED beyond: each is CPU-bound for seconds to minutes).
- GetBacktestResults: progress while running; spec, measures per portfolio and benchmark (whole
  range, in/out of sample, per regime, per year), notes and provenance once succeeded.
- CompareStrategies: every strategy portfolio of the succeeded backtests, ranked by Sharpe.

A token bound to users (`sub=`) may start and read only backtests of its users' strategies
(profiles' backtests are market-wide, like regimes).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from typing import Any, Final, TypeVar

import grpc

from bloasis.app import backtest as app
from bloasis.app import steps
from bloasis.backtest.engine import BENCHMARKS
from bloasis.backtest.types import (
    DEFAULT_INITIAL_CASH,
    FREQUENCIES,
    BacktestInputError,
    Costs,
    UnknownUserError,
)
from bloasis.config import Settings
from bloasis.pb.v2 import backtesting_pb2 as bt2
from bloasis.serve.auth import check_user_access
from bloasis.serve.store_access import StoreAccess
from bloasis.serve.validation import (
    RequestError,
    check_user_id,
    invalid,
    not_found,
    parse_date_field,
    parse_decimal,
    parse_profile,
    parse_symbols,
    show,
)
from bloasis.store import backtests as bt_store
from bloasis.store import strategies as prefs_store
from bloasis.store.backtests import StoredBacktest
from bloasis.wire import ts

log = logging.getLogger(__name__)
R = TypeVar("R")

SERVICE: Final = bt2.DESCRIPTOR.services_by_name["BacktestingService"]
MAX_RUNNING: Final = 2  # backtests one server runs at once (threads, CPU-bound)
MAX_USERS: Final = 100  # users per backtest request
MAX_IDS: Final = 100  # backtests per CompareStrategies
SUBMIT_TIMEOUT_S: Final = 60.0  # validating loads the market data (the live store: seconds)
BOUNDS_TTL_S: Final = 60.0  # how long the data's first/last session are reused
MAX_INITIAL_CASH: Final = Decimal("1e12")
USER_PREFIX: Final = "user:"  # how the engine names a user's portfolio
S_AND_P: Final = BENCHMARKS[0]  # "S&P 500 buy and hold": v1's `passed` is measured against it
STATUS_RUNNING: Final = "running"
STATUS_SUCCEEDED: Final = "succeeded"


# --- requests --------------------------------------------------------------------------------


def parse_backtest_id(field: str, raw: str) -> uuid.UUID:
    if not raw:
        raise invalid(f"{field} is required")
    try:
        if len(raw) > 45:  # a UUID in any of its spellings is shorter
            raise ValueError
        return uuid.UUID(raw)
    except ValueError:
        raise invalid(f"{field} must be a backtest id (a UUID), got {show(raw)}") from None


def parse_ids(field: str, raw: Sequence[str]) -> list[uuid.UUID]:
    """Distinct ids in the order given."""
    if not raw:
        raise invalid(f"{field} is required (at least one backtest id)")
    if len(raw) > MAX_IDS:
        raise invalid(f"{field}: at most {MAX_IDS} ids, got {len(raw)}")
    out: list[uuid.UUID] = []
    for i, r in enumerate(raw):
        bid = parse_backtest_id(f"{field}[{i}]", r)
        if bid not in out:
            out.append(bid)
    return out


def parse_fraction(field: str, raw: str, default: float) -> float:
    """A cost fraction as a decimal string ('' -> `default`); negative is refused here, absurd
    ones by the engine's own check."""
    if not raw:
        return default
    value = parse_decimal(field, raw)
    if value < 0:
        raise invalid(f"{field} must be >= 0 (a fraction of the traded value), got {show(raw)}")
    return float(value)


def check_initial_cash(field: str, value: Decimal) -> Decimal:
    if value <= 0 or value > MAX_INITIAL_CASH:
        raise invalid(f"{field} must be > 0 and at most {MAX_INITIAL_CASH:,.0f}, got {value}")
    return value


def symbols_of(raw: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(parse_symbols(raw)))  # the format here, the universe by the engine


def user_ids_of(field: str, raw: Sequence[str]) -> tuple[str, ...]:
    if len(raw) > MAX_USERS:
        raise invalid(f"{field}: at most {MAX_USERS} users per backtest, got {len(raw)}")
    for u in raw:
        if not u:
            raise invalid(f"{field}: an empty user id")
        check_user_id(u)
    return tuple(raw)


def input_error(exc: BacktestInputError, rename: Mapping[str, str] | None = None) -> RequestError:
    """The app service's error as INVALID_ARGUMENT (NOT_FOUND for an unknown user), its field
    named as the API calls it."""
    if isinstance(exc, UnknownUserError):
        return not_found(str(exc))
    name = (rename or {}).get(exc.field)
    return invalid(f"{name}: {exc}" if name else str(exc))


def portfolio_users(stored: StoredBacktest) -> list[str]:
    names = [str(p.get("name", "")) for p in stored.spec.get("portfolios", [])]
    return [n[len(USER_PREFIX) :] for n in names if n.startswith(USER_PREFIX)]


def check_access(stored: StoredBacktest) -> None:
    """A token bound to users reads only backtests of its users (and profiles')."""
    for user_id in portfolio_users(stored):
        check_user_access(user_id)


def strategy_names(stored: StoredBacktest) -> list[str]:
    """The backtested portfolios, in order (the benchmarks follow them in the results)."""
    return [n for n in stored.names if n not in BENCHMARKS]


def result_names(stored: StoredBacktest) -> list[str]:
    """Portfolios, then the benchmarks."""
    return [n for n in stored.names if n in stored.summary]


def number(value: Any) -> float | None:
    """A stored measure (None for undefined; JSON has no NaN) as a finite float or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# --- shared by v1 and v2 ---------------------------------------------------------------------


class Backtests:
    """Starting backtests and reading stored ones, for both API versions."""

    def __init__(
        self, settings: Settings, store: StoreAccess, *, max_running: int = MAX_RUNNING
    ) -> None:
        self.settings = settings
        self.store = store
        self.max_running = max_running
        # Submits one at a time, in a thread of their own: validating loads the market data,
        # which must not occupy the store pool the reads need.
        self._submitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bloasis-bt")
        self._lock = threading.Lock()
        self._running: dict[app.BacktestRequest, uuid.UUID] = {}
        self._bounds: tuple[float, date, date] | None = None

    def close(self) -> None:
        # Backtests already started go on in their threads (daemons): a result is stored or the
        # row is marked failed; nothing here can stop one half-way.
        self._submitter.shutdown(wait=False, cancel_futures=True)

    # --- blocking parts (threads) ---

    def data_bounds(self) -> tuple[date, date]:
        """The data's first and last session (kept BOUNDS_TTL_S: loading takes a while; a
        bound a little old is still inside the data)."""
        now = time.monotonic()
        b = self._bounds
        if b is not None and now - b[0] < BOUNDS_TTL_S:
            return b[1], b[2]
        md = steps.load_market_data(self.settings, self.settings.universe)
        if len(md.index) == 0:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION, f"the market data is empty ({md.source})"
            )
        self._bounds = (now, md.first_date, md.last_date)
        return md.first_date, md.last_date

    def _missing_users(self, user_ids: Iterable[str]) -> list[str]:
        ids = list(user_ids)
        with self.store.engine.connect() as conn:
            known = prefs_store.known_users(conn, ids)
        return [u for u in ids if u not in known]

    def _submit(
        self, req: app.BacktestRequest, rename: Mapping[str, str] | None
    ) -> tuple[uuid.UUID, bool]:
        with self._lock:  # held while validating: one submit at a time, no duplicate start
            running = self._running.get(req)
            if running is not None:
                return running, False
            try:
                if len(self._running) >= self.max_running:
                    # A stored result is still answered; only a new run has to wait.
                    stored = self._find(req)
                    if stored is not None:
                        return stored.id, True
                    raise RequestError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{len(self._running)} backtests are running on this server (at most "
                        f"{self.max_running}); retry when one has finished",
                    )
                bid, found = app.submit(req, settings=self.settings, on_done=self._done)
            except BacktestInputError as exc:
                raise input_error(exc, rename) from None
            if not found:
                self._running[req] = bid
            log.info("backtest %s %s", bid, "found (same inputs)" if found else "started")
            return bid, found

    def _find(self, req: app.BacktestRequest) -> StoredBacktest | None:
        """The succeeded backtest of `req`'s inputs, if any (validates; starts nothing)."""
        key = app.prepare(self.settings, req).key
        with self.store.engine.connect() as conn:
            return bt_store.find_succeeded(conn, key)

    def _done(self, bid: uuid.UUID) -> None:
        # Called by the backtest's thread; waits for `_submit` to have recorded it.
        with self._lock:
            for key in [k for k, v in self._running.items() if v == bid]:
                del self._running[key]

    def _get(self, bid: uuid.UUID) -> StoredBacktest:
        with self.store.engine.connect() as conn:
            stored = bt_store.get(conn, bid)
        if stored is None:
            raise not_found(f"no backtest {bid}")
        return stored

    def _get_many(self, ids: Sequence[uuid.UUID]) -> list[StoredBacktest]:
        out = []
        with self.store.engine.connect() as conn:
            for bid in ids:
                stored = bt_store.get(conn, bid)
                if stored is None:
                    raise not_found(f"no backtest {bid}")
                out.append(stored)
        return out

    # --- async API ---

    async def bounds(self, context: Any) -> tuple[date, date]:
        return await self._offload(self.data_bounds, context, "loading the market data")

    async def check_users(self, user_ids: Sequence[str], context: Any) -> None:
        """Access first (no store read for a refused caller), then existence: NOT_FOUND."""
        for u in user_ids:
            check_user_access(u)
        if not user_ids:
            return
        missing = await self.store.call(
            lambda: self._missing_users(user_ids), context, "reading preferences"
        )
        if missing:
            raise not_found(f"unknown user {show(missing[0])}: no preferences stored")

    async def submit(
        self, req: app.BacktestRequest, context: Any, rename: Mapping[str, str] | None = None
    ) -> tuple[uuid.UUID, bool]:
        return await self._offload(
            lambda: self._submit(req, rename), context, "starting the backtest"
        )

    async def get(self, bid: uuid.UUID, context: Any) -> StoredBacktest:
        stored = await self.store.call(lambda: self._get(bid), context, "reading a backtest")
        check_access(stored)
        return stored

    async def get_many(self, ids: Sequence[uuid.UUID], context: Any) -> list[StoredBacktest]:
        got = await self.store.call(lambda: self._get_many(ids), context, "reading backtests")
        for stored in got:
            check_access(stored)
        return got

    async def _offload(self, fn: Callable[[], R], context: Any, what: str) -> R:
        """`fn` on the submitter thread (it loads market data: not the store pool's work),
        bounded by SUBMIT_TIMEOUT_S and the deadline."""
        return await self.store.call(
            fn,
            context,
            what,
            executor=self._submitter,
            limit=SUBMIT_TIMEOUT_S,
            source="the backtest submitter (one backtest starts at a time)",
        )


# --- v2 messages -----------------------------------------------------------------------------

_OPTIONAL_DOUBLES: Final = (
    "total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar",
    "win_rate", "profit_factor", "avg_holding_sessions", "turnover", "exposure",
)  # fmt: skip
_OPTIONAL_INTS: Final = ("trades", "stops", "tiers")


def metrics_pb(name: str, measures: Mapping[str, Any]) -> bt2.Metrics:
    m = bt2.Metrics(name=name, benchmark=name in BENCHMARKS)
    for key in _OPTIONAL_DOUBLES:
        x = number(measures.get(key))
        if x is not None:
            setattr(m, key, x)
    for key in _OPTIONAL_INTS:
        x = number(measures.get(key))
        if x is not None:
            setattr(m, key, int(x))
    costs = number(measures.get("costs"))
    if costs is not None:
        m.costs = f"{costs:.2f}"
    sessions = number(measures.get("sessions"))
    if sessions is not None:
        m.sessions = int(sessions)
    return m


def _group(
    label: str, names: Sequence[str], rows: Mapping[str, Mapping[str, Any]]
) -> bt2.MetricsGroup | None:
    present = [(n, rows[n]) for n in names if rows.get(n)]
    if not present:
        return None
    first = present[0][1]
    return bt2.MetricsGroup(
        label=label,
        start=str(first.get("from") or ""),
        end=str(first.get("to") or ""),
        portfolios=[metrics_pb(n, r) for n, r in present],
    )


def _groups(
    names: Sequence[str], by_name: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> list[bt2.MetricsGroup]:
    """name -> label -> measures, regrouped as label -> every portfolio's measures."""
    labels: list[str] = []
    for n in names:
        for label in by_name.get(n, {}):
            if label not in labels:
                labels.append(label)
    out = []
    for label in sorted(labels):
        g = _group(label, names, {n: by_name.get(n, {}).get(label, {}) for n in names})
        if g is not None:
            out.append(g)
    return out


def results_pb(stored: StoredBacktest) -> bt2.BacktestResults:
    spec = stored.spec
    portfolios = spec.get("portfolios", [])
    pb = bt2.BacktestResults(
        backtest_id=str(stored.id),
        status=stored.status,
        progress=stored.progress,
        message=stored.message,
        error=stored.error or "",
        start=str(spec.get("start", "")),
        end=str(spec.get("end", "")),
        rebalance=str(spec.get("rebalance", "")),
        commission=repr(spec["commission"]) if "commission" in spec else "",
        slippage=repr(spec["slippage"]) if "slippage" in spec else "",
        initial_cash=str(spec.get("initial_cash", "")),
        symbols=[str(s) for s in spec.get("symbols", [])],
        profiles=[str(p["name"]) for p in portfolios if not p["name"].startswith(USER_PREFIX)],
        user_ids=portfolio_users(stored),
        top_n=int(spec.get("top_n", 0)),
        model_version=stored.model_version,
        data_snapshot_hash=stored.data_snapshot_hash,
        created_at=ts(stored.created_at),
    )
    if stored.finished_at is not None:
        pb.finished_at.CopyFrom(ts(stored.finished_at))
    if stored.status != STATUS_SUCCEEDED:
        return pb
    report = stored.report
    names = result_names(stored)
    pb.first_session = str(report.get("start", ""))
    pb.last_session = str(report.get("end", ""))
    pb.portfolios.extend(metrics_pb(n, stored.summary[n]) for n in names)
    samples = report.get("samples", {})
    for label in ("in_sample", "out_of_sample"):
        g = _group(label, names, {n: samples.get(n, {}).get(label, {}) for n in names})
        if g is not None:
            getattr(pb, label).CopyFrom(g)
    pb.per_regime.extend(_groups(names, report.get("per_regime", {})))
    pb.per_year.extend(_groups(names, report.get("per_year", {})))
    pb.notes.extend(str(n) for n in report.get("notes", []))
    pb.execution = str(report.get("execution", ""))
    return pb


def sharpe_key(sharpe: float | None) -> float:
    """Sort key: the best first, undefined last."""
    return -sharpe if sharpe is not None else math.inf


def ranked(rows: list[tuple[StoredBacktest, str]]) -> list[tuple[StoredBacktest, str]]:
    """(backtest, portfolio) pairs by Sharpe ratio, the best first (CompareStrategies, v1 and
    v2); a portfolio without measures ranks last."""
    return sorted(rows, key=lambda r: sharpe_key(number(r[0].summary.get(r[1], {}).get("sharpe"))))


# --- the servicer ----------------------------------------------------------------------------


class BacktestingServicer:
    def __init__(self, backtests: Backtests) -> None:
        self.backtests = backtests

    async def RunBacktest(
        self, request: bt2.RunBacktestRequest, context: Any
    ) -> bt2.RunBacktestResponse:
        profiles = tuple(parse_profile("profiles", p) for p in request.profiles)
        user_ids = user_ids_of("user_ids", request.user_ids)
        start = parse_date_field("start", request.start)
        if start is None:
            raise invalid("start is required (YYYY-MM-DD)")
        end = parse_date_field("end", request.end)
        rebalance = request.rebalance or "weekly"
        if rebalance not in FREQUENCIES:
            raise invalid(
                f"rebalance must be one of {', '.join(FREQUENCIES)}, got {show(rebalance)}"
            )
        costs = Costs()
        commission = parse_fraction("commission", request.commission, costs.commission)
        slippage = parse_fraction("slippage", request.slippage, costs.slippage)
        cash = DEFAULT_INITIAL_CASH
        if request.initial_cash:
            cash = check_initial_cash(
                "initial_cash", parse_decimal("initial_cash", request.initial_cash)
            )
        symbols = symbols_of(request.symbols)
        await self.backtests.check_users(user_ids, context)
        if end is None:
            end = (await self.backtests.bounds(context))[1]
        req = app.BacktestRequest(
            start=start,
            end=end,
            profiles=profiles,
            user_ids=user_ids,
            rebalance=rebalance,
            commission=commission,
            slippage=slippage,
            initial_cash=cash,
            symbols=symbols,
        )
        bid, found = await self.backtests.submit(req, context, {"users": "user_ids"})
        return bt2.RunBacktestResponse(
            backtest_id=str(bid),
            found=found,
            status=STATUS_SUCCEEDED if found else STATUS_RUNNING,
        )

    async def GetBacktestResults(
        self, request: bt2.GetBacktestResultsRequest, context: Any
    ) -> bt2.BacktestResults:
        bid = parse_backtest_id("backtest_id", request.backtest_id)
        return results_pb(await self.backtests.get(bid, context))

    async def CompareStrategies(
        self, request: bt2.CompareStrategiesRequest, context: Any
    ) -> bt2.CompareStrategiesResponse:
        ids = parse_ids("backtest_ids", request.backtest_ids)
        rows: list[tuple[StoredBacktest, str]] = []
        skipped: list[str] = []
        for stored in await self.backtests.get_many(ids, context):
            if stored.status != STATUS_SUCCEEDED:
                skipped.append(f"{stored.id}: {stored.status}")
                continue
            rows.extend((stored, n) for n in strategy_names(stored))
        rows = ranked(rows)
        out = bt2.CompareStrategiesResponse(skipped=skipped)
        for rank, (stored, name) in enumerate(rows, start=1):
            out.comparisons.append(
                bt2.Comparison(
                    rank=rank,
                    backtest_id=str(stored.id),
                    metrics=metrics_pb(name, stored.summary.get(name, {})),
                    start=str(stored.report.get("start", "")),
                    end=str(stored.report.get("end", "")),
                    rebalance=str(stored.spec.get("rebalance", "")),
                )
            )
        if rows:
            out.best_backtest_id = str(rows[0][0].id)
        return out
