"""Market-data sources behind one interface (`MarketDataSource.load(start, end) -> MarketData`).

Sources:

- `EmbeddedSource` (the default, offline): real data shipped in ``data/market.npz``, built by
  ``python -m bloasis.marketdata.build_dataset`` (see ``data/PROVENANCE.md``).
- `FileSource`: a long-format CSV (optionally gzipped) or Parquet file (Parquet needs pyarrow).
- `SyntheticSource` (in `bloasis.marketdata.synthetic`): a generated universe for scale tests.
- A database source (stored bars) will implement the same protocol; `default_source` is where
  it will be chosen from settings.

Point in time: each source first drops what was published after ``end``, then derives every
value (VIX proxy, forward fills, monthly publication lags) from what is left, and only then cuts
``start``. So ``load(end=D)`` equals ``load().as_of(D)``, which the tests check.

File format (`FileSource`, `write_csv`). One row per (date, symbol), header required::

    date,symbol,open,high,low,close,adj_close,volume,sector
    2015-01-02,AAPL,111.39,111.44,107.35,109.33,100.22,53204600,Information Technology
    2015-01-02,^SPX,2058.90,2072.36,2046.04,2058.20,,2708700000,
    2015-01-02,^VIX,,,,17.79,,,
    2015-01-02,UST10Y,,,,2.12,,,
    2014-12-01,BAA_AAA,,,,1.05,,,

- ``date`` is ISO ``YYYY-MM-DD``; ``symbol`` and ``close`` are required, the other columns are
  optional (empty = unknown). ``adj_close`` (else ``close``) feeds `MarketData.closes`; the raw
  ``open high low close volume`` feed `MarketData.ohlcv` (None when the file has none of them).
  ``sector`` is a GICS sector name (first non-empty value per symbol).
- Reserved symbols carry the market series (only ``close`` is read, except ``^SPX``):
  ``^SPX`` index bars (required: its dates are the session index), ``^VIX`` the volatility index
  (sessions without it get the realised-volatility proxy), ``UST10Y``/``UST2Y`` yields in percent
  dated by publication day (forward-filled onto sessions), ``BAA_AAA`` Moody's BAA-AAA spread in
  percent dated by the first day of the month it measures (made visible only after the
  publication lag, see `PitParams`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from bloasis.marketdata.types import (
    DataFormatError,
    DataIssue,
    DataValidationError,
    MarketData,
    MarketDataSource,
    to_timestamp,
)
from bloasis.marketdata.validate import (
    CREDIT_SYMBOL,
    INDEX_SYMBOL,
    RESERVED_SYMBOLS,
    UST2Y_SYMBOL,
    UST10Y_SYMBOL,
    VIX_SYMBOL,
    format_issues,
    validate,
    validate_bars,
)

DATA_DIR = Path(__file__).resolve().parent / "data"
EMBEDDED_PATH = DATA_DIR / "market.npz"
EMBEDDED_FORMAT_VERSION = 1

DayLike = date | pd.Timestamp | str


class DataQualityWarning(UserWarning):
    """Data issues were quarantined (removed) instead of raising."""


@dataclass(frozen=True)
class PitParams:
    """Point-in-time conventions for derived market series.

    credit_lag_days: a month's BAA/AAA value becomes visible on the first NYSE session on or after
        (the first business day of the following month + this many calendar days); business day:
        a weekday other than New Year's Day and Labor Day (`first_business_day`).
    monthly_max_stale_days / daily_max_stale_days: a forward-filled value older than this (days
        since it became visible) becomes NaN, so a series that stops is not carried forever.
    vix_proxy_*: where no real VIX exists, vix = slope * RV + intercept, RV = annualised % stdev
        of the last `vix_proxy_window` daily log returns of the index (backward-looking only).
    """

    credit_lag_days: int = 5
    monthly_max_stale_days: int = 45
    daily_max_stale_days: int = 10
    vix_proxy_slope: float = 0.58
    vix_proxy_intercept: float = 8.1
    vix_proxy_window: int = 21


# ------------------------------------------------------------------------------------------------
# Point-in-time helpers (all backward-looking, all vectorised)


def _days(idx: pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    return np.asarray(idx, dtype="datetime64[D]").astype(np.int64)


def align_published(
    pub_days: np.ndarray, values: np.ndarray, sessions: pd.DatetimeIndex, max_stale_days: int
) -> np.ndarray:
    """For each session, the latest value published on or before it (NaN when none, or when the
    latest is older than `max_stale_days`). `pub_days` are sorted int days since epoch."""
    ok_obs = np.isfinite(values)
    pub, vals = pub_days[ok_obs], values[ok_obs]
    sess = _days(sessions)
    pos = np.searchsorted(pub, sess, side="right") - 1
    out = np.full(len(sess), np.nan)
    ok = pos >= 0
    ok[ok] &= (sess[ok] - pub[pos[ok]]) <= max_stale_days
    out[ok] = vals[pos[ok]]
    return out


def first_business_day(day: np.ndarray) -> np.ndarray:
    """First business day on or after each date (int days since epoch in, out): a weekday that
    is not New Year's Day (observed) or Labor Day, the two holidays that can be the first
    weekday of a month. A pure function of the date, so availability never depends on which
    sessions happen to be loaded."""
    d = np.asarray(day, dtype=np.int64).astype("datetime64[D]")
    if d.size == 0:
        return np.asarray(d, dtype=np.int64)
    years = np.arange(d.min().astype("datetime64[Y]"), d.max().astype("datetime64[Y]") + 1)
    jan1 = years.astype("datetime64[D]")
    sunday = (jan1.astype(np.int64) + 3) % 7 == 6  # 1970-01-01 was a Thursday
    new_year = np.where(sunday, jan1 + 1, jan1)
    september = (years.astype("datetime64[M]") + 8).astype("datetime64[D]")
    labor_day = np.busday_offset(september, 0, roll="forward", weekmask="Mon")
    holidays = np.concatenate([new_year, labor_day])
    return np.busday_offset(d, 0, roll="forward", holidays=holidays).astype(np.int64)


def monthly_availability(
    month_days: np.ndarray, sessions: pd.DatetimeIndex, lag_days: int
) -> np.ndarray:
    """Session position from which each month's value is visible (``len(sessions)`` = not yet):
    the first session on or after (first business day of the following month + `lag_days`)."""
    months = np.asarray(month_days, dtype=np.int64).astype("datetime64[D]").astype("datetime64[M]")
    next_first = (months + 1).astype("datetime64[D]").astype(np.int64)
    target = first_business_day(next_first) + lag_days
    return np.searchsorted(_days(sessions), target, side="left").astype(np.int64)


def align_monthly(
    month_days: np.ndarray,
    values: np.ndarray,
    sessions: pd.DatetimeIndex,
    lag_days: int,
    max_stale_days: int,
) -> np.ndarray:
    """Monthly observations onto sessions, each visible only from its availability session."""
    ok_obs = np.isfinite(values)
    months, vals = np.asarray(month_days)[ok_obs], values[ok_obs]
    n = len(sessions)
    out = np.full(n, np.nan)
    if n == 0 or len(months) == 0:
        return out
    avail = monthly_availability(months, sessions, lag_days)
    # Latest month visible at each session (availability is non-decreasing in the month).
    order = np.argsort(months, kind="stable")
    avail, vals = np.maximum.accumulate(avail[order]), vals[order]
    m = np.searchsorted(avail, np.arange(n), side="right") - 1
    sess = _days(sessions)
    ok = m >= 0
    first_visible = sess[np.minimum(avail[np.maximum(m, 0)], n - 1)]
    ok &= (sess - first_visible) <= max_stale_days
    out[ok] = vals[m[ok]]
    return out


def realised_vol(close: np.ndarray, window: int) -> np.ndarray:
    """Annualised % standard deviation (ddof=1) of the last `window` daily log returns."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.diff(np.log(close), prepend=np.nan)
    sd = pd.Series(r).rolling(window, min_periods=window).std(ddof=1).to_numpy()
    return sd * np.sqrt(252.0) * 100.0


