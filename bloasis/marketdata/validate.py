"""Validation of market data: every rule is checked over whole matrices (no per-row Python loops).

Rules (the `rule` of a `DataIssue`):

- ``nan``: a required value is missing or not finite (the index close; a symbol's close between
  its first and last bar; any infinite value).
- ``non_positive``: a price (or the VIX) is <= 0.
- ``high_lt_low``, ``close_outside_range``, ``open_outside_range``: inconsistent OHLC bar.
- ``negative_volume``: volume < 0.
- ``duplicate_date``: a date appears twice (the first row is kept when quarantining).
- ``unsorted_dates``: a date is earlier than one before it (quarantine sorts).
- ``not_a_session``: a date that is not an NYSE session (row dropped when quarantining).
- ``calendar_gap``: an NYSE session between the first and last date has no index row. Rows cannot
  be invented, so quarantine only reports it.
- ``unknown_sector``: a sector that is not one of the 11 GICS sectors (dropped when quarantining).

`validate` raises `DataValidationError` (message: symbol, date and rule of the first issues) or,
with ``quarantine=True``, returns cleaned data plus the issues so the caller can warn about them.
Quarantined values become NaN (a bad bar) or are dropped (a bad index row); a later strict
validation reports the resulting holes again: nothing flows on silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from bloasis import calendar
from bloasis.marketdata.types import (
    GICS_SECTORS,
    DataIssue,
    DataValidationError,
    MarketData,
)

INDEX_SYMBOL = "^SPX"
VIX_SYMBOL = "^VIX"
UST10Y_SYMBOL = "UST10Y"
UST2Y_SYMBOL = "UST2Y"
CREDIT_SYMBOL = "BAA_AAA"
MACRO_SYMBOLS: frozenset[str] = frozenset({UST10Y_SYMBOL, UST2Y_SYMBOL, CREDIT_SYMBOL})
RESERVED_SYMBOLS: frozenset[str] = frozenset({INDEX_SYMBOL, VIX_SYMBOL}) | MACRO_SYMBOLS

MAX_LISTED_ISSUES = 10
# Relative tolerance for OHLC comparisons: values written as text and read back may differ in
# the last bit; a real inconsistency is many orders of magnitude larger.
_REL_TOL = 1e-9


def format_issues(context: str, issues: Sequence[DataIssue], limit: int = MAX_LISTED_ISSUES) -> str:
    head = "; ".join(str(i) for i in issues[:limit])
    more = f"; and {len(issues) - limit} more" if len(issues) > limit else ""
    return f"{context}: {len(issues)} data issue(s): {head}{more}"


def _raise_or_keep(issues: list[DataIssue], quarantine: bool, context: str) -> None:
    # Chronological, so the message starts with the earliest problems.
    issues.sort(key=lambda i: (i.date or date.min, i.symbol, i.rule))
    if issues and not quarantine:
        raise DataValidationError(format_issues(context, issues), issues)


def _dates_of(index: pd.Index) -> np.ndarray:
    # Python `date` objects, built once per validation for the issue list.
    return np.asarray(pd.DatetimeIndex(index).date, dtype=object)


def _cell_issues(
    mask: np.ndarray,
    dates: np.ndarray,
    symbols: Sequence[str],
    rule: str,
    detail: str,
    values: Sequence[np.ndarray] = (),
) -> list[DataIssue]:
    """Issues for every True cell of a (dates x symbols) mask. `detail` is a format string over
    the cell values of `values` (positional)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return []
    picked = [v[rows, cols] for v in values]
    return [
        DataIssue(symbols[c], dates[r], rule, detail.format(*(p[k] for p in picked)))
        for k, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True))
    ]


def _row_issues(
    mask: np.ndarray,
    dates: np.ndarray,
    symbol: str,
    rule: str,
    detail: str,
    values: Sequence[np.ndarray] = (),
) -> list[DataIssue]:
    return _cell_issues(mask[:, None], dates, [symbol], rule, detail, [v[:, None] for v in values])


