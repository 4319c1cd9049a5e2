"""bloasis.backtesting.BacktestingService (v1, the original contract) over `Backtests`, the
part it shares with v2 (`bloasis.serve.backtesting_v2`).

- RunBacktest (write scope): `strategy_type` a risk profile; empty with `user_id`: that user's
  strategy (their stored preferences); neither: moderate. `period` "YYYY-MM-DD:YYYY-MM-DD",
  "<N>y" (N years to the data's last session) or "max" (empty: 1y). `config` costs as fractions
  (0: the defaults), initial cash (0: 100000); stop_loss/take_profit overrides are refused: the
  strategies' own ATR stops and profit tiers are what is backtested. Answers at once: status
  running (results empty), or succeeded with the results when the same inputs were backtested.
- GetBacktestResults: status and progress while running (fields added at new numbers); once
  succeeded one SymbolResult per portfolio and benchmark (`symbol` the portfolio's name,
  `passed`: a Sharpe ratio above the S&P 500 buy and hold's) and the first portfolio's metrics.
- CompareStrategies: each succeeded backtest's first portfolio ranked by Sharpe.
- RunRLBacktest: UNIMPLEMENTED (no reinforcement-learning agent here).
"""

from __future__ import annotations

import math
import re
from datetime import date
from decimal import Decimal
from typing import Any, Final

import grpc

from bloasis.app.backtest import BacktestRequest
from bloasis.backtest.types import DEFAULT_INITIAL_CASH, Costs
from bloasis.pb.v1 import backtesting_pb2 as bt1
from bloasis.serve.auth import check_user_access
from bloasis.serve.backtesting_v2 import (
    S_AND_P,
    STATUS_SUCCEEDED,
    Backtests,
    check_initial_cash,
    number,
    parse_backtest_id,
    parse_ids,
    ranked,
    result_names,
    strategy_names,
    symbols_of,
)
from bloasis.serve.v1_wire import iso_of
from bloasis.serve.validation import RequestError, check_user_id, invalid, parse_profile, show
from bloasis.store.backtests import StoredBacktest
from bloasis.wire import ts

SERVICE: Final = bt1.DESCRIPTOR.services_by_name["BacktestingService"]
DEFAULT_PROFILE: Final = "moderate"
DEFAULT_PERIOD: Final = "1y"
MAX_YEARS: Final = 100
_RANGE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}):([0-9]{4}-[0-9]{2}-[0-9]{2})")
_YEARS = re.compile(r"([0-9]{1,3})[yY]")
# The app service's field names -> the v1 request's.
_RENAME: Final = {
    "start": "period",
    "end": "period",
    "profiles": "strategy_type",
    "users": "user_id",
    "commission": "config.commission",
    "slippage": "config.slippage",
    "initial_cash": "config.initial_cash",
}
RL_UNIMPLEMENTED: Final = (
    "RunRLBacktest is not implemented: this system has no reinforcement-learning agent (its "
    "strategies are rule-based and deterministic: regime, sector and factor rules with ATR stops "
    "and profit tiers); use RunBacktest to backtest them"
)


