"""The comparison for `pipeline_vs_per_symbol`: the strategy tier's per-symbol numbers computed
the way a per-symbol service computes them, one symbol at a time with pandas + TA-Lib, against
the product's batch code over the whole universe (`bloasis.strategy.engine.price_inputs`,
`factors.compute_factors`, `indicators.compute_indicators`, the sector momentum returns).

Per symbol: a DataFrame of its last `WINDOW` bars, high/low adjusted like the engine does, the
3- and 6-month returns (sector strength), the raw factors (12-1 momentum, SMA50/SMA200 gaps,
60-day realised volatility, 60-day dollar volume) with pandas rolling windows, and RSI, MACD,
ATR, Bollinger and ADX from TA-Lib on the symbol's Series. Then the cross-sectional step
(percentile scores with pandas `rank`). `check_same` asserts both give the same matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bloasis.marketdata.types import MarketData
from bloasis.strategy import indicators as ind
from bloasis.strategy.engine import WINDOW, price_inputs
from bloasis.strategy.factors import (
    LIQUIDITY_MIN_OBS,
    LIQUIDITY_WINDOW,
    MOMENTUM_LOOKBACK,
    MOMENTUM_SKIP,
    SMA_LONG,
    SMA_SHORT,
    TRADING_DAYS,
    VOL_WINDOW,
    compute_factors,
)
from bloasis.strategy.sectors import SectorParams, _trailing_return

RAW = ("momentum", "trend", "volatility", "liquidity")
EXTRA = ("vol", "gap50", "gap200", "ret_short", "ret_long")


@dataclass(frozen=True)
class Numbers:
    """Per symbol (columns in `symbols` order): raw factors, their 0-100 scores, the sizing
    inputs and sector momentum returns, and the nine indicators."""

    symbols: list[str]
    raw: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]
    indicators: dict[str, np.ndarray]

    def matrix(self) -> np.ndarray:
        rows = [
            *(self.raw[k] for k in RAW if k in self.raw),
            *(self.scores[k] for k in RAW if k in self.scores),
            *(self.extra[k] for k in EXTRA),
            *(self.indicators[k] for k in ind.INDICATOR_NAMES),
        ]
        return np.vstack(rows)


def product(md: MarketData) -> Numbers:
    """The product's code over every symbol trading on the last session, in batch."""
    p = SectorParams()
    px = price_inputs(md, md.symbols)
    table = compute_factors(px.closes, tuple(px.symbols), dollar_volume=px.dollar_volume)
    values = ind.compute_indicators(px.high, px.low, px.closes)
    return Numbers(
        symbols=px.symbols,
        raw=table.raw,
        scores=table.scores,
        extra={
            "vol": table.vol,
            "gap50": table.gap50,
            "gap200": table.gap200,
            "ret_short": _trailing_return(px.closes[-(p.long_window + 1) :], p.short_window),
            "ret_long": _trailing_return(px.closes[-(p.long_window + 1) :], p.long_window),
        },
        indicators=values.as_dict(),
    )


