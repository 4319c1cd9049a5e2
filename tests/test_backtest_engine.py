"""The backtest engine without servers: decision sessions, decisions equal to the daily run's,
execution rules on hand-checked prices, the fixed-weight curve against vectorbt's, metrics
against empyrical's, and bad input named by field."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.backtest import engine_fixed_weight, vectorbt_fixed_weight
from bloasis.backtest import engine, metrics
from bloasis.backtest.decisions import decide_block, decision_sessions, regimes_at
from bloasis.backtest.simulate import Prices, simulate
from bloasis.backtest.types import BacktestInputError, BacktestSpec, Costs, Portfolio
from bloasis.marketdata import MarketData
from bloasis.marketdata.sources import EmbeddedSource
from bloasis.pipeline import compute_regime
from bloasis.regime.model import RegimeModel
from bloasis.regime.params import RegimeParams
from bloasis.strategy.session import decide_session
from bloasis.strategy.types import PROFILES, UserPreferences
from bloasis.strategy.users import derive_many

MODEL = RegimeModel(RegimeParams(), "regime-v2-test-backtest")
NO_COSTS = Costs(0.0, 0.0)


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


def test_decision_sessions_weekly_monthly_daily(md: MarketData) -> None:
    idx = md.index
    weekly = idx[decision_sessions(idx, date(2022, 11, 1), date(2022, 12, 28), "weekly")]
    # The first session, then each week's last (Fridays, or the Wednesday before Thanksgiving).
    assert weekly[0] == pd.Timestamp("2022-11-01")
    assert [d.strftime("%m-%d") for d in weekly[1:]] == [
        "11-04", "11-11", "11-18", "11-25", "12-02", "12-09", "12-16", "12-23",
    ]  # fmt: skip
    monthly = idx[decision_sessions(idx, date(2022, 9, 15), date(2022, 12, 28), "monthly")]
    assert [str(d.date()) for d in monthly] == [
        "2022-09-15", "2022-09-30", "2022-10-31", "2022-11-30",
    ]  # fmt: skip
    daily = decision_sessions(idx, date(2022, 12, 20), date(2022, 12, 28), "daily")
    assert len(daily) == 5  # 20, 21, 22, 23, 27: the 28th would execute after the end


@pytest.mark.slow
def test_decisions_equal_the_daily_runs_on_sample_sessions(md: MarketData) -> None:
    """Regime, books and strategies as of D from the backtest's cut data and memoised
    optimiser equal what the daily run computes from the whole data for D."""
    days = [date(1995, 6, 30), date(2008, 10, 15), date(2020, 3, 20), date(2022, 12, 23)]
    idx = np.array([md.index.get_loc(pd.Timestamp(d)) for d in days])
    users = [
        UserPreferences("u1", "moderate", excluded_sectors=("Energy",)),
        UserPreferences("u2", "aggressive", preferred_sectors=("Health Care",),
                        max_single_position=Decimal("0.07")),
    ]  # fmt: skip
    portfolios = [*(Portfolio.of_profile(p) for p in PROFILES), *map(Portfolio.of_user, users)]
    regimes = regimes_at(md, MODEL, idx)
    got = decide_block(md, regimes, idx, portfolios, top_n=15, min_history=21)
    for k, d in enumerate(days):
        daily = compute_regime(md, d, trigger="backfill", run_id=uuid.uuid4(), model=MODEL)
        assert (regimes[k].regime, regimes[k].confidence) == (daily.regime, daily.confidence)
        decided = decide_session(md, daily, top_n=15, quarantine=True)
        strategies = [decided.books[p].strategy for p in PROFILES]
        strategies += derive_many(decided.books, users, model_version=MODEL.version)
        for p_i, s in enumerate(strategies):
            want = np.zeros(len(md.symbols), dtype=np.float32)
            for g in s.signals:
                want[md.symbols.index(g.symbol)] = float(g.weight)
            assert np.array_equal(got.weights[k, p_i], want), (d, portfolios[p_i].name)
        for g_i, p in enumerate(PROFILES):
            book = decided.books[p]
            stops = {s: float(lv.stop) for s, lv in zip(book.symbols, book.levels, strict=True)}
            for s, stop in stops.items():
                assert got.levels[k, g_i, md.symbols.index(s), 0] == stop


def _prices(
    close: list[float],
    high: list[float] | None = None,
    low: list[float] | None = None,
    open_: list[float] | None = None,
) -> Prices:
    c = np.array(close, dtype=float)[:, None]

    def arr(v: list[float] | None, fill: np.ndarray) -> np.ndarray:
        return fill if v is None else np.array(v, dtype=float)[:, None]

    nan = np.full_like(c, np.nan)
    return Prices(c, arr(open_, nan), arr(high, c), arr(low, c), np.ones_like(c),
                  np.zeros(len(close)), high is not None)  # fmt: skip


def _levels(stop: float, t1: float, t2: float, trail: float) -> np.ndarray:
    lv = np.full((1, 3, 1, 6), np.nan)
    lv[0, :, 0] = (stop, t1, t2, 0.33, 0.33, trail)
    return lv


def test_rebalance_with_costs_and_close_fills() -> None:
    px = _prices([100, 100, 110, 121])
    costs = Costs(0.001, 0.002)
    r = simulate(px, np.array([0]), np.full((1, 1, 1), 0.5, np.float32), None, np.zeros(1, int),
                 start=0, end=3, costs=costs, initial_cash=1000.0)  # fmt: skip
    units = 500 / 100  # target value over the unslipped price
    cash = 1000 - units * 100 * 1.002 * 1.001
    assert r.equity[:, 0] == pytest.approx([1000, cash + 500, cash + 550, cash + 605])
    assert r.costs[0] == pytest.approx(units * 100 * (0.002 + 1.002 * 0.001))
    assert (r.fills_at_open, r.fills_at_close, int(r.trades[0])) == (0, 1, 1)


def test_close_only_stop_and_tier_fill_at_the_close() -> None:
    # Entry at 100 (session 1); 106 reaches tier 1 (105): a third sold at 106; 96 is below
    # the trailing stop (peak 106 x (1 - 0.05) = 100.7 > initial 95): the rest at 96.
    px = _prices([100, 100, 106, 96, 90])
    r = simulate(px, np.array([0]), np.full((1, 1, 1), 1.0, np.float32),
                 _levels(95, 105, 110, 0.05), np.zeros(1, int), start=0, end=4,
                 costs=NO_COSTS, initial_cash=1000.0)  # fmt: skip
    sold_t1 = 10 * 0.33 * 106
    rest = 10 * 0.67 * 96
    assert r.equity[-1, 0] == pytest.approx(sold_t1 + rest)
    # One round trip, a loss: 10 x 0.33 x 106 + 10 x 0.67 x 96 < 1000.
    assert (int(r.tiers[0]), int(r.stops[0]), int(r.trades[0]), int(r.wins[0])) == (1, 1, 1, 0)


def test_bar_levels_gap_and_stop_first() -> None:
    # With high/low: session 2 reaches tier 1 inside the bar (filled at 105, not the close);
    # session 3 gaps below the stop at the open (filled at the open, 93, not at the stop).
    px = _prices([100, 100, 103, 92], high=[100, 101, 106, 94], low=[99, 99, 100, 91],
                 open_=[100, 100, 101, 93])  # fmt: skip
    r = simulate(px, np.array([0]), np.full((1, 1, 1), 1.0, np.float32),
                 _levels(95, 105, 110, 0.05), np.zeros(1, int), start=0, end=3,
                 costs=NO_COSTS, initial_cash=1000.0)  # fmt: skip
    units = 1000 / 100  # filled at session 1's open, 100
    assert r.fills_at_open == 1
    assert r.equity[-1, 0] == pytest.approx(units * 0.33 * 105 + units * 0.67 * 93)
    # A bar reaching both the stop and a tier: the stop is taken first (the worse order).
    both = _prices([100, 100, 100], high=[100, 100, 106], low=[100, 100, 94],
                   open_=[100, 100, 100])  # fmt: skip
    r2 = simulate(both, np.array([0]), np.full((1, 1, 1), 1.0, np.float32),
                  _levels(95, 105, 110, 0.05), np.zeros(1, int), start=0, end=2,
                  costs=NO_COSTS, initial_cash=1000.0)  # fmt: skip
    assert r2.equity[-1, 0] == pytest.approx(10 * 95) and int(r2.tiers[0]) == 0


@pytest.mark.slow
def test_fixed_weight_curve_equals_vectorbt(md: MarketData) -> None:
    weights = {"AAPL": 0.3, "KO": 0.25, "XOM": 0.2, "JPM": 0.1}
    costs = Costs(0.0005, 0.001)
    ours = engine_fixed_weight(md, weights, date(2010, 1, 4), date(2022, 12, 28), costs)
    ref = vectorbt_fixed_weight(md, weights, date(2010, 1, 4), date(2022, 12, 28), costs)
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours / ref - 1.0)) < 1e-6


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-0.09, 0.09, allow_nan=False), min_size=30, max_size=300),
    st.floats(0.0, 0.0002),
)
def test_return_measures_match_empyrical(rets: list[float], rf: float) -> None:
    import empyrical as ep

    r = np.array(rets)
    if r.std() == 0:
        return
    ours = metrics.return_measures(r[:, None], np.full(len(r), rf))
    ex = pd.Series(r - rf)
    assert ours["cagr"][0] == pytest.approx(ep.annual_return(pd.Series(r)), rel=1e-9, abs=1e-12)
    assert ours["volatility"][0] == pytest.approx(ep.annual_volatility(pd.Series(r)), rel=1e-9)
    assert ours["sharpe"][0] == pytest.approx(ep.sharpe_ratio(ex), rel=1e-9)
    assert ours["max_drawdown"][0] == pytest.approx(ep.max_drawdown(pd.Series(r)), abs=1e-12)
    if (r - rf < 0).any():
        assert ours["sortino"][0] == pytest.approx(ep.sortino_ratio(ex), rel=1e-9)
    if ours["max_drawdown"][0] < 0:
        assert ours["calmar"][0] == pytest.approx(ep.calmar_ratio(pd.Series(r)), rel=1e-9)


def _spec(**kw: object) -> BacktestSpec:
    base: dict[str, object] = {
        "start": date(2021, 1, 4),
        "end": date(2022, 12, 28),
        "portfolios": (Portfolio.of_profile("moderate"),),
        "rebalance": "monthly",
    }
    return BacktestSpec(**(base | kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"symbols": ("AAPL", "NOPE")}, "symbols"),
        ({"start": date(1980, 1, 2)}, "start"),
        ({"end": date(2030, 1, 2)}, "end"),
        ({"end": date(2020, 1, 2)}, "end"),
        ({"costs": Costs(-0.001, 0.0)}, "commission"),
        ({"costs": Costs(0.0, float("nan"))}, "slippage"),
        ({"rebalance": "hourly"}, "rebalance"),
        ({"portfolios": ()}, "profiles"),
        ({"start": date(1990, 1, 2), "end": date(1990, 6, 29)}, "start"),  # no regime yet
        ({"portfolios": (Portfolio.of_user(UserPreferences("x", "moderate",
                                                           excluded_sectors=("Nope",))),)},
         "users"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(md: MarketData, kw: dict[str, object], field: str) -> None:
    with pytest.raises(BacktestInputError) as err:
        engine.run(md, _spec(**kw), MODEL)
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")
    with pytest.raises(BacktestInputError, match=r"^profiles: unknown profile"):
        Portfolio.of_profile("reckless")


@pytest.mark.slow
def test_a_short_backtest_has_real_figures_and_every_report_part(md: MarketData) -> None:
    r = engine.run(md, _spec(rebalance="weekly", symbols=()), MODEL)
    assert r.names == ["moderate", *engine.BENCHMARKS]
    assert r.equity.shape == (len(r.dates), 4) and np.isfinite(r.equity).all()
    # Buy and hold is the index itself, rebased.
    ix = md.market["index_close"].loc[pd.Timestamp(r.dates[0]) : pd.Timestamp(r.dates[-1])]
    assert r.equity[:, 1] == pytest.approx(100000 * ix.to_numpy() / ix.iloc[0])
    s = r.summary["moderate"]
    assert s["trades"] > 0 and 0 <= s["win_rate"] <= 1 and 0 < s["exposure"] < 1
    assert s["max_drawdown"] < 0 and s["volatility"] > 0
    assert set(r.per_regime["moderate"]) <= {"crisis", "bear", "sideways", "bull", "recovery"}
    assert set(r.per_year["moderate"]) == {"2021", "2022"}
    assert r.samples["moderate"]["in_sample"]["to"] == "2022-12-28"  # regime-v2: all in sample
    assert any("Survivorship" in n for n in r.notes)
    assert "close" in r.execution and "closes only" in r.execution


def test_an_empty_universe_is_refused_naming_symbols(md: MarketData) -> None:
    import dataclasses

    empty = dataclasses.replace(md, closes=md.closes.iloc[:, :0], ohlcv=None)
    with pytest.raises(BacktestInputError, match=r"^symbols: the universe is empty"):
        engine.run(empty, _spec(), MODEL)
