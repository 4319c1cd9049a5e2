"""The statistical jump model peer (bloasis.regime.peers) on the embedded real data: point in
time (labels on the full history equal labels on the closes cut at a session), deterministic,
the bear state is the low-return one, and bad input fails loudly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bloasis.pipeline import load_market_data
from bloasis.regime.peers import (
    JumpModelConfig,
    _dp_two_states,
    _jumpmodels,
    jump_model_bear,
    jump_model_features,
)

HALFLIVES = JumpModelConfig().halflives


@pytest.fixture(scope="session")
def close() -> pd.Series:
    """S&P 500 closes 1990-01-02 .. 2022-12-28 (8313 sessions)."""
    series: pd.Series = load_market_data(None, "embedded").market["index_close"]
    return series


@pytest.fixture(scope="session")
def full(close: pd.Series) -> pd.DataFrame:
    """The walk-forward on the full history, computed once (~5 s)."""
    return jump_model_bear(close)


def _cut(close: pd.Series, d: str) -> pd.Series:
    return close.loc[:d]


# -- point in time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "d",
    [
        "1993-01-04",  # the first refit date: the first labelled session
        "2008-01-02",  # a refit date
        "2008-10-10",  # mid-year, in the crash
        "2020-03-16",  # mid-year, the COVID low week
    ],
)
@pytest.mark.slow
def test_labels_on_cut_data_equal_full_history(
    close: pd.Series, full: pd.DataFrame, d: str
) -> None:
    cut = jump_model_bear(_cut(close, d))
    assert cut.index[-1] == pd.Timestamp(d)
    # The session D itself, and every session before it, labelled identically.
    at = pd.Timestamp(d)
    assert cut.loc[at].to_dict() == full.loc[at].to_dict()
    pd.testing.assert_frame_equal(cut, full.loc[:d])


def test_refit_and_mid_year_dates_are_what_the_cuts_claim(full: pd.DataFrame) -> None:
    assert full.loc["2008-01-02", "fit_date"] == pd.Timestamp("2008-01-02")
    assert full.loc["2008-10-10", "fit_date"] == pd.Timestamp("2008-01-02")
    assert full.loc["2020-03-16", "fit_date"] == pd.Timestamp("2020-01-02")


def test_rolling_window_is_point_in_time_too(close: pd.Series) -> None:
    cfg = JumpModelConfig(train_window_sessions=756)
    span = close.loc[:"2003-12-31"]
    whole = jump_model_bear(span, cfg)
    for d in ("2002-01-02", "2002-07-23"):
        pd.testing.assert_frame_equal(jump_model_bear(_cut(span, d), cfg), whole.loc[:d])


def test_features_are_causal(close: pd.Series) -> None:
    f_full = jump_model_features(close, HALFLIVES)
    for d in ("1990-03-01", "2008-10-10"):
        pd.testing.assert_frame_equal(
            jump_model_features(_cut(close, d), HALFLIVES), f_full.loc[:d]
        )


# -- deterministic ---------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_are_identical(close: pd.Series, full: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(jump_model_bear(close), full)


# -- outputs ---------------------------------------------------------------------------------


def test_output_shape_and_refit_schedule(close: pd.Series, full: pd.DataFrame) -> None:
    assert list(full.columns) == ["bear", "bear_prob", "fit_date"]
    assert full["bear"].dtype == bool
    assert full["bear_prob"].dtype == np.float64
    assert full["bear_prob"].between(0, 1).all()
    # The discrete model's online probabilities are the hard assignment.
    assert (full["bear_prob"] == full["bear"].astype(float)).all()
    # Three years of returns (756) before the first fit: the first refit is the first session
    # of 1993; then one refit per calendar year, on its first session, labelling up to the
    # next one; every session from the first refit on is labelled.
    assert full.index[0] == pd.Timestamp("1993-01-04")
    assert full.index.equals(close.loc["1993-01-04":].index)
    fits = pd.DatetimeIndex(full["fit_date"].unique())
    sessions = pd.DatetimeIndex(close.index)
    first_sessions = pd.Series(sessions, index=sessions).groupby(sessions.year).min()
    assert list(fits) == list(first_sessions.loc[1993:])
    assert (full["fit_date"].dt.year == pd.DatetimeIndex(full.index).year).all()
    assert full["bear"].any() and not full["bear"].all()


def test_features_columns_and_leading_rows(close: pd.Series) -> None:
    f = jump_model_features(close, (5, 21))
    assert list(f.columns) == [
        "ret_5",
        "dd_log_5",
        "sortino_5",
        "ret_21",
        "dd_log_21",
        "sortino_21",
    ]
    assert f.index[0] == close.index[1]  # the first return
    r = close.pct_change().iloc[1:]
    dd = np.sqrt((r.clip(upper=0) ** 2).ewm(halflife=21).mean())
    row = f.loc["2008-10-10"]
    assert row["ret_21"] == pytest.approx(r.ewm(halflife=21).mean().loc["2008-10-10"])
    assert row["dd_log_21"] == pytest.approx(np.log(dd.loc["2008-10-10"]))
    assert row["sortino_21"] == pytest.approx(row["ret_21"] / dd.loc["2008-10-10"])
    # Undefined (NaN, never +-inf) only until the first negative return.
    first_down = r.index[(r < 0).to_numpy()][0]
    assert f.loc[: first_down - pd.Timedelta(days=1)].isna().any(axis=1).all()
    assert f.loc[first_down:].notna().all().all()
    assert np.isfinite(f.loc[first_down:].to_numpy()).all()


def test_bear_state_is_the_low_return_state() -> None:
    """Synthetic closes alternating calm up-trends and volatile 60-session sell-offs: after three
    years of training, the sell-offs are labelled bear far more often than the calm stretches (an
    inverted state would show the opposite). Online labels lag a regime change by days to
    weeks (the slowest feature has a 60-session halflife), hence the loose bounds."""
    rng = np.random.default_rng(7)
    sell_off = np.zeros(252 * 5, dtype=bool)
    for start in range(150, sell_off.size, 250):
        sell_off[start : start + 60] = True
    r = np.where(
        sell_off,
        rng.normal(-0.004, 0.025, sell_off.size),
        rng.normal(0.0008, 0.007, sell_off.size),
    )
    idx = pd.bdate_range("2001-01-01", periods=r.size + 1)
    close = pd.Series(100 * np.cumprod(np.r_[1.0, 1 + r]), index=idx)
    out = jump_model_bear(close)
    truth = pd.Series(sell_off, index=idx[1:]).reindex(out.index)
    ret = pd.Series(r, index=idx[1:]).reindex(out.index)
    in_sell_off, in_calm = out["bear"][truth].mean(), out["bear"][~truth].mean()
    assert in_sell_off > 0.4 and in_calm < 0.2 and in_sell_off > 3 * in_calm
    assert ret[out["bear"]].mean() < 0 < ret[~out["bear"]].mean()


def test_numpy_error_state_is_left_alone(close: pd.Series) -> None:
    """Importing jumpmodels sets numpy's global error state; the module undoes it."""
    before = np.geterr()
    _jumpmodels()
    jump_model_bear(close.loc[:"1994-03-01"])
    assert np.geterr() == before