def _one_symbol(df: pd.DataFrame, p: SectorParams) -> dict[str, float]:
    """Everything per symbol from its own DataFrame (columns adj_close, and open high low close
    volume when the data has them)."""
    import talib

    close = df["adj_close"]
    raw_close = df["close"].fillna(close) if "close" in df else close
    adj = close / raw_close

    def adjusted(name: str) -> pd.Series:
        return (df[name] * adj).fillna(close) if name in df else close

    high, low = adjusted("high"), adjusted("low")
    out: dict[str, float] = {}
    n = len(close)
    out["momentum"] = (
        close.iloc[-1 - MOMENTUM_SKIP] / close.iloc[-1 - MOMENTUM_LOOKBACK] - 1.0
        if n > MOMENTUM_LOOKBACK
        else math.nan
    )
    gap50 = close.iloc[-1] / close.rolling(SMA_SHORT).mean().iloc[-1] - 1.0
    gap200 = close.iloc[-1] / close.rolling(SMA_LONG).mean().iloc[-1] - 1.0
    vol = np.log(close).diff().rolling(VOL_WINDOW).std().iloc[-1] * math.sqrt(TRADING_DAYS)
    out |= {"trend": 0.5 * (gap50 + gap200), "volatility": -vol}
    out |= {"vol": vol, "gap50": gap50, "gap200": gap200}
    if "volume" in df:
        dv = (raw_close * df["volume"]).iloc[-LIQUIDITY_WINDOW:]
        out["liquidity"] = dv.mean() if dv.count() >= LIQUIDITY_MIN_OBS else math.nan
    for key, w in (("ret_short", p.short_window), ("ret_long", p.long_window)):
        out[key] = close.iloc[-1] / close.iloc[-1 - w] - 1.0 if n > w else math.nan
    # TA-Lib on the symbol's history from its first bar (leading NaNs: not listed yet); a gap
    # inside it makes every indicator unknown, as in the product.
    ok = close.notna() & high.notna() & low.notna()
    first = int(ok.to_numpy().argmax()) if ok.any() else n
    if first < n and bool(ok.iloc[first:].all()):
        h, lo, c = high.iloc[first:], low.iloc[first:], close.iloc[first:]
        macd, sig, hist = talib.MACD(c, ind.MACD_FAST, ind.MACD_SLOW, ind.MACD_SIGNAL)
        up, mid, dn = talib.BBANDS(c, ind.BB_PERIOD, ind.BB_DEV, ind.BB_DEV, talib.MA_Type.SMA)
        series = {
            "rsi": talib.RSI(c, ind.RSI_PERIOD),
            "macd": macd,
            "macd_signal": sig,
            "macd_hist": hist,
            "atr": talib.ATR(h, lo, c, ind.ATR_PERIOD),
            "bb_upper": up,
            "bb_middle": mid,
            "bb_lower": dn,
            "adx": talib.ADX(h, lo, c, ind.ADX_PERIOD),
        }
        out |= {k: float(v.iloc[-1]) for k, v in series.items()}
    else:
        out |= dict.fromkeys(ind.INDICATOR_NAMES, math.nan)
    return out


def reference(md: MarketData, symbols: list[str] | None = None) -> Numbers:
    """The same numbers, one symbol at a time (`symbols`: a subset, for timing on a sample)."""
    p = SectorParams()
    wanted = md.symbols if symbols is None else symbols
    tail = md.closes.iloc[-WINDOW:]
    fields = {} if md.ohlcv is None else {k: v.iloc[-WINDOW:] for k, v in md.ohlcv.items()}
    rows: dict[str, dict[str, float]] = {}
    for sym in wanted:
        df = pd.DataFrame({"adj_close": tail[sym], **{k: v[sym] for k, v in fields.items()}})
        if math.isnan(df["adj_close"].iloc[-1]):
            continue  # not trading on the as-of session
        rows[sym] = _one_symbol(df, p)
    table = pd.DataFrame.from_dict(rows, orient="index")
    present = [k for k in RAW if k in table and table[k].notna().any()]
    scores = {}
    for k in present:
        r = table[k].rank(method="average")
        n = int(table[k].notna().sum())
        scores[k] = ((r - 1.0) / (n - 1) * 100.0 if n > 1 else r * 0 + 50.0).to_numpy()
    return Numbers(
        symbols=list(table.index),
        raw={k: table[k].to_numpy() for k in present},
        scores=scores,
        extra={k: table[k].to_numpy() for k in EXTRA},
        indicators={k: table[k].to_numpy() for k in ind.INDICATOR_NAMES},
    )


def check_same(a: Numbers, b: Numbers, *, rtol: float = 1e-9, atol: float = 1e-9) -> int:
    """Raise AssertionError unless `a` and `b` hold the same numbers for the same symbols (NaN
    where the other has NaN); returns how many values were compared."""
    if a.symbols != b.symbols:
        raise AssertionError(f"symbols differ: {a.symbols[:5]}... vs {b.symbols[:5]}...")
    if set(a.raw) != set(b.raw):
        raise AssertionError(f"factors present differ: {sorted(a.raw)} vs {sorted(b.raw)}")
    ma, mb = a.matrix(), b.matrix()
    if not np.allclose(ma, mb, rtol=rtol, atol=atol, equal_nan=True):
        bad = np.argwhere(~np.isclose(ma, mb, rtol=rtol, atol=atol, equal_nan=True))
        r, c = bad[0]
        raise AssertionError(
            f"{len(bad)} values differ; first: row {r}, symbol {a.symbols[c]}:"
            f" {ma[r, c]} vs {mb[r, c]}"
        )
    return int(ma.size)
