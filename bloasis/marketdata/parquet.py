"""The bars store: a Parquet dataset directory, written by `bloasis data import` and read by the
universe source ``parquet:DIR`` (`ParquetSource`).

Layout (format version 1)::

    DIR/bars.parquet     symbol (dictionary), date (date32), then per field a float64 column:
                         open high low close volume (raw, when the data has OHLCV) and
                         adj_close (when it differs from close, or when there is no OHLCV)
    DIR/market.parquet   date + `MARKET_COLUMNS` (the point-in-time market frame as loaded)
    DIR/symbols.parquet  symbol, sector (null when unknown)

`bars.parquet` is a dense panel sorted by (symbol, date): every symbol has one row per session
(NaN where it has no bar, e.g. before it lists), in row groups of whole symbols. Any Parquet
reader can query it as a long table; this reader exploits the order: each field column is the
(symbols x sessions) matrix in row-major order, so it is copied row group by row group into the
preallocated matrix (no pivot, no sort, one copy), and the transpose is a free view. Why not
PostgreSQL COPY or CSV: 12.6 M rows x 5 fields (5,000 symbols x 10 years) read in ~1 s this
way, while COPY and CSV parse text row by row (see ``bench/pipeline_scale.py``, `data_load`).

The loader checks the layout (row count, symbol blocks, dates) and then validates the data with
the same rules as every other source (`bloasis.marketdata.validate.validate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bloasis.marketdata.sources import DayLike, _cut_end, _cut_start, warn_quarantined
from bloasis.marketdata.types import (
    MARKET_COLUMNS,
    OHLCV_FIELDS,
    DataFormatError,
    DataIssue,
    MarketData,
)
from bloasis.marketdata.validate import validate

FORMAT_VERSION = 1
BARS_FILE, MARKET_FILE, SYMBOLS_FILE = "bars.parquet", "market.parquet", "symbols.parquet"
_META_KEY = b"bloasis"
# Symbols per row group: ~2,500 sessions x 256 symbols = 640k rows, a few MB per column chunk.
_SYMBOLS_PER_GROUP = 256


def _fields_of(md: MarketData) -> list[str]:
    """Bar columns stored for `md` (adj_close only when it carries information)."""
    if md.ohlcv is None:
        return ["adj_close"]
    fields = [f for f in OHLCV_FIELDS if f in md.ohlcv]
    close = md.ohlcv.get("close")
    same = close is not None and (
        close is md.closes or np.array_equal(close.to_numpy(), md.closes.to_numpy(), equal_nan=True)
    )
    return fields if same else [*fields, "adj_close"]


def write_parquet(md: MarketData, out: Path | str) -> Path:
    """Write `md` as a bars store in directory `out` (created; existing store files replaced)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sessions = md.index
    t_n, n = md.closes.shape
    fields = _fields_of(md)
    matrices = {
        f: (md.closes if f == "adj_close" else md.ohlcv[f]).to_numpy(dtype=np.float64)  # type: ignore[index]
        for f in fields
    }
    days = sessions.values.astype("datetime64[D]")
    symbols = pa.array(md.symbols, type=pa.string())
    meta = {
        "format_version": FORMAT_VERSION,
        "sessions": t_n,
        "symbols": n,
        "fields": fields,
        "source": md.source,
    }
    schema = pa.schema(
        [
            ("symbol", pa.dictionary(pa.int32(), pa.string())),
            ("date", pa.date32()),
            *[(f, pa.float64()) for f in fields],
        ],
        metadata={_META_KEY: json.dumps(meta).encode()},
    )
    with pq.ParquetWriter(out / BARS_FILE, schema, compression="snappy") as w:
        for lo in range(0, n, _SYMBOLS_PER_GROUP):
            hi = min(n, lo + _SYMBOLS_PER_GROUP)
            codes = np.repeat(np.arange(lo, hi, dtype=np.int32), t_n)
            cols: dict[str, Any] = {
                "symbol": pa.DictionaryArray.from_arrays(pa.array(codes), symbols),
                "date": pa.array(np.tile(days, hi - lo), type=pa.date32()),
            }
            for f, m in matrices.items():
                # Symbol-major: the transpose of the block, flattened.
                cols[f] = pa.array(np.ascontiguousarray(m[:, lo:hi].T).ravel())
            w.write_table(pa.table(cols, schema=schema), row_group_size=t_n * (hi - lo))
    market = md.market.reset_index(names="date")
    market["date"] = market["date"].to_numpy().astype("datetime64[D]")
    pq.write_table(pa.Table.from_pandas(market, preserve_index=False), out / MARKET_FILE)
    sectors = md.sectors.reindex(md.symbols)
    pq.write_table(
        pa.table(
            {
                "symbol": pa.array(md.symbols, type=pa.string()),
                "sector": pa.array([None if pd.isna(s) else str(s) for s in sectors], pa.string()),
            }
        ),
        out / SYMBOLS_FILE,
    )
    return out


