"""Synthetic universe generator for scale tests: deterministic by seed, fully vectorised.

A hidden Markov chain over the five regimes (bull, bear, crisis, sideways, recovery) sets the
market factor's drift and volatility; each of the 11 GICS sectors has a factor with a regime tilt
(defensive sectors hold up in bear/crisis, cyclicals lead in bull/recovery); symbols add
idiosyncratic noise. From that: valid OHLCV bars, a cap-weighted index, a VIX-like series built
from realised and regime volatility, 10Y/2Y yields and a monthly BAA-AAA-like spread that widens
in crises (published with the same lag as the real one).

Memory: six (sessions x symbols) float64 matrices at peak, ~600 MB for 5,000 symbols x 10
years; the generated `MarketData` keeps five of them (``closes`` is ``ohlcv["close"]``: no
dividends or splits, so adjusted and raw closes are the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from bloasis import calendar
from bloasis.marketdata.sources import DayLike, PitParams, align_monthly, realised_vol
from bloasis.marketdata.types import GICS_SECTORS, MarketData

REGIMES: tuple[str, ...] = ("bull", "bear", "crisis", "sideways", "recovery")
BULL, BEAR, CRISIS, SIDEWAYS, RECOVERY = range(5)

# Expected regime durations in sessions (daily persistence = 1 - 1/duration) and where a regime
# goes when it ends: crises are short and mostly end in a recovery, bull markets last years.
_DURATION = np.array([300.0, 110.0, 30.0, 120.0, 70.0])
_EXITS = np.array(
    [
        # bull  bear  crisis sideways recovery
        [0.00, 0.40, 0.05, 0.55, 0.00],  # from bull
        [0.00, 0.00, 0.30, 0.30, 0.40],  # from bear
        [0.00, 0.30, 0.00, 0.00, 0.70],  # from crisis
        [0.50, 0.40, 0.10, 0.00, 0.00],  # from sideways
        [0.80, 0.05, 0.00, 0.15, 0.00],  # from recovery
    ]
)
# Market factor, annualised drift and volatility per regime.
_MU = np.array([0.18, -0.25, -0.70, 0.00, 0.35])
_SIGMA = np.array([0.12, 0.22, 0.50, 0.13, 0.22])
# Macro targets per regime: 10Y-2Y slope (pp), BAA-AAA spread (pp), 10Y drift (pp per year).
_SLOPE = np.array([1.2, -0.1, 0.8, 0.4, 2.0])
_CREDIT = np.array([0.85, 1.35, 2.8, 1.0, 1.4])
_Y10_DRIFT = np.array([0.15, -0.2, -1.5, 0.0, 0.3])

# Sector weights (roughly the S&P 500 member counts) and regime behaviour.
_SECTOR_WEIGHTS = np.array([65, 72, 53, 23, 78, 63, 38, 28, 22, 31, 31], dtype=np.float64)
_DEFENSIVE = {"Consumer Staples", "Utilities", "Health Care"}
_NEUTRAL = {"Communication Services", "Real Estate"}
# Extra annual sector drift per regime (bull, bear, crisis, sideways, recovery).
_TILT_DEFENSIVE = np.array([-0.03, 0.10, 0.25, 0.02, -0.05])
_TILT_CYCLICAL = np.array([0.04, -0.05, -0.10, -0.01, 0.08])
_TILT_NEUTRAL = np.zeros(5)

_SQRT252 = np.sqrt(252.0)


@dataclass(frozen=True)
class SyntheticUniverse:
    data: MarketData
    regimes: pd.Series  # the hidden regime label per session (ground truth for classifiers)


def transition_matrix() -> np.ndarray:
    """Daily regime transition matrix (rows sum to 1)."""
    stay = 1.0 - 1.0 / _DURATION
    return np.diag(stay) + (1.0 - stay)[:, None] * _EXITS


def _regime_path(rng: np.random.Generator, n: int) -> np.ndarray:
    # The chain is inherently sequential; this loop is over sessions only (not symbols).
    cum = np.cumsum(transition_matrix(), axis=1)
    u = rng.random(n)
    states = np.empty(n, dtype=np.int8)
    s = BULL
    for t in range(n):
        states[t] = s
        s = min(int(np.searchsorted(cum[s], u[t], side="right")), 4)
    return states


def _ar1(x: np.ndarray, phi: float, init: float) -> np.ndarray:
    """y_t = phi * y_{t-1} + x_t with y_{-1} = init (scipy's IIR filter: vectorised)."""
    # Imported here: scipy.signal costs ~0.7 s to import, which `import bloasis.marketdata`
    # (and so every consumer of the embedded data) should not pay.
    from scipy.signal import lfilter

    y, _ = lfilter([1.0], [1.0, -phi], x, zi=[phi * init])
    return np.asarray(y)


def _sector_assignment(n: int) -> np.ndarray:
    """Sector index per symbol (sorted: contiguous blocks): weighted counts (largest remainder),
    each sector at least once when there are enough symbols."""
    w = _SECTOR_WEIGHTS / _SECTOR_WEIGHTS.sum()
    base = np.ones(11, dtype=np.int64) if n >= 11 else np.zeros(11, dtype=np.int64)
    rest = n - int(base.sum())
    raw = w * rest
    counts = base + np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    counts[np.argsort(-(raw - np.floor(raw)), kind="stable")[:short]] += 1
    return np.repeat(np.arange(11), counts)


def generate(
    n_symbols: int, years: int, seed: int = 0, start: date = date(2010, 1, 4)
) -> SyntheticUniverse:
    """Generate `n_symbols` x `years` of NYSE sessions from `start`."""
    if n_symbols < 1 or years < 1:
        raise ValueError("n_symbols and years must be >= 1")
    rng = np.random.default_rng(seed)
    try:
        stop = start.replace(year=start.year + years)
    except ValueError:  # 29 February
        stop = start.replace(year=start.year + years, day=28)
    sessions = calendar.sessions(start, stop - timedelta(days=1))
    t_n, n = len(sessions), n_symbols

    states = _regime_path(rng, t_n)
    sig_t = _SIGMA[states] / _SQRT252
    volmult = _SIGMA[states] / _SIGMA[BULL]
    mkt = _MU[states] / 252.0 + sig_t * rng.standard_normal(t_n)

    sector_of = _sector_assignment(n)
    kinds = [
        _TILT_DEFENSIVE if s in _DEFENSIVE else _TILT_NEUTRAL if s in _NEUTRAL else _TILT_CYCLICAL
        for s in GICS_SECTORS
    ]
    tilt = np.stack(kinds, axis=1)  # regimes x sectors
    beta_sector = np.array(
        [0.65 if s in _DEFENSIVE else 0.95 if s in _NEUTRAL else 1.2 for s in GICS_SECTORS]
    )
    sec_ret = tilt[states] / 252.0 + rng.standard_normal((t_n, 11)) * (0.006 * volmult[:, None])
    beta = beta_sector[sector_of] + rng.normal(0.0, 0.15, n)
    idio_sd = rng.uniform(0.15, 0.45, n) / _SQRT252
    p0 = np.exp(rng.uniform(np.log(10.0), np.log(300.0), n))
    shares = np.exp(rng.normal(np.log(2e8), 1.0, n))
    base_volume = shares * rng.uniform(0.002, 0.01, n)

    # Memory: fresh 100 MB buffers are slow to fault in, so exactly six are allocated (five
    # outputs and one scratch) and every step writes into them in place.
    close = np.empty((t_n, n))
    scratch = np.empty_like(close)
    # Log returns -> closes.
    rng.standard_normal(out=close)
    close *= idio_sd[None, :]
    close *= np.sqrt(volmult)[:, None]
    # Ito correction: the idiosyncratic variance must not add drift to simple returns (the
    # index, a cap-weighted average of simple returns, would otherwise rise in bear markets).
    np.multiply(volmult[:, None], -0.5 * idio_sd[None, :] ** 2, out=scratch)
    close += scratch
    np.multiply(mkt[:, None], beta[None, :], out=scratch)
    # Symbols are grouped by sector in contiguous column blocks: slices, no (T x N) gather.
    bounds = np.searchsorted(sector_of, np.arange(12))
    for k in range(11):
        scratch[:, bounds[k] : bounds[k + 1]] += sec_ret[:, k : k + 1]
    close += scratch
    np.cumsum(close, axis=0, out=close)
    close += np.log(p0)[None, :]
    np.exp(close, out=close)

    # Open: previous close times an overnight gap.
    opn = np.empty_like(close)
    opn[1:] = close[:-1]
    opn[0] = close[0]
    rng.standard_normal(out=scratch)
    scratch *= 0.3 * idio_sd[None, :]
    scratch *= volmult[:, None]
    np.exp(scratch, out=scratch)
    opn *= scratch
    # High/low: beyond max/min(open, close) by a half-normal wick, so bars are always valid.
    high = np.empty_like(close)
    np.maximum(opn, close, out=high)
    rng.standard_normal(out=scratch)
    np.abs(scratch, out=scratch)
    scratch *= 0.5 * idio_sd[None, :]
    scratch *= volmult[:, None]
    np.exp(scratch, out=scratch)
    high *= scratch
    low = np.empty_like(close)
    np.minimum(opn, close, out=low)
    rng.standard_normal(out=scratch)
    np.abs(scratch, out=scratch)
    scratch *= -0.5 * idio_sd[None, :]
    scratch *= volmult[:, None]
    np.exp(scratch, out=scratch)
    low *= scratch

    # Some symbols list later (NaN before their first bar), as in a real universe. Only those
    # columns are masked (a 10% subset), and the index sums correct for them instead of
    # NaN-scrubbing whole matrices.
    n_ipo = n // 10 if t_n > 2 else 0
    who = np.sort(rng.choice(n, size=n_ipo, replace=False))
    first_bar = rng.integers(1, max(2, t_n // 2), size=n_ipo)
    unlisted = np.arange(t_n)[:, None] < first_bar[None, :]  # T x n_ipo
    prev_unlisted = unlisted[:-1]  # a symbol counts in the index from the day after it lists

    # Cap-weighted index (weights: shares x previous close).
    def cap_sum(rows: np.ndarray, rows_ipo: np.ndarray) -> np.ndarray:
        return rows @ shares - np.where(prev_unlisted, rows_ipo, 0.0) @ shares[who]

    den = cap_sum(close[:-1], close[:-1, who])
    np.subtract(close[1:], close[:-1], out=scratch[1:])
    num = cap_sum(scratch[1:], scratch[1:, who])
    np.subtract(opn[1:], close[:-1], out=scratch[1:])
    num_open = cap_sum(scratch[1:], scratch[1:, who])

    # Volume: lognormal around a per-symbol base, higher when volatility is high.
    volume = scratch
    rng.standard_normal(out=volume)
    volume *= 0.35
    np.exp(volume, out=volume)
    volume *= base_volume[None, :]
    volume *= (volmult**0.7)[:, None]
    np.rint(volume, out=volume)
    np.maximum(volume, 100.0, out=volume)
    idx_volume = volume @ np.ones(n) - np.where(unlisted, volume[:, who], 0.0).sum(axis=1)

    for a in (close, opn, high, low, volume):
        a[:, who] = np.where(unlisted, np.nan, a[:, who])
    with np.errstate(invalid="ignore", divide="ignore"):
        r_close = np.where(den > 0, num / den, 0.0)
        r_open = np.where(den > 0, num_open / den, 0.0)
    idx_close = 1000.0 * np.concatenate([[1.0], np.cumprod(1.0 + r_close)])
    idx_open = np.concatenate([[idx_close[0]], idx_close[:-1] * (1.0 + r_open)])
    wick = np.abs(rng.standard_normal((2, t_n))) * (0.3 * sig_t)
    idx_high = np.maximum(idx_open, idx_close) * np.exp(wick[0])
    idx_low = np.minimum(idx_open, idx_close) * np.exp(-wick[1])

    # VIX-like: half regime-implied volatility (with a variance premium), half the realised-vol
    # proxy, plus persistent noise.
    implied = 110.0 * _SIGMA[states] + 3.0
    rv = realised_vol(idx_close, 21)
    vix = np.where(np.isnan(rv), implied, 0.5 * implied + 0.5 * (0.58 * rv + 8.1))
    vix += _ar1(rng.normal(0.0, 0.5, t_n), 0.9, 0.0)
    np.maximum(vix, 9.0, out=vix)

    # Yields (%): a slowly mean-reverting 10Y with regime drift, a regime-targeted slope.
    y10 = 3.0 + _ar1(_Y10_DRIFT[states] / 252.0 + rng.normal(0.0, 0.055, t_n), 0.9995, 0.0)
    y10 = np.clip(y10, 0.3, 9.0)
    slope = _ar1(0.01 * _SLOPE[states] + rng.normal(0.0, 0.03, t_n), 0.99, 1.0)
    y2 = np.clip(y10 - slope, 0.05, None)
    # Credit spread: daily latent, published monthly (month average) with the real lag.
    latent = _ar1(0.03 * _CREDIT[states] + rng.normal(0.0, 0.02, t_n), 0.97, 1.0)
    latent = np.clip(latent, 0.3, None)
    month_of = sessions.values.astype("datetime64[M]")
    monthly = pd.Series(latent).groupby(month_of).mean()
    month_days = monthly.index.to_numpy().astype("datetime64[D]").astype(np.int64)
    # Two months before the start (at the starting level), so the spread is known from the
    # first session whatever the lag.
    pre = np.datetime64(sessions[0].date(), "M") - np.array([2, 1])
    month_days = np.concatenate([pre.astype("datetime64[D]").astype(np.int64), month_days])
    month_vals = np.concatenate([[latent[0], latent[0]], monthly.to_numpy()])
    params = PitParams()
    credit = align_monthly(
        month_days, month_vals, sessions, params.credit_lag_days, params.monthly_max_stale_days
    )

    market = pd.DataFrame(
        {
            "index_close": idx_close,
            "index_open": idx_open,
            "index_high": idx_high,
            "index_low": idx_low,
            "index_volume": idx_volume,
            "vix": vix,
            "vix_is_proxy": np.zeros(t_n, dtype=bool),
            "ust10y": y10,
            "ust2y": y2,
            "credit_spread": credit,
        },
        index=sessions,
    )
    width = max(4, len(str(n - 1)))
    symbols = pd.Index([f"S{i:0{width}d}" for i in range(n)], name="symbol", dtype=str)

    def frame(a: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(a, index=sessions, columns=symbols, copy=False)

    closes = frame(close)
    ohlcv = {"open": frame(opn), "high": frame(high), "low": frame(low), "close": closes}
    ohlcv["volume"] = frame(volume)
    sectors = pd.Series(
        [GICS_SECTORS[k] for k in sector_of], index=symbols.copy(), name="sector", dtype=str
    )
    label = f"synthetic(seed={seed},n={n},years={years}"
    label += ")" if start == date(2010, 1, 4) else f",start={start.isoformat()})"
    md = MarketData(market=market, closes=closes, ohlcv=ohlcv, sectors=sectors, source=label)
    regimes = pd.Series([REGIMES[k] for k in states], index=sessions, name="regime", dtype=str)
    return SyntheticUniverse(data=md, regimes=regimes)


class SyntheticSource:
    """`MarketDataSource` over a generated universe (generated once per instance)."""

    def __init__(
        self, n_symbols: int, years: int, seed: int = 0, start: date = date(2010, 1, 4)
    ) -> None:
        self.n_symbols = n_symbols
        self.years = years
        self.seed = seed
        self.start = start
        self._universe: SyntheticUniverse | None = None

    def universe(self) -> SyntheticUniverse:
        if self._universe is None:
            self._universe = generate(self.n_symbols, self.years, self.seed, self.start)
        return self._universe

    def load(self, start: DayLike | None = None, end: DayLike | None = None) -> MarketData:
        # Every generated series is causal (built forward in time), so truncation is point in
        # time: the prefix does not depend on what is generated later.
        md = self.universe().data
        if end is not None:
            md = md.as_of(end)
        return md if start is None else md.between(start, None)
