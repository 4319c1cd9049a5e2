"""Indicators: the per-symbol TA-Lib path, its NaN handling, and closes-only semantics."""

from __future__ import annotations

import numpy as np
import pytest
import talib

from bloasis.marketdata import EmbeddedSource
from bloasis.marketdata.synthetic import generate
from bloasis.strategy.indicators import INDICATOR_NAMES, compute_indicators


def _direct(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> dict[str, float]:
    macd, sig, hist = talib.MACD(c, 12, 26, 9)
    up, mid, dn = talib.BBANDS(c, 20, 2.0, 2.0, talib.MA_Type.SMA)
    return {
        "rsi": talib.RSI(c, 14)[-1],
        "macd": macd[-1],
        "macd_signal": sig[-1],
        "macd_hist": hist[-1],
        "atr": talib.ATR(h, lo, c, 14)[-1],
        "bb_upper": up[-1],
        "bb_middle": mid[-1],
        "bb_lower": dn[-1],
        "adx": talib.ADX(h, lo, c, 14)[-1],
    }


def test_matches_talib_per_symbol_with_late_listings() -> None:
    md = generate(40, 2, seed=9).data
    assert md.ohlcv is not None
    h, lo, c = (md.ohlcv[k].to_numpy() for k in ("high", "low", "close"))
    got = compute_indicators(h, lo, c).as_dict()
    late = 0
    for j in range(c.shape[1]):
        ok = ~np.isnan(c[:, j])
        late += int(not ok[0])
        want = _direct(*(np.ascontiguousarray(a[ok, j]) for a in (h, lo, c)))
        for name in INDICATOR_NAMES:
            assert got[name][j] == pytest.approx(want[name], rel=1e-12, nan_ok=True)
    assert late > 0  # the universe has symbols listed after the first session


def test_values_are_sane_on_real_closes() -> None:
    c = EmbeddedSource().load().as_of("2008-10-15").closes.iloc[-500:].to_numpy()
    v = compute_indicators(c, c, c)
    assert ((v.rsi > 0) & (v.rsi < 100)).all()
    assert ((v.adx >= 0) & (v.adx <= 100)).all()
    assert (v.bb_lower < v.bb_middle).all() and (v.bb_middle < v.bb_upper).all()
    np.testing.assert_allclose(v.macd_hist, v.macd - v.macd_signal, atol=1e-12)
    assert (v.atr > 0).all()


def test_closes_only_atr_is_wilder_average_of_absolute_changes() -> None:
    rng = np.random.default_rng(1)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    atr = compute_indicators(c, c, c).atr[0]
    moves = np.abs(np.diff(c))
    avg = moves[:14].mean()
    for m in moves[14:]:
        avg = (avg * 13 + m) / 14
    assert atr == pytest.approx(avg, rel=1e-12)


def test_short_or_gapped_history_is_nan() -> None:
    rng = np.random.default_rng(2)
    c = 50 + np.cumsum(rng.normal(0, 1, (60, 3)), axis=0)
    c[:30, 0] = np.nan  # 30 sessions: RSI/ATR/BB known, MACD (34) and ADX (28 + 1) partly
    c[40, 1] = np.nan  # a gap inside the history
    c[-1, 2] = np.nan  # not trading on the as-of row
    v = compute_indicators(c, c, c)
    assert not np.isnan(v.rsi[0]) and not np.isnan(v.bb_middle[0])
    assert np.isnan(v.macd[0])
    for name in INDICATOR_NAMES:
        assert np.isnan(getattr(v, name)[1]) and np.isnan(getattr(v, name)[2])
    with pytest.raises(ValueError, match="shapes"):
        compute_indicators(c, c[:, :2], c)
