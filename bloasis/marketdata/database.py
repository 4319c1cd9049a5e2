"""`DatabaseSource`: market data read "as of D" from the point-in-time store in PostgreSQL
(`bloasis.store.marketdata`; its module docstring has the visibility rule).

A load as of D at knowledge time K (default ``min(now, knowledge_cutoff(D))``) sees, per
(symbol, session) and (series, date), the one version known at K. From those rows it builds
`MarketData` exactly as `EmbeddedSource` does from its arrays: the sessions are the visible
``^SPX`` bars, and `build_market_frame` applies the publication conventions (the VIX proxy where
no real VIX is stored, yields forward-filled from their publication day, the monthly credit
spread's lag), so those rules live in one place. With only the embedded vintage stored, a load
equals `EmbeddedSource().load(end=D)` (same `snapshot_hash`).

Reads are one binary COPY per table (bars, series) in one REPEATABLE READ snapshot, parsed with
a numpy record dtype and scattered into preallocated (symbols x sessions) matrices. The result
is validated like every source (`bloasis.marketdata.validate.validate`): any issue raises
`DataValidationError`, or with ``quarantine=True`` bad bars are dropped, a `DataQualityWarning`
is emitted and the issues are kept in `issues`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Final

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

from bloasis import calendar
from bloasis.marketdata.sources import (
    DayLike,
    PitParams,
    _cut_start,
    build_market_frame,
    warn_quarantined,
)
from bloasis.marketdata.types import (
    DataFormatError,
    DataIssue,
    DataValidationError,
    MarketData,
    to_timestamp,
)
from bloasis.marketdata.validate import INDEX_SYMBOL, VIX_SYMBOL, format_issues, validate
from bloasis.store import marketdata as store

SOURCE_NAME: Final = "database"
_VIX, _UST10, _UST2, _CREDIT = range(4)  # positions in store.READ_SERIES
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()

_NEWEST = text(
    "SELECT max(b.session) FROM md_bars b "
    "WHERE b.symbol_id = (SELECT id FROM md_symbols WHERE symbol = :s) "
    "AND b.superseded_at IS NULL"
)
_SYMBOLS = text("SELECT id, symbol, kind, sector FROM md_symbols")


def _sessions_index(days: np.ndarray) -> pd.DatetimeIndex:
    """Int days since 1970-01-01 -> the session index every frame shares."""
    return pd.DatetimeIndex(days.astype("datetime64[D]"), name="date").as_unit("ns")


def _day(days: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + days)


class DatabaseSource:
    """`MarketDataSource` over the PostgreSQL point-in-time store.

    symbols: the stocks to load (None: every stored stock), columns in symbol order.
    known_at: the knowledge time K of every load (None: ``min(now(), knowledge_cutoff(end))``).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        symbols: Sequence[str] | None = None,
        params: PitParams | None = None,
        known_at: datetime | None = None,
        quarantine: bool = False,
        now: Callable[[], datetime] = store.utc_now,
    ) -> None:
        if known_at is not None and known_at.tzinfo is None:
            raise ValueError(f"known_at must be timezone-aware, got {known_at!r}")
        self.engine = engine
        self.symbols = None if symbols is None else list(dict.fromkeys(symbols))
        self.params = params or PitParams()
        self.known_at = known_at
        self.quarantine = quarantine
        self.now = now
        self.issues: list[DataIssue] = []

    def newest_session(self) -> date | None:
        """The newest ``^SPX`` session stored (current versions, whatever their visibility)."""
        with self.engine.connect() as conn:
            return self._newest(conn)

    @staticmethod
    def _newest(conn: Connection) -> date | None:
        got = conn.execute(_NEWEST, {"s": INDEX_SYMBOL}).scalar()
        return got if isinstance(got, date) else None

    def knowledge_time(self, end: date) -> datetime:
        """K for a load as of `end`."""
        if self.known_at is not None:
            return self.known_at
        return min(self.now(), calendar.knowledge_cutoff(end))

    def load(self, start: DayLike | None = None, end: DayLike | None = None) -> MarketData:
        with self.engine.connect() as conn:
            # One snapshot for every read: an ingest committing in between cannot mix in.
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                md, extra = self._read(conn, end)
        context = SOURCE_NAME
        if extra and not self.quarantine:
            raise DataValidationError(format_issues(context, extra), extra)
        md, more = validate(md, quarantine=self.quarantine)
        self.issues = extra + more
        warn_quarantined(context, self.issues)
        return _cut_start(md, start)

    def _read(self, conn: Connection, end: DayLike | None) -> tuple[MarketData, list[DataIssue]]:
        if end is None:
            end_d = self._newest(conn)
            if end_d is None:
                raise DataFormatError(
                    f"{SOURCE_NAME}: no {INDEX_SYMBOL} bars stored (load history first, e.g. "
                    "bloasis.store.marketdata.load_embedded_vintage)"
                )
        else:
            end_d = to_timestamp(end).date()
        k = self.knowledge_time(end_d)

        ids, names, kinds, sectors = [], [], [], []
        # Python's order (not the database collation's): columns sorted like every source's.
        for i, s, kind, sec in sorted(conn.execute(_SYMBOLS).all(), key=lambda r: str(r[1])):
            ids.append(int(i))
            names.append(str(s))
            kinds.append(str(kind))
            sectors.append(sec)
        by_name = dict(zip(names, range(len(names)), strict=True))
        if INDEX_SYMBOL not in by_name:
            raise DataFormatError(f"{SOURCE_NAME}: no {INDEX_SYMBOL} bars stored")
        unknown: list[DataIssue] = []
        if self.symbols is None:
            stock_pos = [j for j, kind in enumerate(kinds) if kind == "stock"]
        else:
            # A requested symbol the store has never seen is a data issue (like a bad bar):
            # strict loads fail, quarantined ones go on without it.
            unknown = [
                DataIssue(s, None, "not_stored", "no bars stored for this symbol")
                for s in self.symbols
                if s not in by_name
            ]
            stored = [s for s in self.symbols if s in by_name]
            other = [s for s in stored if kinds[by_name[s]] != "stock"]
            if other:
                raise ValueError(f"{SOURCE_NAME}: not stock symbol(s) {', '.join(other)}")
            stock_pos = sorted(by_name[s] for s in stored)
        spx_id = ids[by_name[INDEX_SYMBOL]]
        stock_ids = [ids[j] for j in stock_pos]
        wanted = None if self.symbols is None else [spx_id, *stock_ids]
        bars = store.read_visible_bars(conn, end=end_d, known_at=k, symbol_ids=wanted)
        series = store.read_visible_series(conn, end=end_d, known_at=k)

        # --- the index: its visible bars are the sessions
        is_idx = bars.key == spx_id
        order = np.argsort(bars.day[is_idx], kind="stable")
        sess_days = bars.day[is_idx][order]
        if len(sess_days) == 0:
            raise DataFormatError(
                f"{SOURCE_NAME}: no {INDEX_SYMBOL} bars visible on or before {end_d} "
                f"(known at {k.isoformat()}): the index series is required"
            )
        sessions = _sessions_index(sess_days)
        index_bars = {
            f: bars.values[f][is_idx][order].astype(np.float64)
            for f in ("open", "high", "low", "close", "volume")
        }
        t_n = len(sess_days)
        # Day -> session row through a lookup table over the span (-1: not a loaded session).
        d0 = int(sess_days[0])
        lut = np.full(int(sess_days[-1]) - d0 + 1, -1, dtype=np.int64)
        lut[sess_days - d0] = np.arange(t_n)

        def rows_of(days: np.ndarray) -> np.ndarray:
            off = days - d0
            inside = (off >= 0) & (off < len(lut))
            out = np.full(len(days), -1, dtype=np.int64)
            out[inside] = lut[off[inside]]
            return out

        # --- stocks: scattered into (symbols x sessions) buffers (their transposes are the
        # frames, pandas' own column-block layout: no copy)
        cols = pd.Index([names[j] for j in stock_pos], name="symbol", dtype=str)
        n = len(stock_pos)
        col_of = np.full(max(ids) + 1, -1, dtype=np.int64)
        col_of[np.asarray(stock_ids, dtype=np.int64)] = np.arange(n)
        c_all = col_of[bars.key]  # -1 for the index and other index-kind symbols
        r_all = rows_of(bars.day)
        stray = (c_all >= 0) & (r_all < 0)
        issues = unknown + [
            DataIssue(cols[j], _day(d), "not_in_index", f"no {INDEX_SYMBOL} row for this date")
            for j, d in zip(c_all[stray].tolist(), bars.day[stray].tolist(), strict=True)
        ]
        sel = np.flatnonzero((c_all >= 0) & (r_all >= 0))
        flat = c_all[sel] * t_n + r_all[sel]

        def matrix(f: str) -> np.ndarray:
            m = np.full(n * t_n, np.nan)
            m[flat] = bars.values[f][sel]
            return m.reshape(n, t_n)

        def frame(m: np.ndarray) -> pd.DataFrame:
            return pd.DataFrame(m.T, index=sessions, columns=cols, copy=False)

        adj = matrix("adj_close")
        closes = frame(adj)
        ohlcv = None
        if any(np.isfinite(bars.values[f][sel]).any() for f in ("open", "high", "low", "volume")):
            raw_close = bars.values["close"][sel]
            same = np.array_equal(raw_close, bars.values["adj_close"][sel], equal_nan=True)
            ohlcv = {
                f: closes if f == "close" and same else frame(matrix(f))
                for f in ("open", "high", "low", "close", "volume")
            }

        # --- series
        def obs(code: int) -> tuple[np.ndarray, np.ndarray]:
            mine = series.key == code
            o = np.argsort(series.day[mine], kind="stable")
            return series.day[mine][o], series.values["value"][mine][o].astype(np.float64)

        vix_days, vix_vals = obs(_VIX)
        pos = rows_of(vix_days)
        ok = pos >= 0
        issues += [
            DataIssue(VIX_SYMBOL, _day(d), "not_in_index", f"no {INDEX_SYMBOL} row for this date")
            for d in vix_days[~ok].tolist()
        ]
        vix_real = np.full(t_n, np.nan)
        vix_real[pos[ok]] = vix_vals[ok]
        # Yields published on or before the last session (as `EmbeddedSource` cuts them).
        last = sess_days[-1]
        u10_days, u10 = obs(_UST10)
        u2_days, u2 = obs(_UST2)
        ust_days = np.union1d(u10_days[u10_days <= last], u2_days[u2_days <= last])

        def on_ust(d: np.ndarray, v: np.ndarray) -> np.ndarray:
            out = np.full(len(ust_days), np.nan)
            p = np.searchsorted(ust_days, d)
            hit = p < len(ust_days)
            hit[hit] = ust_days[p[hit]] == d[hit]
            out[p[hit]] = v[hit]
            return out

        credit_days, credit = obs(_CREDIT)
        market = build_market_frame(
            sessions,
            index_bars,
            vix_real,
            ust_days,
            on_ust(u10_days, u10),
            on_ust(u2_days, u2),
            credit_days,
            credit,
            self.params,
        )
        known = [(names[j], sectors[j]) for j in stock_pos if sectors[j]]
        sector_s = pd.Series(
            [str(v) for _, v in known],
            index=pd.Index([s for s, _ in known], name="symbol", dtype=str),
            name="sector",
            dtype=str,
        )
        md = MarketData(
            market=market, closes=closes, ohlcv=ohlcv, sectors=sector_s, source=SOURCE_NAME
        )
        return md, issues
