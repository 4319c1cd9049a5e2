"""Core market-data types: `MarketData`, the `MarketDataSource` protocol and validation errors.

Every frame in a `MarketData` shares one index: tz-naive, normalized NYSE session dates, sorted and
unique, named ``date``. All values are point in time: the row for day D holds only what had been
published on or before D, so truncating with `MarketData.as_of` is all a consumer needs to do to
avoid look-ahead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

GICS_SECTORS: tuple[str, ...] = (
    "Information Technology",
    "Financials",
    "Consumer Discretionary",
    "Energy",
    "Industrials",
    "Health Care",
    "Consumer Staples",
    "Materials",
    "Communication Services",
    "Utilities",
    "Real Estate",
)

# Columns of `MarketData.market`, in order. Yields and the credit spread are in percent.
MARKET_COLUMNS: tuple[str, ...] = (
    "index_close",
    "index_open",
    "index_high",
    "index_low",
    "index_volume",
    "vix",
    "vix_is_proxy",
    "ust10y",
    "ust2y",
    "credit_spread",
)

OHLCV_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")

# Row chunk used when hashing big matrices, so hashing never copies a whole 100 MB matrix.
_HASH_CHUNK = 512


class DataValidationError(ValueError):
    """Market data broke a validation rule; `issues` lists every problem found."""

    def __init__(self, message: str, issues: list[DataIssue]) -> None:
        super().__init__(message)
        self.issues = issues


class DataFormatError(ValueError):
    """A market-data file cannot be read (missing column, unparseable date or number...).

    The message names the file and the problem."""


@dataclass(frozen=True)
class DataIssue:
    """One problem found by validation.

    `symbol` is a ticker, or a reserved market-series name (``^SPX`` for the index series and the
    session index itself, ``^VIX``, ``UST10Y``, ``UST2Y``, ``BAA_AAA``). `date` is None for issues
    that are not tied to a day (e.g. an unknown sector)."""

    symbol: str
    date: date | None
    rule: str
    detail: str

    def __str__(self) -> str:
        day = self.date.isoformat() if self.date is not None else "-"
        return f"{self.symbol} {day} [{self.rule}] {self.detail}"


def to_timestamp(d: date | datetime | pd.Timestamp | str) -> pd.Timestamp:
    """Normalize a day-like value to a tz-naive midnight Timestamp (how every index is stored)."""
    ts = pd.Timestamp(d)
    if ts.tzinfo is not None:
        raise ValueError(f"expected a tz-naive date, got {d!r}")
    return ts.normalize()


@dataclass(frozen=True, eq=False, repr=False)
class MarketData:
    """Daily market data, point in time, aligned on NYSE sessions.

    market: index series and macro series, columns `MARKET_COLUMNS` (NaN where unknown).
    closes: dates x symbols adjusted closes (NaN before a symbol's first bar / after its last).
    ohlcv:  optional per-field dates x symbols matrices (`OHLCV_FIELDS`; unadjusted), or None.
    sectors: symbol -> GICS sector name (symbols without a known sector are absent).
    source: where it came from, e.g. ``embedded``, ``csv:/path``, ``synthetic(seed=1,n=5,years=2)``.

    Treat the frames as read-only: slices share memory and `snapshot_hash` is memoized.
    """

    market: pd.DataFrame
    closes: pd.DataFrame
    ohlcv: dict[str, pd.DataFrame] | None
    sectors: pd.Series
    source: str
    # Lazily computed hash (a list so the frozen instance can memoize it).
    _hash: list[str] = field(default_factory=list, init=False, repr=False)

    def __repr__(self) -> str:
        # Compact: the default repr would print every frame.
        n = len(self.market)
        span = f"{self.index[0].date()}..{self.index[-1].date()}" if n else "empty"
        fields = "none" if self.ohlcv is None else ",".join(self.ohlcv)
        return (
            f"MarketData(source={self.source!r}, sessions={n} [{span}], "
            f"symbols={self.closes.shape[1]}, ohlcv={fields})"
        )

    @property
    def index(self) -> pd.DatetimeIndex:
        idx = self.market.index
        assert isinstance(idx, pd.DatetimeIndex)
        return idx

    @property
    def symbols(self) -> list[str]:
        return [str(c) for c in self.closes.columns]

    @property
    def first_date(self) -> date:
        if len(self.market) == 0:
            raise ValueError(f"no market data loaded from {self.source}")
        return self.index[0].date()

    @property
    def last_date(self) -> date:
        if len(self.market) == 0:
            raise ValueError(f"no market data loaded from {self.source}")
        return self.index[-1].date()

    def as_of(self, d: date | datetime | pd.Timestamp | str) -> MarketData:
        """Rows on or before `d` only. Slicing (no copy), because every row is already point in
        time: nothing in row D depends on data after D."""
        n = int(self.index.searchsorted(to_timestamp(d), side="right"))
        return self._slice(0, n)

    def between(
        self, start: date | pd.Timestamp | str | None, end: date | pd.Timestamp | str | None
    ) -> MarketData:
        """Rows in [start, end] (either bound optional)."""
        lo = 0 if start is None else int(self.index.searchsorted(to_timestamp(start), "left"))
        hi = (
            len(self.index)
            if end is None
            else int(self.index.searchsorted(to_timestamp(end), "right"))
        )
        return self._slice(lo, max(lo, hi))

    def _slice(self, lo: int, hi: int) -> MarketData:
        if lo == 0 and hi == len(self.index):
            return self
        ohlcv = None if self.ohlcv is None else {k: v.iloc[lo:hi] for k, v in self.ohlcv.items()}
        return MarketData(
            market=self.market.iloc[lo:hi],
            closes=self.closes.iloc[lo:hi],
            ohlcv=ohlcv,
            sectors=self.sectors,
            source=self.source,
        )

    def snapshot_hash(self) -> str:
        """sha256 hex of the loaded content (index, columns, values, sectors; not `source`).

        NaNs are canonicalized first: different NaN bit patterns must not change the hash."""
        if not self._hash:
            h = hashlib.sha256(b"bloasis-marketdata-v1\0")
            _hash_frame(h, "market", self.market)
            _hash_frame(h, "closes", self.closes)
            if self.ohlcv is not None:
                for name in sorted(self.ohlcv):
                    _hash_frame(h, f"ohlcv.{name}", self.ohlcv[name])
            sectors = "\n".join(f"{k}={v}" for k, v in self.sectors.items())
            h.update(b"sectors\0" + sectors.encode())
            self._hash.append(h.hexdigest())
        return self._hash[0]


def _index_days(idx: pd.Index) -> np.ndarray:
    # Days since epoch: independent of the index's datetime resolution (ns vs us).
    return np.asarray(idx.values.astype("datetime64[D]").astype(np.int64))


_F8 = np.dtype("<f8")
_NAN_BITS = np.array(np.nan, dtype="<f8").view(np.uint64)  # what `chunk[nan] = np.nan` writes


def _canonical_chunks(a: np.ndarray) -> Iterator[bytes | memoryview]:
    """Yield the bytes of `a` (1-D, or 2-D hashed column by column) with NaNs canonicalized."""
    if a.dtype == np.bool_:
        yield np.ascontiguousarray(a, dtype=np.uint8).tobytes()
        return
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    t = a.T  # symbol-major: a view (no copy) for the usual column-block layout
    for i in range(0, t.shape[0], _HASH_CHUNK):
        block = t[i : i + _HASH_CHUNK]
        nan = np.isnan(block)
        if (
            block.flags.c_contiguous
            and block.dtype == _F8
            and (not nan.any() or bool((block.view(np.uint64)[nan] == _NAN_BITS).all()))
        ):
            # Already the canonical bytes (the layout the bars store loads into): hashed in
            # place, no copy (the hash objects take any C-contiguous buffer).
            yield block.data
            continue
        chunk = np.array(block, dtype="<f8", order="C")
        chunk[nan] = np.nan
        yield chunk.data


def _hash_frame(h: hashlib._Hash, name: str, df: pd.DataFrame) -> None:
    h.update(f"{name}\0{df.shape}\0".encode())
    h.update("\0".join(str(c) for c in df.columns).encode() + b"\0")
    h.update(_index_days(df.index).tobytes())
    dtypes = {str(t) for t in set(df.dtypes)}  # str() once per distinct dtype, not per column
    if len(dtypes) == 1 and "bool" not in dtypes:
        for b in _canonical_chunks(df.to_numpy(dtype=np.float64)):
            h.update(b)
        return
    for col in df.columns:
        for b in _canonical_chunks(df[col].to_numpy()):
            h.update(b)


@runtime_checkable
class MarketDataSource(Protocol):
    """Anything that can load `MarketData` for a date range (bounds inclusive, None = all).

    Contract: ``load(end=D)`` equals ``load().as_of(D)``: a source computes every derived value
    (proxies, forward fills, publication lags) from data published on or before each row's date.
    """

    def load(self, start: date | None = None, end: date | None = None) -> MarketData: ...
