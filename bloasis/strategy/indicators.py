"""Technical indicators at the as-of row, per symbol, computed by TA-Lib.

RSI(14), MACD(12, 26, 9), ATR(14), Bollinger(20, 2) and ADX(14). TA-Lib is both the reference and
the production path: a numpy version vectorised over symbols (the Wilder/EMA recursions looping
over time on whole symbol vectors) matched it to 1e-12 but was 4.5x slower at 5,000 symbols x 500
sessions (1.07 s vs 0.24 s: TA-Lib's C loop costs ~20 us per symbol for all five), so it was
dropped. The pipeline only needs the candidates' indicators (tens of symbols) anyway.

Inputs are (sessions x symbols) matrices ending at the as-of row. As in TA-Lib's Python wrapper,
leading NaNs (a symbol listed later) are skipped per symbol; an indicator is NaN when a symbol has
too few sessions for it or a gap (NaN) inside its history (TA-Lib would return garbage there).

Closes-only data (the embedded dataset has no OHLC) is passed with high = low = close: the true
range is then |close - previous close|, so ATR is the Wilder average absolute daily change, and
ADX measures the directional balance of close-to-close moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
ATR_PERIOD = 14
BB_PERIOD, BB_DEV = 20, 2.0
ADX_PERIOD = 14
# Sessions of history that make every indicator independent of where the data starts: the
# slowest memory, Wilder's 13/14 per session, decays below 1e-16 in 500 sessions.
HISTORY = 500

INDICATOR_NAMES: tuple[str, ...] = (
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "atr",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "adx",
)


@dataclass(frozen=True)
class IndicatorValues:
    """One value per symbol (the input's column order) at the last row; NaN where unknown."""

    rsi: np.ndarray
    macd: np.ndarray
    macd_signal: np.ndarray
    macd_hist: np.ndarray
    atr: np.ndarray
    bb_upper: np.ndarray
    bb_middle: np.ndarray
    bb_lower: np.ndarray
    adx: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in INDICATOR_NAMES}


def compute_indicators(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> IndicatorValues:
    """Indicators at the last row of (sessions x symbols) matrices (or 1-D for one symbol)."""
    import talib  # C library: loaded only by the code that needs it

    h, lo, c = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    if c.ndim == 1:
        h, lo, c = h[:, None], lo[:, None], c[:, None]
    if not h.shape == lo.shape == c.shape:
        raise ValueError(f"high/low/close shapes differ: {h.shape}, {lo.shape}, {c.shape}")
    out = np.full((len(INDICATOR_NAMES), c.shape[1]), np.nan)
    ok = ~(np.isnan(h) | np.isnan(lo) | np.isnan(c))
    first = np.where(ok.any(axis=0), ok.argmax(axis=0), c.shape[0])
    # Usable: the valid rows are one block that reaches the last row.
    usable = ok.sum(axis=0) == c.shape[0] - first
    for j in np.flatnonzero(usable & (first < c.shape[0])):
        # talib wants contiguous float64 vectors.
        hj, lj, cj = (np.ascontiguousarray(a[first[j] :, j]) for a in (h, lo, c))
        macd, sig, hist = talib.MACD(cj, MACD_FAST, MACD_SLOW, MACD_SIGNAL)
        up, mid, dn = talib.BBANDS(cj, BB_PERIOD, BB_DEV, BB_DEV, talib.MA_Type.SMA)
        series = (
            talib.RSI(cj, RSI_PERIOD),
            macd,
            sig,
            hist,
            talib.ATR(hj, lj, cj, ATR_PERIOD),
            up,
            mid,
            dn,
            talib.ADX(hj, lj, cj, ADX_PERIOD),
        )
        out[:, j] = [s[-1] for s in series]
    return IndicatorValues(*out)