def _iso_date(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise invalid(f"period: {show(raw)} is not a valid calendar date") from None


def _years_before(end: date, years: int) -> date:
    try:
        return end.replace(year=end.year - years)
    except ValueError:  # 29 February
        return end.replace(year=end.year - years, day=28)


def period_kind(raw: str) -> str:
    """Checks the period's form without the data: 'range', 'years' or 'max'."""
    p = raw.strip()
    if _RANGE.fullmatch(p):
        return "range"
    m = _YEARS.fullmatch(p)
    if m:
        if not 1 <= int(m.group(1)) <= MAX_YEARS:
            raise invalid(f"period: the years must be 1 to {MAX_YEARS}, got {show(raw)}")
        return "years"
    if p.lower() == "max":
        return "max"
    raise invalid(
        f"period must be YYYY-MM-DD:YYYY-MM-DD, <N>y (N years to the data's last session) or "
        f"max, got {show(raw)}"
    )


def resolve_period(raw: str, bounds: tuple[date, date] | None) -> tuple[date, date]:
    """(start, end) of a period checked by `period_kind`; `bounds` (the data's first and last
    session) are needed unless it is a date range."""
    p = raw.strip()
    m = _RANGE.fullmatch(p)
    if m:
        start, end = _iso_date(m.group(1)), _iso_date(m.group(2))
        if end <= start:
            raise invalid(f"period: the end {end} is not after the start {start}")
        return start, end
    assert bounds is not None
    first, last = bounds
    y = _YEARS.fullmatch(p)
    if y is None:  # max
        return first, last
    start = _years_before(last, int(y.group(1)))
    if start < first:
        raise invalid(
            f"period {show(raw)} would start on {start}, before the data's first session "
            f"{first}; use max"
        )
    return start, last


def _fraction(field: str, value: float, default: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise invalid(f"{field} must be a fraction >= 0 (e.g. 0.0005), got {value}")
    return value or default  # proto3 cannot tell 0 from unset: 0 is the default


def parse_config(config: bt1.BacktestConfig) -> tuple[float, float, Decimal]:
    """(commission, slippage, initial cash) of a v1 config."""
    for field in ("stop_loss", "take_profit"):
        if getattr(config, field) != 0:  # NaN included
            raise invalid(
                f"config.{field} is not supported as an override: the backtest uses the "
                "strategies' own ATR stops and profit tiers (leave it 0)"
            )
    costs = Costs()
    commission = _fraction("config.commission", config.commission, costs.commission)
    slippage = _fraction("config.slippage", config.slippage, costs.slippage)
    if not math.isfinite(config.initial_cash) or config.initial_cash < 0:
        raise invalid(f"config.initial_cash must be > 0 (0: 100000), got {config.initial_cash}")
    cash = DEFAULT_INITIAL_CASH
    if config.initial_cash:
        cash = check_initial_cash("config.initial_cash", Decimal(repr(config.initial_cash)))
    return commission, slippage, cash


def _v(x: float | None) -> float:
    return 0.0 if x is None else x  # v1 has no "undefined": 0


def portfolio_metrics(measures: dict[str, Any]) -> bt1.PortfolioMetrics:
    return bt1.PortfolioMetrics(
        total_return=_v(number(measures.get("total_return"))),
        sharpe_ratio=_v(number(measures.get("sharpe"))),
        max_drawdown=_v(number(measures.get("max_drawdown"))),
        volatility=_v(number(measures.get("volatility"))),
    )


def symbol_result(name: str, m: dict[str, Any], bar: float | None) -> bt1.SymbolResult:
    sharpe = number(m.get("sharpe"))
    return bt1.SymbolResult(
        symbol=name,
        total_return=_v(number(m.get("total_return"))),
        sharpe_ratio=_v(sharpe),
        sortino_ratio=_v(number(m.get("sortino"))),
        max_drawdown=_v(number(m.get("max_drawdown"))),
        win_rate=_v(number(m.get("win_rate"))),
        profit_factor=_v(number(m.get("profit_factor"))),
        total_trades=min(int(_v(number(m.get("trades")))), 2**31 - 1),
        avg_trade_duration_days=_v(number(m.get("avg_holding_sessions"))),
        calmar_ratio=_v(number(m.get("calmar"))),
        passed=sharpe is not None and bar is not None and sharpe > bar,
    )


def response_v1(stored: StoredBacktest) -> bt1.BacktestResponse:
    pb = bt1.BacktestResponse(
        backtest_id=str(stored.id),
        created_at=iso_of(ts(stored.created_at)),
        status=stored.status,
        progress=stored.progress,
        message=stored.message,
        error=stored.error or "",
    )
    if stored.status != STATUS_SUCCEEDED:
        return pb
    summary = stored.summary
    bar = number(summary.get(S_AND_P, {}).get("sharpe"))
    pb.results.extend(symbol_result(n, summary[n], bar) for n in result_names(stored))
    first = strategy_names(stored)
    if first:
        pb.portfolio_metrics.CopyFrom(portfolio_metrics(summary.get(first[0], {})))
    return pb


class BacktestingServicer:
    def __init__(self, backtests: Backtests) -> None:
        self.backtests = backtests

    async def RunBacktest(self, request: bt1.BacktestRequest, context: Any) -> bt1.BacktestResponse:
        user_id = request.user_id
        if user_id:
            check_user_id(user_id)
            check_user_access(user_id)
        profile = request.strategy_type
        if profile:
            parse_profile("strategy_type", profile)
        symbols = symbols_of(request.symbols)
        period = request.period or DEFAULT_PERIOD
        kind = period_kind(period)
        commission, slippage, cash = parse_config(request.config)
        # A date range is checked before any store read; the others need the data's bounds.
        span = resolve_period(period, None) if kind == "range" else None
        users: tuple[str, ...] = ()
        if not profile and user_id:
            users = (user_id,)
            await self.backtests.check_users(users, context)
        if span is None:
            span = resolve_period(period, await self.backtests.bounds(context))
        start, end = span
        req = BacktestRequest(
            start=start,
            end=end,
            profiles=() if users else (profile or DEFAULT_PROFILE,),
            user_ids=users,
            commission=commission,
            slippage=slippage,
            initial_cash=cash,
            symbols=symbols,
        )
        bid, _ = await self.backtests.submit(req, context, _RENAME)
        stored = await self.backtests.get(bid, context)
        return response_v1(stored)

    async def RunRLBacktest(
        self, request: bt1.RLBacktestRequest, context: Any
    ) -> bt1.BacktestResponse:
        raise RequestError(grpc.StatusCode.UNIMPLEMENTED, RL_UNIMPLEMENTED)

    async def GetBacktestResults(
        self, request: bt1.GetResultsRequest, context: Any
    ) -> bt1.GetResultsResponse:
        bid = parse_backtest_id("backtest_id", request.backtest_id)
        stored = await self.backtests.get(bid, context)
        return bt1.GetResultsResponse(results=response_v1(stored))

    async def CompareStrategies(
        self, request: bt1.CompareRequest, context: Any
    ) -> bt1.CompareResponse:
        ids = parse_ids("backtest_ids", request.backtest_ids)
        rows: list[tuple[StoredBacktest, str]] = []
        for stored in await self.backtests.get_many(ids, context):
            names = strategy_names(stored)
            if stored.status == STATUS_SUCCEEDED and names:
                rows.append((stored, names[0]))
        rows = ranked(rows)
        out = bt1.CompareResponse()
        for rank, (stored, name) in enumerate(rows, start=1):
            out.comparisons.append(
                bt1.BacktestComparison(
                    backtest_id=str(stored.id),
                    strategy_name=name,
                    metrics=portfolio_metrics(stored.summary.get(name, {})),
                    rank=rank,
                )
            )
        if rows:
            out.best_strategy_id = str(rows[0][0].id)
        return out