def vix_with_proxy(
    index_close: np.ndarray, vix_real: np.ndarray, params: PitParams
) -> tuple[np.ndarray, np.ndarray]:
    """(vix, is_proxy): the real VIX where it exists, else the realised-volatility proxy."""
    proxy = params.vix_proxy_slope * realised_vol(index_close, params.vix_proxy_window)
    proxy += params.vix_proxy_intercept
    is_proxy = ~np.isfinite(vix_real)
    return np.where(is_proxy, proxy, vix_real), is_proxy


def build_market_frame(
    sessions: pd.DatetimeIndex,
    index_bars: dict[str, np.ndarray],
    vix_real: np.ndarray,
    ust_days: np.ndarray,
    ust10y: np.ndarray,
    ust2y: np.ndarray,
    credit_months: np.ndarray,
    credit_spread: np.ndarray,
    params: PitParams,
) -> pd.DataFrame:
    """The `MarketData.market` frame from raw inputs already cut to what was published by the
    last session. `index_bars` / `vix_real` are aligned on `sessions` (NaN = unknown)."""
    n = len(sessions)
    nan = np.full(n, np.nan)
    close = np.asarray(index_bars["close"], dtype=np.float64)
    vix, is_proxy = vix_with_proxy(close, np.asarray(vix_real, dtype=np.float64), params)
    cols: dict[str, np.ndarray] = {
        "index_close": close,
        "index_open": np.asarray(index_bars.get("open", nan), dtype=np.float64),
        "index_high": np.asarray(index_bars.get("high", nan), dtype=np.float64),
        "index_low": np.asarray(index_bars.get("low", nan), dtype=np.float64),
        "index_volume": np.asarray(index_bars.get("volume", nan), dtype=np.float64),
        "vix": vix,
        "vix_is_proxy": is_proxy,
        "ust10y": align_published(ust_days, ust10y, sessions, params.daily_max_stale_days),
        "ust2y": align_published(ust_days, ust2y, sessions, params.daily_max_stale_days),
        "credit_spread": align_monthly(
            credit_months,
            credit_spread,
            sessions,
            params.credit_lag_days,
            params.monthly_max_stale_days,
        ),
    }
    return pd.DataFrame(cols, index=sessions)


