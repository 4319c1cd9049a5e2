"""`bloasis.regime.evaluation`, the yardstick regime labels are scored by: the ex-post bull/bear
dating, the stock/cash rule (decide at close t, trade at close t+1, earn from t+2), the
performance figures, the bootstrap interval, the lags and the scores. Hand-made series with
answers computed by hand, the real S&P 500 history, and properties of random price paths
checked against a plain loop re-implementation of the dating."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bloasis.pipeline import load_market_data
from bloasis.regime.evaluation import (
    BearMarket,
    as_bear,
    bootstrap_sharpe_diff,
    buy_and_hold,
    cagr,
    date_bear_markets,
    episode_lags,
    expost_bear,
    max_drawdown,
    recovery_hit_rates,
    score,
    sharpe,
    stock_cash_returns,
    switches_per_year,
)

START = "2021-01-04"  # a Monday: sessions 0..11 are Jan 4-8, 11-15, 18, 19
PROPERTY = settings(max_examples=60, deadline=None)


def _closes(values: list[float], start: str = START) -> pd.Series:
    return pd.Series(values, index=pd.bdate_range(start, periods=len(values)), dtype="float64")


def _d(day: int) -> date:
    return date(2021, 1, day)


def _pos(index: pd.Index, day: date) -> int:
    pos = int(index.searchsorted(pd.Timestamp(day)))
    assert index[pos] == pd.Timestamp(day)
    return pos


# --- the dating ------------------------------------------------------------------------------


def test_one_bear_market_peak_trough_and_minus10() -> None:
    #            J4   J5   J6   J7   J8   J11  J12  J13  J14  J15  J18  J19
    c = _closes([100, 110, 120, 130, 125, 115, 110, 100, 105, 120, 135, 140])
    [m] = date_bear_markets(c)
    assert m == BearMarket(
        peak=_d(7), trough=_d(13), minus10=_d(11), peak_close=130.0, trough_close=100.0
    )  # 125 is -3.8%, 115 the first close <= 117 (-11.5%), 100 the low before 135 regains 130
    assert m.depth == pytest.approx(100 / 130 - 1)  # -23.1%
    flags = expost_bear(pd.DatetimeIndex(c.index), [m])
    assert flags.tolist() == [False] * 4 + [True] * 4 + [False] * 4
    assert flags.index.equals(c.index)
    # The threshold is the depth that qualifies.
    assert date_bear_markets(c, threshold=0.25) == []
    assert [x.peak for x in date_bear_markets(c, threshold=0.23)] == [_d(7)]


def test_a_fall_of_19_9_percent_is_no_bear_market() -> None:
    c = _closes([100, 130, 104.13, 131])  # 104.13 / 130 = 0.801
    assert date_bear_markets(c) == []
    assert expost_bear(pd.DatetimeIndex(c.index), []).tolist() == [False] * 4
    [m] = date_bear_markets(c, threshold=0.19)
    assert (m.peak, m.trough) == (_d(5), _d(6)) and m.depth == pytest.approx(-0.199)


def test_a_fall_of_exactly_20_percent_is_one() -> None:
    # 80/100 - 1 is -0.19999999999999996 in floating point; "at least 20%" still counts it.
    [m] = date_bear_markets(_closes([100, 80, 101]))
    assert (m.peak, m.trough, m.minus10) == (_d(4), _d(5), _d(5))


def test_two_separate_bear_markets() -> None:
    #            J4   J5   J6  J7  J8   J11  J12  J13  J14  J15  J18
    c = _closes([100, 120, 90, 95, 121, 150, 140, 110, 120, 151, 155])
    first, second = date_bear_markets(c)
    assert (first.peak, first.trough, first.minus10) == (_d(5), _d(6), _d(6))
    assert first.depth == pytest.approx(-0.25)
    assert (second.peak, second.trough, second.minus10) == (_d(11), _d(13), _d(13))
    assert second.depth == pytest.approx(110 / 150 - 1)  # 140 is only -6.7%
    flags = expost_bear(pd.DatetimeIndex(c.index), [first, second])
    # After each peak through its trough only: 95 (J7) follows the first trough, so is bull.
    assert flags.tolist() == [False, False, True, False, False, False, True, True] + [False] * 3


def test_an_episode_still_under_water_ends_at_its_lowest_close_so_far() -> None:
    [m] = date_bear_markets(_closes([100, 120, 100, 90, 95, 110]))  # 120 never regained
    assert (m.peak, m.trough, m.minus10) == (_d(5), _d(7), _d(6))
    assert (m.peak_close, m.trough_close) == (120.0, 90.0)
    [last] = date_bear_markets(_closes([100, 120, 100, 90, 85]))  # the last close is the low
    assert (last.trough, last.trough_close) == (_d(8), 85.0)


def test_a_close_equal_to_the_peak_regains_it() -> None:
    # The code's rule (values >= running max): an equal close is a new high and starts a new
    # episode, so the later of two equal highs is the peak...
    c = _closes([100, 130, 120, 130, 100, 140])
    [m] = date_bear_markets(c)
    assert (m.peak, m.trough) == (_d(7), _d(8))
    assert expost_bear(pd.DatetimeIndex(c.index), [m]).tolist() == [False] * 4 + [True, False]
    # ... and a return to exactly the old high ends a bear market: two episodes, not one
    # 130 -> 90 (-30.8%).
    first, second = date_bear_markets(_closes([100, 130, 100, 130, 90, 140]))
    assert (first.peak, first.trough) == (_d(5), _d(6))
    assert (second.peak, second.trough) == (_d(7), _d(8))
    assert second.depth == pytest.approx(90 / 130 - 1)


def test_missing_closes_are_dropped_and_empty_input_has_no_bear_market() -> None:
    c = _closes([100, float("nan"), 130, 100, 140])
    [m] = date_bear_markets(c)
    assert (m.peak, m.trough) == (_d(6), _d(7))
    assert date_bear_markets(pd.Series([], dtype="float64", index=pd.DatetimeIndex([]))) == []
    assert date_bear_markets(_closes([100])) == []
    assert date_bear_markets(_closes([100, 101, 102, 103])) == []  # never below a high


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2, 1.5])
def test_a_threshold_outside_0_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        date_bear_markets(_closes([100, 50, 120]), threshold=threshold)


@pytest.mark.parametrize("bad", [0.0, -5.0])
def test_non_positive_closes_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        date_bear_markets(_closes([100, 90, bad, 110]))


# --- the real history ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sp500() -> pd.Series:
    close: pd.Series = load_market_data(None, "embedded").market["index_close"]
    return close


def test_the_sp500_1990_2022_has_exactly_four_bear_markets(sp500: pd.Series) -> None:
    markets = date_bear_markets(sp500)
    assert [(m.peak, m.trough) for m in markets] == [
        (date(2000, 3, 24), date(2002, 10, 9)),
        (date(2007, 10, 9), date(2009, 3, 9)),
        (date(2020, 2, 19), date(2020, 3, 23)),
        (date(2022, 1, 3), date(2022, 10, 12)),
    ]
    for m in markets:
        assert m.peak_close == sp500[pd.Timestamp(m.peak)]
        assert m.trough_close == sp500[pd.Timestamp(m.trough)]
        # Computed again from the closes: the -10% day is the first close 10% under the peak.
        after = sp500[sp500.index > pd.Timestamp(m.peak)]
        assert m.minus10 == after[after <= 0.9 * m.peak_close].index[0].date()
        assert m.depth <= -0.2
    flags = expost_bear(pd.DatetimeIndex(sp500.index), markets)
    per_episode = [
        int(((sp500.index > pd.Timestamp(m.peak)) & (sp500.index <= pd.Timestamp(m.trough))).sum())
        for m in markets
    ]
    assert int(flags.sum()) == sum(per_episode)
    assert per_episode[2] == 23  # 2020-02-20 .. 2020-03-23


def test_the_near_misses_are_not_bear_markets(sp500: pd.Series) -> None:
    peaks = {m.peak.year for m in date_bear_markets(sp500)}
    assert not peaks & {1990, 1998, 2011, 2018}
    # 1990, 1998 and 2018 fell 19.3-19.9% from their highs: bear markets at a 19% threshold.
    near = {m.peak.year: m.depth for m in date_bear_markets(sp500, threshold=0.19)}
    for year in (1990, 1998, 2018):
        assert -0.20 < near[year] <= -0.19
    # 2011 (-19.4% from its own April high) lies inside the 2007 episode: the 2007 high was not
    # regained before 2013-03-28, so it is no separate episode at any threshold.
    assert 2011 not in near
    first_regain = sp500[(sp500.index > "2007-10-09") & (sp500 >= 1565.15)].index[0]
    assert first_regain == pd.Timestamp("2013-03-28")


# --- the stock/cash rule ---------------------------------------------------------------------

EIGHT = [100.0, 102.0, 101.0, 103.0, 100.0, 105.0, 104.0, 106.0]


def test_going_in_once_costs_once_and_earns_from_two_sessions_later() -> None:
    c = _closes(EIGHT)
    invested = pd.Series([False, False, True, True, True, True, True, True], index=c.index)
    r = stock_cash_returns(c, invested)
    # Decided at close 2, bought at close 3 (10 bp that day), earning close 3 -> close 4 on.
    expected = [0.0, 0.0, 0.0, -0.001, 100 / 103 - 1, 105 / 100 - 1, 104 / 105 - 1, 106 / 104 - 1]
    assert r.to_numpy() == pytest.approx(expected, abs=1e-15)
    assert r.index.equals(c.index)
    dear = stock_cash_returns(c, invested, cost_bp=25)
    assert dear.to_numpy() == pytest.approx([*expected[:3], -0.0025, *expected[4:]], abs=1e-15)


def test_going_out_once_the_entry_and_exit_are_both_trades() -> None:
    c = _closes(EIGHT)
    invested = pd.Series([True] * 4 + [False] * 4, index=c.index)
    r = stock_cash_returns(c, invested)
    # In from close 1 (bought that day: 10 bp); decided out at close 4, sold at close 5, which
    # still earns close 4 -> 5 and pays 10 bp; cash afterwards.
    expected = [
        0.0,
        -0.001,
        101 / 102 - 1,
        103 / 101 - 1,
        100 / 103 - 1,
        105 / 100 - 1 - 0.001,
        0.0,
        0.0,
    ]
    assert r.to_numpy() == pytest.approx(expected, abs=1e-15)


def test_always_invested_without_cost_is_buy_and_hold_from_the_third_session() -> None:
    c = _closes(EIGHT)
    r = stock_cash_returns(c, pd.Series(True, index=c.index), cost_bp=0)
    hold = c.pct_change().fillna(0.0)
    assert r.iloc[:2].tolist() == [0.0, 0.0]
    assert r.iloc[2:].to_numpy() == pytest.approx(hold.iloc[2:].to_numpy(), abs=1e-15)
    assert float(np.prod(1 + r.to_numpy())) == pytest.approx(106 / 102)
    never = stock_cash_returns(c, pd.Series(False, index=c.index))
    assert never.tolist() == [0.0] * 8


def test_signals_are_forward_filled_onto_the_sessions_and_late_decisions_do_nothing() -> None:
    c = _closes(EIGHT)
    sparse = pd.Series([True], index=[c.index[2]])  # nothing known before session 2: cash
    full = pd.Series([False, False] + [True] * 6, index=c.index)
    assert stock_cash_returns(c, sparse).tolist() == stock_cash_returns(c, full).tolist()
    # A decision at the last close is never traded; one at the last but one is traded at the
    # last close (its cost) but earns nothing yet.
    last = pd.Series([False] * 7 + [True], index=c.index)
    assert stock_cash_returns(c, last).tolist() == [0.0] * 8
    last_but_one = pd.Series([False] * 6 + [True] * 2, index=c.index)
    assert stock_cash_returns(c, last_but_one).tolist() == [0.0] * 7 + [-0.001]


# --- performance figures ---------------------------------------------------------------------


def test_sharpe_by_hand() -> None:
    # mean 0.02, sample stdev 0.01 * sqrt(2): 0.02 / 0.0141 * sqrt(252) = sqrt(504)
    assert sharpe(np.array([0.01, 0.03])) == pytest.approx(np.sqrt(504))
    assert sharpe(pd.Series([-0.01, -0.03])) == pytest.approx(-np.sqrt(504))
    assert sharpe(pd.Series([0.01] * 10)) == 0.0  # constant: no ratio
    assert sharpe(pd.Series([0.0] * 10)) == 0.0
    assert sharpe(np.array([0.05])) == 0.0
    assert sharpe(np.array([])) == 0.0


def test_max_drawdown_by_hand() -> None:
    assert max_drawdown(pd.Series([0.1, -0.5, 0.2])) == pytest.approx(-0.5)
    assert max_drawdown(pd.Series([0.0, -0.1, -0.1, 0.5])) == pytest.approx(-0.19)
    # equity 1, 1.5, 1.2, 1.32, 0.66: the worst is 0.66 / 1.5 - 1
    assert max_drawdown(pd.Series([0.0, 0.5, -0.2, 0.1, -0.5])) == pytest.approx(-0.56)
    assert max_drawdown(pd.Series([0.01, 0.02, 0.0])) == 0.0


def test_cagr_by_hand() -> None:
    assert cagr(pd.Series([0.0] * 251 + [0.21])) == pytest.approx(0.21)  # one year, +21%
    assert cagr(pd.Series([0.0] * 503 + [0.21])) == pytest.approx(0.10)  # two years, 1.1^2
    assert cagr(pd.Series([0.0] * 125 + [0.10])) == pytest.approx(0.21)  # half a year, +10%
    assert cagr(pd.Series([], dtype="float64")) == 0.0


def test_buy_and_hold_figures() -> None:
    c = _closes([100, 110, 99, 108.9])  # +10%, -10%, +10%
    r = pd.Series([0.0, 0.1, -0.1, 0.1])
    got = buy_and_hold(c)
    assert got == {
        "start": "2021-01-04",
        "end": "2021-01-07",
        "sessions": 4,
        "sharpe": round(float(r.mean() / r.std(ddof=1) * np.sqrt(252)), 4),
        "max_drawdown": -0.1,
        "cagr": round(1.089 ** (252 / 4) - 1, 4),
        "switches_per_year": 0.0,
    }


# --- the bootstrap ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_strategies() -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(1)
    a = pd.Series(rng.normal(0.0006, 0.01, 1500))
    b = pd.Series(0.6 * a.to_numpy() + rng.normal(0.0, 0.008, 1500))
    return a, b


def test_bootstrap_is_deterministic_and_brackets_the_estimate(
    two_strategies: tuple[pd.Series, pd.Series],
) -> None:
    a, b = two_strategies
    lo, hi = bootstrap_sharpe_diff(a, b)
    assert (lo, hi) == bootstrap_sharpe_diff(a.copy(), b.copy())
    assert lo <= sharpe(a) - sharpe(b) <= hi
    assert lo < hi
    # The same draws at a higher level: a wider interval around the same centre.
    lo99, hi99 = bootstrap_sharpe_diff(a, b, level=0.99)
    assert lo99 <= lo and hi <= hi99
    # Swapping the series mirrors the interval.
    assert bootstrap_sharpe_diff(b, a) == pytest.approx((-hi, -lo))
    # The seed is what makes it repeatable: another one draws other blocks.
    assert bootstrap_sharpe_diff(a, b, seed=14) != (lo, hi)


def test_bootstrap_of_a_series_against_itself_is_zero(
    two_strategies: tuple[pd.Series, pd.Series],
) -> None:
    a, _ = two_strategies
    assert bootstrap_sharpe_diff(a, a) == (0.0, 0.0)


def test_bootstrap_needs_two_blocks() -> None:
    x = pd.Series(np.random.default_rng(2).normal(0, 0.01, 126))
    with pytest.raises(ValueError, match="at least 126 sessions"):
        bootstrap_sharpe_diff(x.iloc[:125], x.iloc[:125])
    lo, hi = bootstrap_sharpe_diff(x, x * 0.5 + 0.001, samples=200)  # exactly two blocks
    assert np.isfinite(lo) and np.isfinite(hi) and lo <= hi
    with pytest.raises(ValueError, match="at least 20 sessions"):
        bootstrap_sharpe_diff(x.iloc[:19], x.iloc[:19], block=10)


# --- lags, switches and scores ---------------------------------------------------------------

# 40 sessions: up 100 -> 150 (session 10), down 6 a session to 90 (session 20), then up 8 a
# session, regaining 150 at session 28 (154).
PK, TR, M10, N = 10, 20, 13, 40


@pytest.fixture(scope="module")
def episode() -> tuple[pd.Series, BearMarket]:
    up = [100.0 + 5 * i for i in range(11)]
    down = [150.0 - 6 * i for i in range(1, 11)]
    again = [90.0 + 8 * i for i in range(1, 20)]
    c = _closes(up + down + again)
    [m] = date_bear_markets(c)
    assert len(c) == N
    assert (_pos(c.index, m.peak), _pos(c.index, m.trough), _pos(c.index, m.minus10)) == (
        PK,
        TR,
        M10,
    )  # 132 at session 13 is the first close <= 135
    return c, m


def _bear(index: pd.Index, start: int, stop: int | None) -> pd.Series:
    """Bear on sessions start..stop-1 (to the end when stop is None), bull elsewhere."""
    flags = np.zeros(len(index), dtype=bool)
    flags[start:stop] = True
    return pd.Series(flags, index=index)


@pytest.mark.parametrize(("k", "m"), [(4, 3), (2, 1), (1, 0), (10, 5)])
def test_lags_of_a_model_k_sessions_late_in_and_m_late_out(
    episode: tuple[pd.Series, BearMarket], k: int, m: int
) -> None:
    c, market = episode
    [lag] = episode_lags(_bear(c.index, PK + k, TR + m), [market])
    assert lag.peak == "2021-01-18" and lag.trough == "2021-02-01"
    assert lag.onset_from_peak == k
    assert lag.onset_from_minus10 == (PK + k) - M10  # negative: called before the -10% day
    assert lag.exit_after_trough == m and not lag.exit_censored


def test_lags_of_a_model_that_never_leaves_is_censored_at_the_end(
    episode: tuple[pd.Series, BearMarket],
) -> None:
    c, market = episode
    [lag] = episode_lags(_bear(c.index, PK + 4, None), [market])
    assert lag.onset_from_peak == 4 and lag.exit_censored
    assert lag.exit_after_trough == N - 1 - TR  # 19: a lower bound


def test_lags_of_early_missed_and_unspanned_episodes(
    episode: tuple[pd.Series, BearMarket],
) -> None:
    c, market = episode
    # Bear since before the peak: the onset counts from the first session after the peak.
    [early] = episode_lags(_bear(c.index, 5, TR + 2), [market])
    assert (early.onset_from_peak, early.onset_from_minus10, early.exit_after_trough) == (
        1,
        PK + 1 - M10,
        2,
    )
    # Never bear between peak and trough: missed; bull at the trough: exit lag 0.
    for late in (pd.Series(False, index=c.index), _bear(c.index, TR + 1, TR + 4)):
        [missed] = episode_lags(late, [market])
        assert missed.onset_from_peak is None and missed.onset_from_minus10 is None
        assert missed.exit_after_trough == 0 and not missed.exit_censored
    # Labels starting after the peak, or ending before the trough, do not score the episode.
    bear = _bear(c.index, PK + 4, TR + 3)
    assert episode_lags(bear.iloc[PK + 1 :], [market]) == []
    assert episode_lags(bear.iloc[:TR], [market]) == []
    assert len(episode_lags(bear.iloc[PK:], [market])) == 1


def test_as_bear_maps_regime_names_and_passes_booleans() -> None:
    names = pd.Series(["bull", "bear", "crisis", "recovery", "sideways"])
    assert as_bear(names).tolist() == [False, True, True, False, False]
    flags = pd.Series([True, False, True])
    assert as_bear(flags) is flags


def test_switches_per_year_counts_flips() -> None:
    assert switches_per_year(pd.Series([False, False, True, True, False])) == pytest.approx(
        2 / (5 / 252)
    )
    year = np.zeros(252, dtype=bool)
    year[10:20] = True
    year[100:] = True
    assert switches_per_year(pd.Series(year)) == pytest.approx(3.0)
    assert switches_per_year(pd.Series([True] * 30)) == 0.0
    assert switches_per_year(pd.Series([True])) == 0.0


def test_score_of_the_perfect_labels(episode: tuple[pd.Series, BearMarket]) -> None:
    c, market = episode
    truth = expost_bear(pd.DatetimeIndex(c.index), [market])
    got = score(truth, c, [market], bootstrap=False)
    assert (got["balanced_accuracy"], got["bear_recall"], got["bull_recall"]) == (1.0, 1.0, 1.0)
    assert got["share_bear"] == 0.25  # sessions 11..20 of 40
    assert got["median_onset_lag_from_peak"] == 1.0
    assert got["median_onset_lag_from_minus10"] == float(PK + 1 - M10)
    assert got["median_exit_lag_after_trough"] == 1.0 == got["median_exit_lag_completed"]
    assert got["episodes_missed"] == 0
    assert got["switches_per_year"] == round(2 / (40 / 252), 4)
    assert (got["start"], got["end"], got["sessions"]) == ("2021-01-04", "2021-02-26", 40)
    strat = stock_cash_returns(c, ~truth)
    assert got["sharpe"] == round(sharpe(strat), 4)
    assert got["max_drawdown"] == round(max_drawdown(strat), 4)
    assert got["cagr"] == round(cagr(strat), 4)
    assert "sharpe_diff_90ci" not in got and "label_distribution" not in got


def test_score_of_all_bull_labels_is_one_half(episode: tuple[pd.Series, BearMarket]) -> None:
    c, market = episode
    got = score(pd.Series("bull", index=c.index), c, [market], bootstrap=False)
    assert (got["balanced_accuracy"], got["bear_recall"], got["bull_recall"]) == (0.5, 0.0, 1.0)
    assert got["episodes_missed"] == 1 and got["median_onset_lag_from_peak"] is None
    assert got["share_bear"] == 0.0 and got["switches_per_year"] == 0.0
    assert got["label_distribution"] == {"bull": 1.0}
    assert got["recovery"]["sessions"] == 0
    hold = stock_cash_returns(c, pd.Series(True, index=c.index))
    assert got["sharpe"] == round(sharpe(hold), 4)


def test_score_of_a_late_model_by_hand(episode: tuple[pd.Series, BearMarket]) -> None:
    c, market = episode
    labels = pd.Series("bull", index=c.index)
    labels.iloc[PK + 4 : PK + 8] = "bear"
    labels.iloc[PK + 8 : TR + 3] = "crisis"  # bear sessions 14..22, bull again at 23
    labels.iloc[TR + 3 : TR + 6] = "recovery"
    got = score(labels, c, [market], bootstrap=False)
    # Truth: bear 11..20 (10 sessions), bull 30. Called: 14..22, so 7 of 10 bear sessions and
    # 28 of 30 bull ones (21 and 22 are wrong).
    assert got["bear_recall"] == 0.7
    assert got["bull_recall"] == round(28 / 30, 4)
    assert got["balanced_accuracy"] == round((0.7 + 28 / 30) / 2, 4)
    assert got["median_onset_lag_from_peak"] == 4.0
    assert got["median_onset_lag_from_minus10"] == 1.0
    assert got["median_exit_lag_after_trough"] == 3.0
    assert got["label_distribution"] == {
        "bear": 0.1,
        "bull": round(28 / 40, 4),
        "crisis": 0.125,
        "recovery": 0.075,
    }
    assert got["recovery"]["sessions"] == 3
    assert got["episodes"] == [
        {
            "peak": "2021-01-18",
            "trough": "2021-02-01",
            "onset_from_peak": 4,
            "onset_from_minus10": 1,
            "exit_after_trough": 3,
            "exit_censored": False,
        }
    ]


def test_score_with_the_bootstrap_on_a_longer_span() -> None:
    rng = np.random.default_rng(7)
    c = _closes(list(100 * np.cumprod(1 + rng.normal(0.0, 0.02, 400))), start="2001-01-01")
    markets = date_bear_markets(c)
    labels = pd.Series(np.where(c < c.rolling(20, min_periods=1).mean(), "bear", "bull"), c.index)
    got = score(labels, c, markets)
    strat = stock_cash_returns(c, labels != "bear")
    hold = c.pct_change().fillna(0.0)
    lo, hi = bootstrap_sharpe_diff(strat, hold)
    assert got["sharpe_diff_90ci"] == [round(lo, 4), round(hi, 4)]
    assert got["sharpe_minus_buy_hold"] == round(sharpe(strat) - sharpe(hold), 4)
    assert got["sharpe_diff_90ci"][0] <= got["sharpe_diff_90ci"][1]


def test_score_over_a_sub_span_of_the_closes(episode: tuple[pd.Series, BearMarket]) -> None:
    c, market = episode
    labels = expost_bear(pd.DatetimeIndex(c.index), [market]).iloc[5:35]
    got = score(labels, c, [market], bootstrap=False)
    assert (got["start"], got["end"], got["sessions"]) == ("2021-01-11", "2021-02-19", 30)
    assert got["balanced_accuracy"] == 1.0 and got["share_bear"] == round(10 / 30, 4)
    assert got["sharpe"] == round(sharpe(stock_cash_returns(c.iloc[5:35], ~labels)), 4)


# --- what "recovery" means -------------------------------------------------------------------


def test_recovery_on_a_steady_rise_is_always_followed_by_a_higher_index() -> None:
    c = _closes(list(np.linspace(100, 200, 200)))
    labels = pd.Series("bull", index=c.index)
    labels.iloc[::5] = "recovery"  # 40 sessions, 13 of them in the last 63 (no future)
    got = recovery_hit_rates(labels, c)
    assert got == {
        "sessions": 40,
        "higher_after_63": 1.0,
        "base_rate_63": 1.0,
        "higher_after_126": 1.0,
        "base_rate_126": 1.0,
    }
    tail = pd.Series("bull", index=c.index)
    tail.iloc[-63:] = "recovery"  # none has a 63-session future
    got = recovery_hit_rates(tail, c)
    assert got["sessions"] == 63 and got["higher_after_63"] is None
    assert got["base_rate_63"] == 1.0


def test_recovery_hit_rates_by_hand_on_a_rise_then_a_fall() -> None:
    # close t = 100 + t up to t = 99 (199), then 5 lower each session: 49 at t = 129.
    values = [100.0 + t for t in range(100)] + [199.0 - 5 * (t - 99) for t in range(100, 130)]
    c = _closes(values)
    labels = pd.Series("bull", index=c.index)
    rec = [0, 40, 46, 47, 60, 66, 67, 100]
    labels.iloc[rec] = "recovery"
    got = recovery_hit_rates(labels, c)
    # 63 ahead is known for t <= 66 and higher for t <= 46 (close t+63 = 379 - 5t > 100 + t):
    # recovery 0, 40, 46 hit; 47, 60, 66 miss; 67 and 100 have no future.
    assert got["sessions"] == 8
    assert got["higher_after_63"] == 0.5
    assert got["base_rate_63"] == round(47 / 67, 4)
    # 126 ahead is known for t <= 3 only, always lower.
    assert got["higher_after_126"] == 0.0 and got["base_rate_126"] == 0.0


def test_recovery_reads_the_future_from_the_closes_beyond_the_labels() -> None:
    c = _closes(list(np.linspace(100, 200, 200)))
    labels = pd.Series("recovery", index=c.index[:100])
    got = recovery_hit_rates(labels, c)
    assert got["sessions"] == 100 and got["higher_after_63"] == 1.0  # all 100 have a future
    assert got["higher_after_126"] == 1.0  # 74 of them, all higher


# --- properties of random paths --------------------------------------------------------------


def _reference_dating(values: np.ndarray, threshold: float = 0.2) -> list[tuple[int, int, int]]:
    """(peak, trough, minus10) positions by a plain scan: from each high, walk until a close
    reaches it again, keeping the first lowest close."""
    out = []
    i, n = 0, len(values)
    while i < n:
        peak, low, j = i, i, i + 1
        while j < n and values[j] < values[peak]:
            if values[j] < values[low]:
                low = j
            j += 1
        if low != peak and values[low] <= values[peak] * (1 - threshold) * (1 + 1e-12):
            m10 = next(k for k in range(peak + 1, j) if values[k] <= values[peak] * 0.9)
            out.append((peak, low, m10))
        i = j
    return out


returns = st.lists(st.floats(min_value=-0.08, max_value=0.08), min_size=30, max_size=400)


def _path(rets: list[float]) -> pd.Series:
    return _closes(list(100 * np.cumprod(1 + np.asarray(rets))), start="2001-01-01")


@PROPERTY
@given(returns)
def test_dating_properties_on_random_paths(rets: list[float]) -> None:
    close = _path(rets)
    idx = close.index
    markets = date_bear_markets(close)
    got = [(_pos(idx, m.peak), _pos(idx, m.trough), _pos(idx, m.minus10)) for m in markets]
    assert got == _reference_dating(close.to_numpy())
    flags = expost_bear(pd.DatetimeIndex(idx), markets)
    previous_trough: date | None = None
    for m, (pk, tr, m10) in zip(markets, got, strict=True):
        assert m.depth <= -0.2 + 1e-12
        assert pk < m10 <= tr  # the peak strictly before the trough
        assert previous_trough is None or previous_trough < m.peak  # no overlap
        assert not flags.iloc[pk] and flags.iloc[tr]
        assert m.peak_close == close.iloc[: pk + 1].max()  # a running high
        assert m.trough_close == close.iloc[pk:].iloc[: tr - pk + 1].min()
        previous_trough = m.trough
    assert int(flags.sum()) == sum(tr - pk for pk, tr, _ in got)


@PROPERTY
@given(returns, st.floats(min_value=0.0, max_value=50.0))
def test_always_invested_grows_like_the_index_from_the_second_close(
    rets: list[float], cost_bp: float
) -> None:
    close = _path(rets)
    r = stock_cash_returns(close, pd.Series(True, index=close.index), cost_bp=cost_bp)
    # One trade (the buy at close 1), then the index from close 1 to the last close.
    growth = float(np.prod(1 + r.to_numpy()))
    expected = (1 - cost_bp / 1e4) * close.iloc[-1] / close.iloc[1]
    assert growth == pytest.approx(expected, rel=1e-9)
    assert r.iloc[0] == 0.0 and r.iloc[1] == pytest.approx(-cost_bp / 1e4)


@st.composite
def _path_and_signal(draw: st.DrawFn) -> tuple[list[float], list[bool], int]:
    rets = draw(returns)
    signal = draw(st.lists(st.booleans(), min_size=len(rets), max_size=len(rets)))
    flip = draw(st.integers(min_value=0, max_value=len(rets) - 1))
    return rets, signal, flip


@PROPERTY
@given(_path_and_signal(), st.floats(min_value=0.0, max_value=50.0))
def test_the_rule_never_looks_ahead_and_pays_per_switch(
    case: tuple[list[float], list[bool], int], cost_bp: float
) -> None:
    rets, signal, flip = case
    close = _path(rets)
    invested = pd.Series(signal, index=close.index)
    r = stock_cash_returns(close, invested, cost_bp=cost_bp)
    # Changing the decision at close j changes nothing up to session j.
    other = invested.copy()
    other.iloc[flip] = not other.iloc[flip]
    assert (
        stock_cash_returns(close, other, cost_bp=cost_bp)
        .iloc[: flip + 1]
        .equals(r.iloc[: flip + 1])
    )
    # The cost: cost_bp on each session whose held position differs from the previous one
    # (positions: cash, then the decisions of closes 0..n-2).
    free = stock_cash_returns(close, invested, cost_bp=0)
    held = np.array([False, False, *signal[:-1]])
    trades = held[1:] != held[:-1]
    assert (free - r).to_numpy() == pytest.approx(trades * cost_bp / 1e4, abs=1e-15)
    # And without cost, each session earns the index return when the decision two closes
    # before was "invested".
    day = close.pct_change().fillna(0.0).to_numpy()
    earn = np.array([False, False, *signal[:-2]])
    assert free.to_numpy() == pytest.approx(np.where(earn, day, 0.0), abs=1e-15)


@PROPERTY
@given(returns)
def test_buy_and_hold_drawdown_and_cagr_follow_the_closes(rets: list[float]) -> None:
    close = _path(rets)
    hold = close.pct_change().fillna(0.0)
    assert max_drawdown(hold) == pytest.approx(float((close / close.cummax() - 1).min()))
    years = len(close) / 252
    assert cagr(hold) == pytest.approx((close.iloc[-1] / close.iloc[0]) ** (1 / years) - 1)


# --- regressions: each failed before its fix ------------------------------------------------
def test_thresholds_below_the_minus10_point_are_refused_not_crashing() -> None:
    c = pd.Series([100.0, 94.0, 101.0], index=pd.bdate_range("2001-01-01", periods=3))
    with pytest.raises(ValueError, match=r"threshold must be in \[0.10, 1\), got 0.05"):
        date_bear_markets(c, threshold=0.05)


def test_bootstrap_of_a_constant_series_agrees_with_sharpe() -> None:
    a = pd.Series([0.001] * 300)
    b = pd.Series(np.random.default_rng(1).normal(0.0005, 0.01, 300))
    lo, hi = bootstrap_sharpe_diff(a, b)
    point = sharpe(a) - sharpe(b)
    assert sharpe(a) == 0.0 and abs(lo) < 10 and abs(hi) < 10 and lo <= point <= hi


def test_nullable_boolean_flags_pass_through() -> None:
    flags = pd.Series([True, False, None], dtype="boolean")
    assert as_bear(flags).tolist() == [True, False, False]


def test_a_loss_on_the_first_return_is_a_drawdown() -> None:
    assert max_drawdown(pd.Series([-0.5, 0.1])) == pytest.approx(-0.5)