class ParquetSource:
    """`MarketDataSource` over a bars store directory (see the module docstring).

    Validated on load with the rules of `validate`: any issue raises `DataValidationError`, or
    with ``quarantine=True`` bad bars are blanked, a `DataQualityWarning` is emitted and the
    issues are kept in `issues`."""

    def __init__(self, path: Path | str, quarantine: bool = False) -> None:
        self.path = Path(path)
        self.quarantine = quarantine
        self.issues: list[DataIssue] = []

    def _fail(self, problem: str) -> DataFormatError:
        return DataFormatError(f"parquet:{self.path}: {problem}")

    def read(self, end: DayLike | None = None) -> MarketData:
        """The stored data up to `end`, not validated (`load` validates)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        d = self.path
        if not d.is_dir():
            raise FileNotFoundError(
                f"bars store not found: {d} is not a directory (BLOASIS_UNIVERSE=parquet:DIR; "
                "write one with `bloasis data import --out DIR`)"
            )
        for name in (BARS_FILE, MARKET_FILE, SYMBOLS_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(f"bars store {d}: {name} is missing")
        try:
            market_t = pq.read_table(d / MARKET_FILE)
            symbols_t = pq.read_table(d / SYMBOLS_FILE)
            bars = pq.ParquetFile(d / BARS_FILE)
        except (pa.ArrowException, OSError) as exc:
            raise self._fail(f"cannot be read as Parquet: {exc}") from exc
        raw_meta = (bars.schema_arrow.metadata or {}).get(_META_KEY)
        if raw_meta is None:
            raise self._fail(f"{BARS_FILE} has no bloasis metadata (not written by data import)")
        meta = json.loads(raw_meta)
        if meta.get("format_version") != FORMAT_VERSION:
            raise self._fail(
                f"format version {meta.get('format_version')}, expected {FORMAT_VERSION}"
            )

        market_df = market_t.to_pandas()
        missing = [c for c in ("date", *MARKET_COLUMNS) if c not in market_df.columns]
        if missing:
            raise self._fail(f"{MARKET_FILE} lacks column(s) {', '.join(missing)}")
        days = market_df["date"].to_numpy().astype("datetime64[D]")
        sessions = pd.DatetimeIndex(days, name="date").as_unit("ns")
        symbols = [str(s) for s in symbols_t.column("symbol").to_pylist()]
        t_n, n = len(sessions), len(symbols)
        fields: list[str] = list(meta.get("fields", []))
        if (meta.get("sessions"), meta.get("symbols")) != (t_n, n):
            raise self._fail(
                f"{BARS_FILE} was written for {meta.get('symbols')} symbols x "
                f"{meta.get('sessions')} sessions, the store lists {n} x {t_n}"
            )
        schema = bars.schema_arrow
        absent = [c for c in ("symbol", "date", *fields) if c not in schema.names]
        if absent or not pa.types.is_dictionary(schema.field("symbol").type):
            raise self._fail(
                f"{BARS_FILE} lacks column(s) {', '.join(absent)}"
                if absent
                else f"{BARS_FILE}: column symbol is not dictionary-encoded"
            )
        if bars.metadata.num_rows != t_n * n:
            raise self._fail(f"{BARS_FILE} has {bars.metadata.num_rows} rows, expected {n * t_n}")
        stop = _cut_end(sessions, end)

        # (symbols x sessions) C-order buffers: each row group is a contiguous block of rows.
        mats = {f: np.empty((n, t_n), dtype=np.float64) for f in fields}
        row = 0
        for g in range(bars.num_row_groups):
            try:
                tab = bars.read_row_group(g, columns=["symbol", "date", *fields])
            except (pa.ArrowException, OSError) as exc:
                raise self._fail(f"row group {g} cannot be read: {exc}") from exc
            k = tab.num_rows // t_n if t_n else 0
            if k * t_n != tab.num_rows:
                raise self._fail(f"row group {g} does not hold whole symbols")
            codes = tab.column("symbol").combine_chunks()
            got = np.asarray(codes.indices).reshape(k, t_n)
            names = codes.dictionary.to_pylist()
            want = np.arange(row, row + k)
            if not (
                all(names[i] == symbols[j] for i, j in zip(got[:, 0], want, strict=True))
                and (got == got[:, :1]).all()
            ):
                raise self._fail(f"row group {g}: rows are not in (symbol, date) order")
            dts = tab.column("date").to_numpy().reshape(k, t_n)
            if not (dts == days[None, :]).all():
                raise self._fail(f"row group {g}: dates differ from {MARKET_FILE}'s sessions")
            for f in fields:
                mats[f][row : row + k] = tab.column(f).to_numpy().reshape(k, t_n)
            row += k

        cols = pd.Index(symbols, name="symbol", dtype=str)
        idx = sessions[:stop]

        def frame(m: np.ndarray) -> pd.DataFrame:
            # The transpose of a C-order (symbols x sessions) buffer: pandas' own block layout.
            return pd.DataFrame(m.T[:stop], index=idx, columns=cols, copy=False)

        ohlcv = {f: frame(mats[f]) for f in OHLCV_FIELDS if f in mats} or None
        if "adj_close" in mats:
            closes = frame(mats["adj_close"])
        elif ohlcv is not None and "close" in ohlcv:
            closes = ohlcv["close"]
        else:
            raise self._fail(f"{BARS_FILE} has neither adj_close nor close")
        market = market_df.drop(columns="date").set_axis(sessions).iloc[:stop]
        market = market[list(MARKET_COLUMNS)].astype({"vix_is_proxy": bool})
        known = symbols_t.column("sector").to_pylist()
        sec = [(s, v) for s, v in zip(symbols, known, strict=True) if v]
        sectors = pd.Series(
            [v for _, v in sec],
            index=pd.Index([s for s, _ in sec], name="symbol", dtype=str),
            name="sector",
            dtype=str,
        )
        return MarketData(
            market=market, closes=closes, ohlcv=ohlcv, sectors=sectors, source=f"parquet:{d}"
        )

    def load(self, start: DayLike | None = None, end: DayLike | None = None) -> MarketData:
        md, self.issues = validate(self.read(end), quarantine=self.quarantine)
        warn_quarantined(md.source, self.issues)
        return _cut_start(md, start)