def _session_index(days: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(days, dtype="datetime64[D]"), name="date").as_unit("ns")


def _cut_end(n_sessions: pd.DatetimeIndex, end: DayLike | None) -> int:
    if end is None:
        return len(n_sessions)
    return int(n_sessions.searchsorted(to_timestamp(end), side="right"))


def warn_quarantined(context: str, issues: Sequence[DataIssue]) -> None:
    """A source that quarantined rows says so (a DataQualityWarning listing them)."""
    if issues:
        # stacklevel 3: the caller of the source's load()
        warnings.warn(
            format_issues(f"{context} (quarantined)", issues), DataQualityWarning, stacklevel=3
        )


def _cut_start(md: MarketData, start: DayLike | None) -> MarketData:
    return md if start is None else md.between(start, None)


# ------------------------------------------------------------------------------------------------
# Embedded dataset


@dataclass(frozen=True)
class _Embedded:
    sessions: pd.DatetimeIndex
    index_bars: dict[str, np.ndarray]
    vix: np.ndarray
    ust_days: np.ndarray
    ust10y: np.ndarray
    ust2y: np.ndarray
    credit_months: np.ndarray
    credit_spread: np.ndarray
    baa: np.ndarray  # Moody's BAA / AAA yields (%), by credit month (the spread's inputs)
    aaa: np.ndarray
    symbols: list[str]
    sectors: list[str]
    closes: np.ndarray


def _scaled(a: np.ndarray, scale: float) -> np.ndarray:
    # Stored as integers with 0 meaning "unknown" (all stored values are positive, except yields
    # and spreads, which are stored without a sentinel).
    out = a.astype(np.float64) / scale
    out[a == 0] = np.nan
    return out