def test_fast_dp_matches_the_package_bit_for_bit() -> None:
    jump, _ = _jumpmodels()
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        loss = rng.exponential(size=(n, 2)) * rng.choice([0.1, 1.0, 50.0])
        if trial % 3 == 0:
            loss = np.round(loss, 1)  # ties
        if trial % 7 == 0:
            loss[rng.random(n) < 0.2, 1] = np.nan  # unreachable rows
        if trial % 11 == 0:
            loss[:, 1] = np.nan  # an empty state
        penalty = jump.jump_penalty_to_mx(float(rng.choice([0.0, 0.5, 5.0, 50.0])), 2)
        with np.errstate(invalid="ignore"):
            labels, value = jump.dp(loss, penalty)
            fast_labels, fast_value = _dp_two_states(loss, penalty)
            values = jump.dp(loss, penalty, return_value_mx=True)
            fast_values = _dp_two_states(loss, penalty, return_value_mx=True)
        assert isinstance(fast_values, np.ndarray)
        assert np.array_equal(labels, fast_labels)
        assert value == fast_value
        assert np.array_equal(values, fast_values)


# -- bad input -------------------------------------------------------------------------------


def test_too_short_history_names_the_number_of_sessions(close: pd.Series) -> None:
    with pytest.raises(
        ValueError, match=r"at least 756 returns \(757 sessions\).*got 500 sessions"
    ):
        jump_model_bear(close.iloc[:500])
    with pytest.raises(ValueError, match="got 756 sessions"):
        jump_model_bear(close.iloc[:756])


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_close_raises(close: pd.Series, bad: float) -> None:
    c = close.iloc[:1000].copy()
    c.iloc[400] = bad
    with pytest.raises(ValueError, match="closes must be positive"):
        jump_model_bear(c)
    with pytest.raises(ValueError, match="closes must be positive"):
        jump_model_features(c, HALFLIVES)


def test_missing_close_and_bad_index_raise(close: pd.Series) -> None:
    c = close.iloc[:1000].copy()
    c.iloc[10] = np.nan
    with pytest.raises(ValueError, match="missing or infinite"):
        jump_model_bear(c)
    with pytest.raises(ValueError, match="strictly increasing"):
        jump_model_bear(close.iloc[:1000].iloc[::-1])
    with pytest.raises(ValueError, match="DatetimeIndex"):
        jump_model_bear(close.iloc[:1000].reset_index(drop=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"jump_penalty": -1.0}, "jump_penalty"),
        ({"halflives": ()}, "halflives"),
        ({"halflives": (0, 5)}, "halflives"),
        ({"min_train_sessions": 1}, "min_train_sessions"),
        ({"train_window_sessions": 100}, "train_window_sessions"),
        ({"refit": "weekly"}, "refit"),
    ],
)
def test_bad_config_raises(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JumpModelConfig(**kwargs)  # type: ignore[arg-type]


def test_the_package_dp_switch_gives_the_same_labels(close: pd.Series) -> None:
    """`fast_dp=False` runs the package untouched; the labels are the same as with the swap."""
    span = close.loc[:"1996-12-31"]
    fast = jump_model_bear(span, JumpModelConfig())
    slow = jump_model_bear(span, JumpModelConfig(fast_dp=False))
    pd.testing.assert_frame_equal(fast, slow)
    assert fast["fit_date"].nunique() == 4  # 1993..1996: four fits compared
