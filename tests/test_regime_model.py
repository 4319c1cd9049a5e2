"""The rule classifier on the embedded real data: known episodes, outputs, point in time."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bloasis.marketdata import MarketData
from bloasis.marketdata.sources import EmbeddedSource
from bloasis.regime.model import classify_as_of, classify_frame
from bloasis.regime.types import REGIMES

RUN = uuid.UUID(int=7)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


@pytest.fixture(scope="module")
def frame(md: MarketData) -> pd.DataFrame:
    return classify_frame(md.market)


def _as_of(md: MarketData, d: date) -> str:
    return classify_as_of(
        md.market, d, trigger="manual", run_id=RUN, model_version="t", computed_at=NOW
    ).regime


def test_known_episodes(frame: pd.DataFrame) -> None:
    assert frame.loc["2008-10-10", "regime"] == "crisis"
    assert frame.loc["2008-10-10", "risk_level"] == "high"
    assert frame.loc["2020-03-16", "regime"] == "crisis"
    assert frame.loc["2020-03-16", "data_trigger"] == "circuit_breaker"  # -12% that day
    calm_2017 = frame.loc["2017", "regime"]
    assert (calm_2017 == "bull").mean() > 0.8
    assert frame.loc["2017-06-30", "risk_level"] == "low"


def test_every_label_reachable_and_outputs_in_range(frame: pd.DataFrame) -> None:
    assert set(frame["regime"]) == set(REGIMES)
    assert frame["confidence"].between(0, 1).all()
    assert set(frame["risk_level"]) <= {"low", "medium", "high"}
    # risk level follows SPEC: high for crisis or vol > 30, medium for bear or vol > 20
    high = (frame["regime"] == "crisis") | (frame["vix"] > 30)
    assert (frame.loc[high, "risk_level"] == "high").all()
    med = ~high & ((frame["regime"] == "bear") | (frame["vix"] > 20))
    assert (frame.loc[med, "risk_level"] == "medium").all()


@pytest.mark.slow
def test_result_fields_and_reasoning(md: MarketData) -> None:
    r = classify_as_of(
        md.market, date(2008, 10, 10), trigger="manual", run_id=RUN, model_version="t",
        computed_at=NOW,
    )  # fmt: skip
    assert r.regime == "crisis" and r.indicators["vix_is_proxy"] is True
    assert r.indicators["sp500_trend"] == "down"
    assert r.indicators["yield_curve_state"] in {"normal", "flat", "inverted"}
    assert r.indicators["credit_spread_state"] == "wide"
    assert "realised-volatility VIX proxy" in r.reasoning
    assert f"{r.indicators['sp500_close']:,.2f}" in r.reasoning
    # Deterministic: same input, same sentence.
    again = classify_as_of(
        md.market, date(2008, 10, 10), trigger="manual", run_id=RUN, model_version="t",
        computed_at=NOW,
    )  # fmt: skip
    assert again == r
    late = classify_as_of(
        md.market, date(2022, 12, 28), trigger="manual", run_id=RUN, model_version="t",
        computed_at=NOW,
    )  # fmt: skip
    assert late.indicators["yield_curve"] is None and "yield curve unavailable" in late.reasoning


def test_not_a_session_is_an_error(md: MarketData) -> None:
    with pytest.raises(ValueError, match="not a session"):
        classify_as_of(
            md.market, date(2022, 12, 25), trigger="manual", run_id=RUN, model_version="t",
            computed_at=NOW,
        )  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(i=st.integers(min_value=250, max_value=8312))
@pytest.mark.slow
def test_point_in_time_full_history_equals_cut(md: MarketData, frame: pd.DataFrame, i: int) -> None:
    """The full-history label for D equals classifying only data up to D, and appending later
    data (here: the rest of history) never changes an earlier result."""
    d = md.market.index[i]
    cut = classify_frame(md.as_of(d).market)
    assert cut.index[-1] == d
    pd.testing.assert_frame_equal(cut, frame.loc[:d])


@pytest.mark.slow
def test_future_shock_does_not_leak(md: MarketData) -> None:
    """Corrupting every row after D (a crash to 1% of the price) leaves D's result unchanged."""
    d = pd.Timestamp("2007-06-29")
    market = md.market.copy()
    after = market.index > d
    market.loc[after, "index_close"] = market.loc[after, "index_close"] * 0.01
    market.loc[after, "vix"] = 90.0
    a = classify_frame(md.market).loc[:d]
    b = classify_frame(market).loc[:d]
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(
        classify_frame(md.market).loc[d:, "regime"], classify_frame(market).loc[d:, "regime"]
    )


def test_hmm_survives_returns_far_outside_both_states() -> None:
    """A crash far beyond either state's scale used to underflow both densities to 0 and turn
    the EM into NaN; the filtered probability must stay a probability."""
    from bloasis.regime.hmm import HmmConfig, filtered_high_vol

    rng = np.random.default_rng(3)
    r = rng.normal(0.0004, 0.01, 800)
    r[700] = -4.6  # a 99% fall in one session
    p = filtered_high_vol(r, HmmConfig(min_history=300, refit_every=100))
    fitted = p[299:]
    assert np.isfinite(fitted).all() and ((fitted >= 0) & (fitted <= 1)).all()
    assert p[700] > 0.99


@pytest.mark.parametrize("d", [date(1990, 6, 21), date(1990, 6, 22), date(1990, 6, 28)])
def test_first_classifiable_sessions(md: MarketData, d: date) -> None:
    """The first sessions with a 200-day average (fewer than 5 classified rows before them)
    used to crash the volatility-spike comparison."""
    r = classify_as_of(
        md.market, d, trigger="manual", run_id=RUN, model_version="t", computed_at=NOW
    )
    assert r.as_of == d and r.trigger == "manual"
    with pytest.raises(ValueError, match="fewer than"):
        classify_as_of(
            md.market, date(1990, 6, 20), trigger="manual", run_id=RUN, model_version="t",
            computed_at=NOW,
        )  # fmt: skip