@functools.lru_cache(maxsize=4)
def _read_embedded(path: str) -> _Embedded:
    """Decode the npz once per process; loads then only slice and wrap the arrays."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"embedded market data not found at {p}; build it with "
            "`python -m bloasis.marketdata.build_dataset`"
        )
    with np.load(p, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    version = int(a["format_version"])
    if version != EMBEDDED_FORMAT_VERSION:
        raise DataFormatError(f"{p}: format version {version}, expected {EMBEDDED_FORMAT_VERSION}")
    # Prices are delta-encoded along time (small deltas compress well): cumsum restores them.
    closes_m = np.cumsum(a["closes_mdelta"].astype(np.int64), axis=0)
    closes = closes_m.astype(np.float64) / 1000.0
    closes[closes_m == 0] = np.nan
    idx_close = np.cumsum(a["index_close_cdelta"].astype(np.int64)).astype(np.float64) / 100.0
    emb = _Embedded(
        sessions=_session_index(a["sessions"]),
        index_bars={
            "close": idx_close,
            "open": _scaled(a["index_open_c"], 100.0),
            "high": _scaled(a["index_high_c"], 100.0),
            "low": _scaled(a["index_low_c"], 100.0),
            "volume": _scaled(a["index_volume_1e4"], 1e-4),
        },
        vix=_scaled(a["vix_c"], 100.0),
        ust_days=a["ust_days"].astype(np.int64),
        ust10y=a["ust10y_bp"].astype(np.float64) / 100.0,
        ust2y=a["ust2y_bp"].astype(np.float64) / 100.0,
        credit_months=a["credit_months"].astype(np.int64),
        credit_spread=(a["baa_c"].astype(np.float64) - a["aaa_c"].astype(np.float64)) / 100.0,
        baa=a["baa_c"].astype(np.float64) / 100.0,
        aaa=a["aaa_c"].astype(np.float64) / 100.0,
        symbols=[str(s) for s in a["symbols"]],
        sectors=[str(s) for s in a["sectors"]],
        closes=closes,
    )
    for arr in (
        emb.closes,
        emb.vix,
        emb.ust10y,
        emb.ust2y,
        emb.credit_spread,
        emb.baa,
        emb.aaa,
        *emb.index_bars.values(),
    ):
        arr.flags.writeable = False
    return emb


class EmbeddedSource:
    """The real dataset shipped with the package (S&P 500 1990-01-02..2022-12-28, 20 stocks,
    VIX 2014-2018 + proxy, Treasury 10Y/2Y 1990..2017-03, Moody's BAA-AAA monthly).

    It is validated when built and by the tests, so `load` skips validation unless asked."""

    def __init__(
        self,
        path: Path | str | None = None,
        params: PitParams | None = None,
        validate: bool = False,
    ) -> None:
        self.path = Path(path) if path is not None else EMBEDDED_PATH
        self.params = params or PitParams()
        self.validate = validate

    def load(self, start: DayLike | None = None, end: DayLike | None = None) -> MarketData:
        e = _read_embedded(str(self.path))
        n = _cut_end(e.sessions, end)
        sessions = e.sessions[:n]
        last = _days(sessions)[-1] if n else np.iinfo(np.int64).min
        keep_ust = e.ust_days <= last  # published on or before the last session kept
        market = build_market_frame(
            sessions,
            {k: v[:n] for k, v in e.index_bars.items()},
            e.vix[:n],
            e.ust_days[keep_ust],
            e.ust10y[keep_ust],
            e.ust2y[keep_ust],
            e.credit_months,
            e.credit_spread,
            self.params,
        )
        cols = pd.Index(e.symbols, name="symbol", dtype=str)
        closes = pd.DataFrame(e.closes[:n], index=sessions, columns=cols)
        sectors = pd.Series(e.sectors, index=cols.copy(), name="sector", dtype=str)
        md = MarketData(
            market=market, closes=closes, ohlcv=None, sectors=sectors, source="embedded"
        )
        if self.validate:
            md, _ = validate(md)
        return _cut_start(md, start)


# ------------------------------------------------------------------------------------------------
# Files

_REQUIRED_COLUMNS = ("date", "symbol", "close")
_NUMERIC_COLUMNS = ("open", "high", "low", "close", "adj_close", "volume")
# Text read as "unknown"; anything else that is not a number is a format error.
_NA_TOKENS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL"]


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise DataFormatError(
                f"{path}: reading Parquet needs pyarrow, which is not installed; "
                "install pyarrow or convert the file to CSV"
            ) from exc
        return pd.read_parquet(path)
    try:
        # Everything as text first, so bad dates and numbers can be reported with their line.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=_NA_TOKENS)
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(f"{path}: the file is empty (no header, no rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise DataFormatError(f"{path}: cannot be parsed as CSV: {exc}") from exc


def _parse_bars(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    cols = {str(c).strip().lower(): c for c in raw.columns}
    missing = [c for c in _REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise DataFormatError(
            f"{path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, raw.columns))})"
        )
    df = pd.DataFrame({"symbol": raw[cols["symbol"]].astype("string").str.strip()})
    # Line numbers for messages: header is line 1.
    line = np.arange(len(raw)) + 2
    bad_sym = df["symbol"].isna().to_numpy() | (df["symbol"] == "").fillna(True).to_numpy()
    if bad_sym.any():
        k = int(np.flatnonzero(bad_sym)[0])
        raise DataFormatError(f"{path}: line {line[k]}: empty symbol ({int(bad_sym.sum())} rows)")
    text = raw[cols["date"]]
    parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{path}: line {line[k]}: bad date {text.iloc[k]!r} in column 'date' "
            f"(expected YYYY-MM-DD; {int(bad.sum())} bad row(s))"
        )
    df["date"] = pd.DatetimeIndex(parsed).as_unit("ns")
    for name in _NUMERIC_COLUMNS:
        if name not in cols:
            continue
        src = raw[cols[name]]
        num = pd.to_numeric(src, errors="coerce")
        bad = (num.isna() & src.notna()).to_numpy()
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{path}: line {line[k]}: column {name!r} value {src.iloc[k]!r} is not a number "
                f"({int(bad.sum())} bad row(s))"
            )
        df[name] = num.astype(np.float64)
    if "sector" in cols:
        df["sector"] = raw[cols["sector"]].astype("string").str.strip()
    return df[["date", "symbol", *[c for c in df.columns if c not in ("date", "symbol")]]]


def _series(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    return bars[bars["symbol"] == symbol]


class FileSource:
    """Long-format CSV (``.csv``/``.csv.gz``) or Parquet file; format in the module docstring.

    Rows are validated on load (`validate_bars` over the whole file whatever ``end``, then
    `validate` over the assembled data): by default any issue raises
    `DataValidationError`; with ``quarantine=True`` bad rows are dropped, a `DataQualityWarning`
    is emitted and the issues are kept in `issues`."""

    def __init__(
        self, path: Path | str, params: PitParams | None = None, quarantine: bool = False
    ) -> None:
        self.path = Path(path)
        self.params = params or PitParams()
        self.quarantine = quarantine
        self.issues: list[DataIssue] = []

    def load(self, start: DayLike | None = None, end: DayLike | None = None) -> MarketData:
        path = self.path
        if not path.exists():
            raise FileNotFoundError(f"market data file not found: {path}")
        bars = _parse_bars(_read_table(path), path)
        kind = "parquet" if path.name.lower().endswith((".parquet", ".pq")) else "csv"
        context = f"{kind}:{path}"
        bars, issues = validate_bars(bars, quarantine=self.quarantine, context=context)

        # Point in time: everything dated after `end` is dropped before anything is derived.
        # Monthly series are dated by the month measured; their lag is applied below.
        if end is not None:
            end_ts = to_timestamp(end)
            bars = bars[(bars["date"] <= end_ts) | (bars["symbol"] == CREDIT_SYMBOL)]

        spx = _series(bars, INDEX_SYMBOL)
        if spx.empty:
            raise DataFormatError(
                f"{path}: no {INDEX_SYMBOL} rows{' on or before ' + str(end) if end else ''}: "
                "the index series is required (its dates are the session index)"
            )
        sessions = pd.DatetimeIndex(spx["date"].to_numpy(), name="date").as_unit("ns")

        def on_sessions(df: pd.DataFrame, col: str) -> np.ndarray:
            if col not in df.columns:
                return np.full(len(sessions), np.nan)
            s = pd.Series(df[col].to_numpy(), index=pd.DatetimeIndex(df["date"].to_numpy()))
            return s.reindex(sessions).to_numpy(dtype=np.float64)

        vix_rows = _series(bars, VIX_SYMBOL)
        # Only VIX prints on index sessions can be aligned; others are reported below.
        stray_vix = vix_rows[~vix_rows["date"].isin(sessions)]
        ust10 = _series(bars, UST10Y_SYMBOL)
        ust2 = _series(bars, UST2Y_SYMBOL)
        ust_dates = np.union1d(_days(ust10["date"].to_numpy()), _days(ust2["date"].to_numpy()))

        def on_days(df: pd.DataFrame) -> np.ndarray:
            s = pd.Series(df["close"].to_numpy(), index=_days(df["date"].to_numpy()))
            return s.reindex(ust_dates).to_numpy(dtype=np.float64)

        credit = _series(bars, CREDIT_SYMBOL)
        market = build_market_frame(
            sessions,
            {k: on_sessions(spx, k) for k in ("open", "high", "low", "close", "volume")},
            on_sessions(vix_rows, "close"),
            ust_dates,
            on_days(ust10),
            on_days(ust2),
            _days(credit["date"].to_numpy()),
            credit["close"].to_numpy(dtype=np.float64),
            self.params,
        )

        stocks = bars[~bars["symbol"].isin(RESERVED_SYMBOLS)]
        outside = stocks[~stocks["date"].isin(sessions)]
        extra = [
            DataIssue(str(s), d.date(), "not_in_index", f"no {INDEX_SYMBOL} row for this date")
            for s, d in zip(outside["symbol"], outside["date"], strict=True)
        ] + [
            DataIssue(VIX_SYMBOL, d.date(), "not_in_index", f"no {INDEX_SYMBOL} row for this date")
            for d in stray_vix["date"]
        ]
        if extra and not self.quarantine:
            raise DataValidationError(format_issues(context, extra), extra)
        stocks = stocks[stocks["date"].isin(sessions)]
        closes, ohlcv = self._matrices(stocks, sessions)
        sec = stocks.iloc[:0]
        if "sector" in stocks.columns:
            sec = stocks.dropna(subset=["sector"]).drop_duplicates("symbol")
            sec = sec[sec["sector"] != ""]
        sectors = pd.Series(
            [str(x) for x in sec.get("sector", [])],
            index=pd.Index([str(x) for x in sec["symbol"]], name="symbol", dtype=str),
            name="sector",
            dtype=str,
        ).sort_index()
        md = MarketData(market=market, closes=closes, ohlcv=ohlcv, sectors=sectors, source=context)
        md, more = validate(md, quarantine=self.quarantine)
        self.issues = issues + extra + more
        warn_quarantined(context, self.issues)
        return _cut_start(md, start)

    @staticmethod
    def _matrices(
        stocks: pd.DataFrame, sessions: pd.DatetimeIndex
    ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame] | None]:
        symbols = pd.Index(sorted(stocks["symbol"].astype(str).unique()), name="symbol", dtype=str)

        def matrix(values: pd.Series) -> pd.DataFrame:
            # One vectorised scatter (no pivot_table aggregation: duplicates were rejected).
            out = np.full((len(sessions), len(symbols)), np.nan)
            r = sessions.get_indexer(pd.DatetimeIndex(stocks["date"].to_numpy()))
            c = symbols.get_indexer(stocks["symbol"].astype(str).to_numpy())
            out[r, c] = values.to_numpy(dtype=np.float64)
            return pd.DataFrame(out, index=sessions, columns=symbols)

        adj = (
            stocks["adj_close"].fillna(stocks["close"])
            if "adj_close" in stocks
            else stocks["close"]
        )
        closes = matrix(adj)
        present = [
            f for f in ("open", "high", "low", "volume") if f in stocks and stocks[f].notna().any()
        ]
        if not present:
            return closes, None
        ohlcv = {
            f: matrix(stocks[f]) for f in ("open", "high", "low", "close", "volume") if f in stocks
        }
        return closes, ohlcv


def credit_months_of(md: MarketData, params: PitParams | None = None) -> pd.Series:
    """Inverse of the monthly alignment: the (month start -> spread) observations that produce
    `md.market.credit_spread` under `params` (used by `write_csv`)."""
    params = params or PitParams()
    sessions = md.index
    cs = md.market["credit_spread"].to_numpy(dtype=np.float64)
    if len(sessions) == 0:
        return pd.Series(dtype=np.float64)
    first = np.datetime64(sessions[0].date(), "M") - 3
    last = np.datetime64(sessions[-1].date(), "M")
    months = np.arange(first, last + 1).astype("datetime64[D]")
    avail = np.maximum.accumulate(
        monthly_availability(_days(months), sessions, params.credit_lag_days)
    )
    m = np.searchsorted(avail, np.arange(len(sessions)), side="right") - 1
    ok = (m >= 0) & np.isfinite(cs)
    s = pd.Series(cs[ok], index=m[ok])
    s = s[~s.index.duplicated(keep="first")]
    return pd.Series(s.to_numpy(), index=pd.DatetimeIndex(months[s.index.to_numpy()]).as_unit("ns"))


def write_csv(md: MarketData, path: Path | str, params: PitParams | None = None) -> Path:
    """Write `md` in the `FileSource` long format (gzip when the name ends in ``.gz``).

    Reading it back gives the same data except where derived values need history before the
    first row (the first `vix_proxy_window` proxy values) or after a series stopped (forward
    fills are re-published daily)."""
    path = Path(path)
    m = md.market
    dates = md.index
    frames: list[pd.DataFrame] = [
        pd.DataFrame(
            {
                "date": dates,
                "symbol": INDEX_SYMBOL,
                "open": m["index_open"].to_numpy(),
                "high": m["index_high"].to_numpy(),
                "low": m["index_low"].to_numpy(),
                "close": m["index_close"].to_numpy(),
                "volume": m["index_volume"].to_numpy(),
            }
        )
    ]
    real_vix = ~m["vix_is_proxy"].to_numpy(dtype=bool) & m["vix"].notna().to_numpy()
    frames.append(
        pd.DataFrame(
            {"date": dates[real_vix], "symbol": VIX_SYMBOL, "close": m["vix"][real_vix].to_numpy()}
        )
    )
    for col, sym in (("ust10y", UST10Y_SYMBOL), ("ust2y", UST2Y_SYMBOL)):
        ok = m[col].notna().to_numpy()
        frames.append(
            pd.DataFrame({"date": dates[ok], "symbol": sym, "close": m[col][ok].to_numpy()})
        )
    credit = credit_months_of(md, params)
    frames.append(
        pd.DataFrame({"date": credit.index, "symbol": CREDIT_SYMBOL, "close": credit.to_numpy()})
    )

    # Long format from the matrices: row-major flattening, one vectorised step per field.
    symbols = np.asarray(md.closes.columns, dtype=object)
    long = pd.DataFrame(
        {
            "date": np.repeat(dates.to_numpy(), len(symbols)),
            "symbol": np.tile(symbols, len(dates)),
            "adj_close": md.closes.to_numpy(dtype=np.float64).ravel(),
        }
    )
    if md.ohlcv is not None:
        for f, frame in md.ohlcv.items():
            long[f] = frame.to_numpy(dtype=np.float64).ravel()
    else:
        long["close"] = long["adj_close"]
    long = long[long["adj_close"].notna()]
    long["sector"] = long["symbol"].map(md.sectors)
    frames.append(long)
    out = pd.concat(frames, ignore_index=True)
    cols = ["date", "symbol", "open", "high", "low", "close", "adj_close", "volume", "sector"]
    out = out.reindex(columns=cols)
    out.to_csv(path, index=False, date_format="%Y-%m-%d")
    return path


def default_source() -> MarketDataSource:
    """The source used when none is configured: the embedded real dataset (offline).

    A database-backed source (a later issue) will be selected here from settings."""
    return EmbeddedSource()
