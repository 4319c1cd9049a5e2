"""Factors (vectorised, checked against straightforward pandas), weights and the final score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bloasis.marketdata.synthetic import generate
from bloasis.regime.types import REGIMES
from bloasis.strategy.factors import compute_factors, percentile_scores
from bloasis.strategy.profiles import (
    BASE_WEIGHTS,
    PROFILE_PARAMS,
    REGIME_MULTIPLIERS,
    combine,
    describe_factors,
    factor_weights,
)
from bloasis.strategy.types import FACTORS, PROFILES


@pytest.fixture(scope="module")
def prices() -> tuple[pd.DataFrame, pd.DataFrame]:
    md = generate(30, 2, seed=5).data
    assert md.ohlcv is not None
    return md.closes, md.ohlcv["close"] * md.ohlcv["volume"]


def test_raw_factors_match_pandas(prices: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    closes, dv = prices
    syms = tuple(closes.columns)
    t = compute_factors(closes.to_numpy(), syms, dollar_volume=dv.to_numpy())
    mom = closes.shift(21).iloc[-1] / closes.shift(252).iloc[-1] - 1
    sma50 = closes.rolling(50).mean().iloc[-1]
    sma200 = closes.rolling(200).mean().iloc[-1]
    trend = 0.5 * ((closes.iloc[-1] / sma50 - 1) + (closes.iloc[-1] / sma200 - 1))
    vol = closes.apply(np.log).diff().rolling(60).std().iloc[-1] * np.sqrt(252)
    liq = dv.iloc[-60:].mean()  # every symbol traded the whole window here
    np.testing.assert_allclose(t.raw["momentum"], mom.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(t.raw["trend"], trend.to_numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(t.vol, vol.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(t.raw["volatility"], -vol.to_numpy(), rtol=1e-10)
    listed_60 = closes.iloc[-60:].notna().all()
    np.testing.assert_allclose(
        t.raw["liquidity"][listed_60.to_numpy()], liq[listed_60].to_numpy(), rtol=1e-12
    )
    assert set(t.raw) == {"momentum", "trend", "volatility", "liquidity"}  # no sentiment
    for s in t.scores.values():
        ok = ~np.isnan(s)
        assert ok.any() and s[ok].min() == 0.0 and s[ok].max() == 100.0


def test_missing_history_is_nan_and_renormalised(prices: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    closes, _ = prices
    c = closes.to_numpy().copy()
    c[:-100, 0] = np.nan  # listed 100 sessions ago
    c[:-30, 1] = np.nan  # listed 30 sessions ago
    t = compute_factors(c, tuple(closes.columns))
    assert np.isnan(t.raw["momentum"][0]) and np.isnan(t.raw["trend"][0])
    assert not np.isnan(t.raw["volatility"][0]) and not np.isnan(t.gap50[0])
    assert np.isnan(t.raw["volatility"][1]) and np.isnan(t.gap50[1])
    w = factor_weights("aggressive", "bull", t.scores)
    final = combine(t.scores, w)
    # Only low volatility is known for symbol 0: its final score is that factor's score.
    assert final[0] == pytest.approx(t.scores["volatility"][0])
    assert np.isnan(final[1])  # nothing known
    full = ~np.isnan(t.raw["momentum"])
    manual = np.sum([w[f] * t.scores[f] for f in w], axis=0)
    np.testing.assert_allclose(final[full], manual[full])
    assert np.nanmin(final) >= 0 and np.nanmax(final) <= 100


def test_liquidity_absent_without_volume_and_fundamentals_when_supplied(
    prices: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    closes, _ = prices
    syms = tuple(closes.columns)
    assert "liquidity" not in compute_factors(closes.to_numpy(), syms).raw
    fundamentals = pd.DataFrame(
        {"value": np.arange(len(syms), dtype=float), "quality": np.nan}, index=list(syms)
    ).iloc[:-3]  # three symbols without fundamentals
    t = compute_factors(closes.to_numpy(), syms, fundamentals=fundamentals)
    assert "value" in t.raw and "quality" not in t.raw  # all-NaN quality: absent
    assert t.scores["value"][-4] == 100.0 and np.isnan(t.scores["value"][-1])
    w = factor_weights("conservative", "crisis", t.scores)
    assert set(w) == {"momentum", "value", "volatility", "trend"}


def test_percentile_scores() -> None:
    out = percentile_scores(np.array([3.0, np.nan, 1.0, 3.0, 2.0]))
    np.testing.assert_allclose(out, [83.333333, np.nan, 0.0, 83.333333, 33.333333], rtol=1e-6)
    assert percentile_scores(np.array([np.nan, 7.0]))[1] == 50.0
    assert np.isnan(percentile_scores(np.array([np.nan, np.nan]))).all()


def test_weight_tables() -> None:
    assert set(BASE_WEIGHTS) == set(PROFILES) == set(PROFILE_PARAMS)
    assert set(REGIME_MULTIPLIERS) == set(REGIMES)
    for table in [*BASE_WEIGHTS.values(), *REGIME_MULTIPLIERS.values()]:
        assert set(table) == set(FACTORS)
    # SPEC §4 weights (trend added on top) and multipliers.
    assert BASE_WEIGHTS["conservative"]["quality"] == 0.30
    assert BASE_WEIGHTS["aggressive"]["sentiment"] == 0.30
    assert sum(v for f, v in BASE_WEIGHTS["moderate"].items() if f != "trend") == pytest.approx(1)
    crisis, recovery = REGIME_MULTIPLIERS["crisis"], REGIME_MULTIPLIERS["recovery"]
    assert (crisis["momentum"], crisis["volatility"], crisis["quality"]) == (0.3, 2.0, 1.8)
    assert (recovery["momentum"], recovery["volatility"]) == (1.5, 0.7)
    assert [PROFILE_PARAMS[p].target_vol for p in PROFILES] == [0.10, 0.15, 0.25]
    assert [PROFILE_PARAMS[p].position_cap for p in PROFILES] == [0.05, 0.10, 0.15]


def test_factor_weights_renormalise_over_present_factors() -> None:
    present = ["momentum", "volatility", "trend"]
    for p in PROFILES:
        for r in REGIMES:
            w = factor_weights(p, r, present)
            assert list(w) == present and sum(w.values()) == pytest.approx(1.0)
    w = factor_weights("conservative", "crisis", present)
    assert w["momentum"] / w["volatility"] == pytest.approx((0.10 * 0.3) / (0.20 * 2.0))
    # Crisis shifts weight from momentum to low volatility; recovery the other way.
    bull = factor_weights("moderate", "bull", present)
    assert factor_weights("moderate", "crisis", present)["volatility"] > bull["volatility"]
    assert factor_weights("moderate", "recovery", present)["momentum"] > bull["momentum"]
    with pytest.raises(ValueError, match="risk profile"):
        factor_weights("yolo", "bull", present)
    with pytest.raises(ValueError, match="regime"):
        factor_weights("moderate", "mania", present)
    with pytest.raises(ValueError, match="no factor"):
        factor_weights("moderate", "bull", [])


def test_describe_factors_names_the_top_contributors() -> None:
    w = {"momentum": 0.5, "volatility": 0.3, "trend": 0.2}
    text = describe_factors({"momentum": 10.0, "volatility": 90.0, "trend": 80.0}, w)
    assert text == "low volatility 90, trend 80, 12-1 momentum 10"