def _ohlc_masks(
    o: np.ndarray | None, h: np.ndarray | None, low: np.ndarray | None, c: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Masks of the OHLC consistency rules (NaN compares False, so unknown fields pass)."""
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore"):
        if h is not None and low is not None:
            out["high_lt_low"] = h < low - _REL_TOL * np.abs(low)
            if c is not None:
                out["close_outside_range"] = (c > h + _REL_TOL * np.abs(h)) | (
                    c < low - _REL_TOL * np.abs(low)
                )
            if o is not None:
                out["open_outside_range"] = (o > h + _REL_TOL * np.abs(h)) | (
                    o < low - _REL_TOL * np.abs(low)
                )
    return out


_OHLC_DETAIL = {
    "high_lt_low": "high={1} < low={2}",
    "close_outside_range": "close={3} outside [low={2}, high={1}]",
    "open_outside_range": "open={0} outside [low={2}, high={1}]",
}


# Columns per block in `_bars_clean`: a block of every matrix and its temporaries stays in cache.
_CLEAN_BLOCK = 64


def _bars_clean(c: np.ndarray, arrays: dict[str, np.ndarray]) -> bool:
    """True when no cell rule of `_check_matrix_frames` fires. The same rules, checked column
    block by column block: on 5,000 x 2,500 matrices the full-size temporaries of the rules
    (bool and float matrices of 100 MB) cost more than the comparisons, and clean data is the
    common case; the issue lists are built (over whole matrices) only when this says no."""
    o, h, lo, cl = (arrays.get(k) for k in ("open", "high", "low", "close"))
    rows = np.arange(c.shape[0])[:, None]
    with np.errstate(invalid="ignore"):
        for j in range(0, c.shape[1], _CLEAN_BLOCK):
            b = slice(j, j + _CLEAN_BLOCK)
            cb = c[:, b]
            finite = np.isfinite(cb)
            has_any = finite.any(axis=0)
            first = np.where(has_any, finite.argmax(axis=0), cb.shape[0])
            last = np.where(has_any, cb.shape[0] - 1 - finite[::-1].argmax(axis=0), -1)
            inside = (rows >= first[None, :]) & (rows <= last[None, :])
            # NaN inside a symbol's history, infinite anywhere, non-positive.
            if (inside & ~finite).any() or np.isinf(cb).any() or (cb <= 0).any():
                return False
            for name, a in arrays.items():
                ab = a[:, b]
                if np.isinf(ab).any() or ((ab < 0) if name == "volume" else (ab <= 0)).any():
                    return False
            masks = _ohlc_masks(*(None if x is None else x[:, b] for x in (o, h, lo, cl)))
            if any(m.any() for m in masks.values()):
                return False
    return True


def _check_matrix_frames(
    closes: pd.DataFrame, ohlcv: dict[str, pd.DataFrame] | None, dates: np.ndarray
) -> tuple[list[DataIssue], np.ndarray | None]:
    """Cell rules over the closes matrix and the OHLCV matrices. Returns issues and the mask of
    bars to blank (None when clean)."""
    symbols = [str(s) for s in closes.columns]
    issues: list[DataIssue] = []
    c = closes.to_numpy(dtype=np.float64)
    if c.size == 0:
        return issues, None
    arrays: dict[str, np.ndarray] = {
        k: v.to_numpy(dtype=np.float64) for k, v in (ohlcv or {}).items()
    }
    if _bars_clean(c, arrays):
        return issues, None
    bad = np.zeros(closes.shape, dtype=bool)
    finite = np.isfinite(c)
    isinf = np.isinf(c)
    # A missing close is allowed before a symbol's first bar and after its last (listing,
    # delisting); inside that span it is a missing bar.
    has_any = finite.any(axis=0)
    first = np.where(has_any, finite.argmax(axis=0), c.shape[0])
    last = np.where(has_any, c.shape[0] - 1 - finite[::-1].argmax(axis=0), -1)
    rows = np.arange(c.shape[0])[:, None]
    interior_nan = np.isnan(c) & (rows >= first[None, :]) & (rows <= last[None, :])
    for mask, rule, detail in (
        (interior_nan, "nan", "adjusted close missing inside the symbol's history"),
        (isinf, "nan", "adjusted close is not finite: {0}"),
    ):
        if mask.any():
            issues += _cell_issues(mask, dates, symbols, rule, detail, [c])
            bad |= mask
    with np.errstate(invalid="ignore"):
        nonpos = c <= 0
    if nonpos.any():
        issues += _cell_issues(
            nonpos, dates, symbols, "non_positive", "adjusted close={0} <= 0", [c]
        )
        bad |= nonpos

    if ohlcv:
        for name, a in arrays.items():
            inf = np.isinf(a)
            if inf.any():
                issues += _cell_issues(inf, dates, symbols, "nan", f"{name} is not finite", [])
                bad |= inf
            with np.errstate(invalid="ignore"):
                neg = a < 0 if name == "volume" else a <= 0
            if neg.any():
                rule = "negative_volume" if name == "volume" else "non_positive"
                op = "< 0" if name == "volume" else "<= 0"
                issues += _cell_issues(neg, dates, symbols, rule, f"{name}={{0}} {op}", [a])
                bad |= neg
        o, h, lo, cl = (arrays.get(k) for k in ("open", "high", "low", "close"))
        nan = np.full(c.shape, np.nan)
        vals = [x if x is not None else nan for x in (o, h, lo, cl)]
        for rule, mask in _ohlc_masks(o, h, lo, cl).items():
            if mask.any():
                issues += _cell_issues(mask, dates, symbols, rule, _OHLC_DETAIL[rule], vals)
                bad |= mask
    return issues, (bad if bad.any() else None)


def _check_market_cells(
    market: pd.DataFrame, dates: np.ndarray
) -> tuple[list[DataIssue], dict[str, np.ndarray]]:
    """Cell rules of the market frame's optional columns; returns issues and, per column, the
    rows to blank."""
    issues: list[DataIssue] = []
    blank: dict[str, np.ndarray] = {}

    def col(name: str) -> np.ndarray | None:
        return market[name].to_numpy(dtype=np.float64) if name in market.columns else None

    o, h, lo, c = col("index_open"), col("index_high"), col("index_low"), col("index_close")
    ohl_bad = np.zeros(len(market), dtype=bool)
    for name, a in (("index_open", o), ("index_high", h), ("index_low", lo)):
        if a is None:
            continue
        with np.errstate(invalid="ignore"):
            m = (a <= 0) | np.isinf(a)
        if m.any():
            issues += _row_issues(m, dates, INDEX_SYMBOL, "non_positive", f"{name}={{0}}", [a])
            ohl_bad |= m
    nan = np.full(len(market), np.nan)
    vals = [x if x is not None else nan for x in (o, h, lo, c)]
    for rule, m in _ohlc_masks(o, h, lo, c).items():
        if m.any():
            issues += _row_issues(m, dates, INDEX_SYMBOL, rule, _OHLC_DETAIL[rule], vals)
            ohl_bad |= m
    if ohl_bad.any():
        for name in ("index_open", "index_high", "index_low"):
            blank[name] = ohl_bad
    v = col("index_volume")
    if v is not None:
        with np.errstate(invalid="ignore"):
            m = (v < 0) | np.isinf(v)
        if m.any():
            issues += _row_issues(m, dates, INDEX_SYMBOL, "negative_volume", "volume={0}", [v])
            blank["index_volume"] = m
    vix = col("vix")
    if vix is not None:
        with np.errstate(invalid="ignore"):
            m = (vix <= 0) | np.isinf(vix)
        if m.any():
            issues += _row_issues(m, dates, VIX_SYMBOL, "non_positive", "vix={0}", [vix])
            blank["vix"] = m
    for name, sym in (
        ("ust10y", UST10Y_SYMBOL),
        ("ust2y", UST2Y_SYMBOL),
        ("credit_spread", CREDIT_SYMBOL),
    ):
        a = col(name)
        if a is not None:
            m = np.isinf(a)
            if m.any():
                issues += _row_issues(m, dates, sym, "nan", f"{name} is not finite", [])
                blank[name] = m
    return issues, blank


def _check_structure(md: MarketData) -> None:
    """Shape errors are programming errors, not bad data: always raised."""
    idx = md.market.index
    problems: list[DataIssue] = []
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is not None:
        problems.append(
            DataIssue("*", None, "bad_index", "market index must be a tz-naive DatetimeIndex")
        )
    elif idx.hasnans:
        problems.append(DataIssue("*", None, "bad_index", "market index has missing dates (NaT)"))
    elif len(idx) and not (idx == idx.normalize()).all():
        problems.append(DataIssue("*", None, "bad_index", "market index has times of day"))
    if not md.closes.index.equals(idx):
        problems.append(DataIssue("*", None, "misaligned_index", "closes index != market index"))
    for name, frame in (md.ohlcv or {}).items():
        if not frame.index.equals(idx) or not frame.columns.equals(md.closes.columns):
            problems.append(
                DataIssue("*", None, "misaligned_index", f"ohlcv[{name!r}] not aligned with closes")
            )
    if "index_close" not in md.market.columns:
        problems.append(DataIssue("*", None, "missing_column", "market has no index_close"))
    if problems:
        raise DataValidationError(format_issues(md.source, problems), problems)


def validate(md: MarketData, *, quarantine: bool = False) -> tuple[MarketData, list[DataIssue]]:
    """Check `md` against every rule (see the module docstring).

    Strict mode (default) raises `DataValidationError` on any issue and otherwise returns `md`
    unchanged. With ``quarantine=True`` bad rows are dropped / bad bars set to NaN and the issues
    are returned for the caller to warn about."""
    _check_structure(md)
    market = md.market
    idx = pd.DatetimeIndex(market.index)
    n = len(idx)
    issues: list[DataIssue] = []
    days = idx.values.astype("datetime64[D]").astype(np.int64)
    dates = _dates_of(idx)

    # --- row rules on the index (symbol ^SPX: the index series defines the session index)
    keep = np.ones(n, dtype=bool)
    dup = np.asarray(idx.duplicated(keep="first"))
    if dup.any():
        issues += _row_issues(
            dup, dates, INDEX_SYMBOL, "duplicate_date", "date appears more than once"
        )
        keep &= ~dup
    if n > 1:
        prev_max = np.maximum.accumulate(days)[:-1]
        unsorted = np.concatenate([[False], days[1:] < prev_max])
        if unsorted.any():
            issues += _row_issues(
                unsorted, dates, INDEX_SYMBOL, "unsorted_dates", "date earlier than a previous row"
            )
    sessions = calendar.sessions(idx.min(), idx.max()) if n else pd.DatetimeIndex([])
    not_session = ~np.asarray(idx.isin(sessions))
    if not_session.any():
        issues += _row_issues(
            not_session, dates, INDEX_SYMBOL, "not_a_session", "not an NYSE session"
        )
        keep &= ~not_session
    close = market["index_close"].to_numpy(dtype=np.float64)
    missing = ~np.isfinite(close)
    if missing.any():
        issues += _row_issues(
            missing, dates, INDEX_SYMBOL, "nan", "index close is missing or not finite"
        )
        keep &= ~missing
    with np.errstate(invalid="ignore"):
        nonpos = close <= 0
    if nonpos.any():
        issues += _row_issues(
            nonpos, dates, INDEX_SYMBOL, "non_positive", "index close={0} <= 0", [close]
        )
        keep &= ~nonpos

    # Rows kept, in date order (stable, so the first of duplicates wins).
    order = np.flatnonzero(keep)
    order = order[np.argsort(days[order], kind="stable")]
    reordered = order.size != n or bool((order != np.arange(n)).any())
    if reordered:
        market = market.iloc[order]
        closes = md.closes.iloc[order]
        ohlcv = None if md.ohlcv is None else {k: v.iloc[order] for k, v in md.ohlcv.items()}
        dates = dates[order]
    else:
        closes, ohlcv = md.closes, md.ohlcv

    # --- cell rules
    cell_issues, blank = _check_market_cells(market, dates)
    issues += cell_issues
    bar_issues, bad_bars = _check_matrix_frames(closes, ohlcv, dates)
    issues += bar_issues

    # --- calendar gaps: sessions with no index row (rows dropped above are already reported)
    reported = {i.date for i in issues if i.symbol == INDEX_SYMBOL}
    if len(sessions):
        gaps = sessions.difference(pd.DatetimeIndex(market.index))
        issues += [
            DataIssue(INDEX_SYMBOL, d, "calendar_gap", "NYSE session missing from the index series")
            for d in gaps.date
            if d not in reported
        ]

    sectors = md.sectors
    unknown = ~sectors.isin(GICS_SECTORS)
    if unknown.any():
        issues += [
            DataIssue(str(sym), None, "unknown_sector", f"sector {sec!r} is not a GICS sector")
            for sym, sec in sectors[unknown].items()
        ]
        sectors = sectors[~unknown]

    _raise_or_keep(issues, quarantine, md.source)
    if not issues:
        return md, []

    if blank:
        market = market.copy()
        for name, m in blank.items():
            market.loc[m, name] = np.nan
    if bad_bars is not None:
        closes = closes.mask(bad_bars)
        if ohlcv is not None:
            ohlcv = {k: v.mask(bad_bars) for k, v in ohlcv.items()}
    cleaned = MarketData(
        market=market, closes=closes, ohlcv=ohlcv, sectors=sectors, source=md.source
    )
    return cleaned, issues


# ------------------------------------------------------------------------------------------------
# Raw long-format bars (files)

BAR_PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close")


def validate_bars(
    bars: pd.DataFrame, *, quarantine: bool = False, context: str = "bars"
) -> tuple[pd.DataFrame, list[DataIssue]]:
    """Row rules over long-format bars (columns ``date`` (datetime64), ``symbol`` and numeric
    ``open high low close adj_close volume``, each optional but ``close``).

    Returns the bars sorted by (symbol, date) without the bad rows (quarantine) or raises.
    Macro series (UST10Y, UST2Y, BAA_AAA) skip price and session rules: yields may be published
    on days the stock market is closed, monthly series are dated by their month."""
    df = bars.reset_index(drop=True)
    n = len(df)
    issues: list[DataIssue] = []
    drop = np.zeros(n, dtype=bool)
    sym = df["symbol"].astype(str).to_numpy()
    dts = pd.DatetimeIndex(df["date"])
    dates = _dates_of(dts)
    is_macro = np.isin(sym, list(MACRO_SYMBOLS))
    is_vix = sym == VIX_SYMBOL

    def emit(mask: np.ndarray, rule: str, detail: str, values: Sequence[np.ndarray] = ()) -> None:
        rows = np.flatnonzero(mask)
        picked = [v[rows] for v in values]
        issues.extend(
            DataIssue(sym[r], dates[r], rule, detail.format(*(p[k] for p in picked)))
            for k, r in enumerate(rows.tolist())
        )

    cols = {k: df[k].to_numpy(dtype=np.float64) for k in (*BAR_PRICE_COLUMNS, "volume") if k in df}
    close = cols["close"]
    m = np.isnan(close)
    emit(m, "nan", "close is missing")
    drop |= m
    for name, a in cols.items():
        m = np.isinf(a)
        emit(m, "nan", f"{name} is not finite")
        drop |= m
    with np.errstate(invalid="ignore"):
        for name in BAR_PRICE_COLUMNS:
            if name in cols:
                m = (cols[name] <= 0) & ~is_macro
                emit(m, "non_positive", f"{name}={{0}} <= 0", [cols[name]])
                drop |= m
        if "volume" in cols:
            m = cols["volume"] < 0
            emit(m, "negative_volume", "volume={0} < 0", [cols["volume"]])
            drop |= m
    stock_like = ~is_macro & ~is_vix
    o, h, lo = cols.get("open"), cols.get("high"), cols.get("low")
    nan = np.full(n, np.nan)
    vals = [x if x is not None else nan for x in (o, h, lo, close)]
    for rule, m in _ohlc_masks(o, h, lo, close).items():
        m &= stock_like
        emit(m, rule, _OHLC_DETAIL[rule], vals)
        drop |= m

    dup = df.duplicated(["symbol", "date"], keep="first").to_numpy()
    emit(dup, "duplicate_date", "(symbol, date) appears more than once")
    drop |= dup
    # Out of order inside a symbol: earlier than the running max of that symbol's earlier rows.
    running = df.groupby("symbol", sort=False)["date"].cummax()
    prev = running.groupby(df["symbol"], sort=False).shift()
    unsorted = (df["date"] < prev).to_numpy()
    emit(unsorted, "unsorted_dates", "date earlier than a previous row of the same symbol")

    if n:
        check = ~is_macro
        sessions = calendar.sessions(dts.min(), dts.max())
        m = check & ~np.asarray(dts.isin(sessions))
        emit(m, "not_a_session", "not an NYSE session")
        drop |= m

    _raise_or_keep(issues, quarantine, context)
    out = df[~drop] if drop.any() else df
    return out.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True), issues
