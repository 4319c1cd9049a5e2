"""The comparison's yardstick (`bloasis.regime.evaluation`): the ex-post dating, the stock/cash
rule, the lags and the scores, on hand-made series with hand-computed answers, on the real
S&P 500 closes, and as properties of random price paths."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bloasis.marketdata.sources import EmbeddedSource
from bloasis.regime import evaluation as ev


def _series(values: list[float], start: str = "2001-01-01") -> pd.Series:
    return pd.Series(values, index=pd.bdate_range(start, periods=len(values)), dtype="float64")


def test_dating_on_a_hand_made_path() -> None:
    c = _series([100, 110, 130, 120, 115, 100, 105, 125, 131, 140])
    [m] = ev.date_bear_markets(c)
    idx = c.index
    assert (m.peak, m.trough, m.minus10) == (idx[2].date(), idx[5].date(), idx[4].date())
    assert m.depth == pytest.approx(100 / 130 - 1)
    flags = ev.expost_bear(pd.DatetimeIndex(idx), [m])
    assert flags.tolist() == [False, False, False, True, True, True, False, False, False, False]


def test_a_fall_just_short_of_20_percent_is_no_bear_market() -> None:
    assert ev.date_bear_markets(_series([100, 80.1, 101])) == []
    [m] = ev.date_bear_markets(_series([100, 80.0, 101]))  # exactly 20% is one
    assert m.depth == pytest.approx(-0.2)


def test_an_episode_still_under_water_ends_at_its_lowest_close_so_far() -> None:
    c = _series([100, 70, 60, 75, 80])
    [m] = ev.date_bear_markets(c)
    assert m.trough == c.index[2].date() and m.trough_close == 60


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="threshold"):
        ev.date_bear_markets(_series([1, 2]), threshold=1.5)
    with pytest.raises(ValueError, match="positive"):
        ev.date_bear_markets(_series([1, 0, 2]))
    with pytest.raises(ValueError, match="at least 126 sessions"):
        ev.bootstrap_sharpe_diff(pd.Series(np.zeros(50)), pd.Series(np.zeros(50)))


def test_the_real_history_has_four_bear_markets() -> None:
    close = EmbeddedSource().load().market["index_close"]
    got = [(m.peak, m.trough) for m in ev.date_bear_markets(close)]
    assert got == [
        (date(2000, 3, 24), date(2002, 10, 9)),
        (date(2007, 10, 9), date(2009, 3, 9)),
        (date(2020, 2, 19), date(2020, 3, 23)),
        (date(2022, 1, 3), date(2022, 10, 12)),
    ]
    # 1990 (-19.9%), 1998 (-19.3%), 2011 (-19.4%) and 2018 (-19.8%) are corrections here.
    peaks = {m.peak.year for m in ev.date_bear_markets(close)}
    assert not peaks & {1990, 1998, 2011, 2018}


def test_stock_cash_rule_trades_at_the_next_close_and_earns_from_the_one_after() -> None:
    c = _series([100, 101, 102, 103, 104, 103, 102, 101])
    invested = pd.Series([True, True, True, False, False, False, False, False], index=c.index)
    r = ev.stock_cash_returns(c, invested, cost_bp=10)
    day = c.pct_change().fillna(0.0).to_numpy()
    # Decided at close 0, bought at close 1, earning from session 2; the buy costs 10 bp at 1.
    # Decided out at close 3, sold at close 4: session 4 still earns, then cash.
    expected = [0.0, -0.001, day[2], day[3], day[4] - 0.001, 0.0, 0.0, 0.0]
    assert r.to_numpy() == pytest.approx(expected)
    always = ev.stock_cash_returns(c, pd.Series(True, index=c.index), cost_bp=0)
    assert (1 + always).prod() == pytest.approx(c.iloc[-1] / c.iloc[1])


def test_sharpe_drawdown_and_cagr_by_hand() -> None:
    r = pd.Series([0.1, -0.5, 0.2])
    assert ev.max_drawdown(r) == pytest.approx(-0.5)
    assert ev.sharpe(pd.Series([0.01] * 10)) == 0.0  # no variation: no ratio
    x = np.array([0.01, -0.02, 0.03])
    assert ev.sharpe(x) == pytest.approx(x.mean() / x.std(ddof=1) * np.sqrt(252))
    assert ev.cagr(pd.Series([0.0] * 251 + [0.21])) == pytest.approx(0.21)


def test_bootstrap_interval_is_deterministic_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(1)
    a = pd.Series(rng.normal(0.0006, 0.01, 2000))
    b = pd.Series(rng.normal(0.0002, 0.012, 2000))
    lo, hi = ev.bootstrap_sharpe_diff(a, b)
    assert (lo, hi) == ev.bootstrap_sharpe_diff(a, b)
    assert lo < ev.sharpe(a) - ev.sharpe(b) < hi
    assert ev.bootstrap_sharpe_diff(a, a) == (0.0, 0.0)


def test_lags_and_scores_of_a_late_model() -> None:
    c = _series([100, 120, 110, 100, 90, 80, 85, 95, 110, 125, 130] + [131] * 5)
    [m] = ev.date_bear_markets(c)  # peak at 1, -10% at 4 (108 > 100? no: 100 <= 108 -> 3)
    pk, tr = c.index.get_loc(pd.Timestamp(m.peak)), c.index.get_loc(pd.Timestamp(m.trough))
    m10 = c.index.get_loc(pd.Timestamp(m.minus10))
    k, exit_after = 3, 2
    bear = pd.Series(False, index=c.index)
    bear.iloc[pk + k : tr + exit_after] = True
    [lag] = ev.episode_lags(bear, [m])
    assert lag.onset_from_peak == k and lag.exit_after_trough == exit_after
    assert lag.onset_from_minus10 == pk + k - m10 and not lag.exit_censored
    never_out = pd.Series(c.index > c.index[pk], index=c.index)
    [stuck] = ev.episode_lags(never_out, [m])
    assert stuck.exit_censored and stuck.exit_after_trough == len(c) - 1 - tr
    truth = ev.expost_bear(pd.DatetimeIndex(c.index), [m])
    assert ev.score(truth, c, [m], bootstrap=False)["balanced_accuracy"] == 1.0
    all_bull = pd.Series("bull", index=c.index)
    assert ev.score(all_bull, c, [m], bootstrap=False)["balanced_accuracy"] == 0.5
    assert ev.switches_per_year(bear) == pytest.approx(2 / (len(c) / 252))


def test_recovery_hit_rate_on_a_steady_rise() -> None:
    c = _series(list(np.linspace(100, 200, 400)))
    labels = pd.Series("bull", index=c.index)
    labels.iloc[::7] = "recovery"
    out = ev.recovery_hit_rates(labels, c)
    assert out["higher_after_63"] == 1.0 == out["higher_after_126"]
    assert out["sessions"] == int((labels == "recovery").sum())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=-0.08, max_value=0.08), min_size=30, max_size=400),
)
def test_dating_properties_on_random_paths(rets: list[float]) -> None:
    close = _series(list(100 * np.cumprod(1 + np.asarray(rets))))
    markets = ev.date_bear_markets(close)
    flags = ev.expost_bear(pd.DatetimeIndex(close.index), markets)
    last_trough = None
    for m in markets:
        assert m.depth <= -0.2 + 1e-12 and m.peak < m.minus10 <= m.trough
        assert last_trough is None or last_trough < m.peak  # episodes never overlap
        assert not flags[pd.Timestamp(m.peak)] and flags[pd.Timestamp(m.trough)]
        last_trough = m.trough
    hold = close.pct_change().fillna(0.0)
    assert ev.max_drawdown(hold) == pytest.approx(float((close / close.cummax() - 1).min()))
    always = ev.stock_cash_returns(close, pd.Series(True, index=close.index), cost_bp=0)
    assert (1 + always).prod() == pytest.approx(close.iloc[-1] / close.iloc[1])
