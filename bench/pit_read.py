"""pit_read: loading a universe "as of D" from the PostgreSQL point-in-time store
(`DatabaseSource.load`: one binary COPY per table with the visibility predicate, the market frame,
validation), against the Parquet bars store (`ParquetSource.read` of the same universe written by
`write_parquet`), in the same run, medians over a few rounds.

Setup (not timed): a private embedded stack; `SyntheticSource(N, 10, seed)` (full: 500 symbols x
10 years, 1.26 M bars with OHLCV) written into the store as a vintage with `write_bars` (its
write time is reported, not a target), the index bars and the market series likewise, then ~1%
of the bars revised once (ingested later: the read as of D must skip the revisions and keep the
superseded versions, so the predicate does real work). Checks: the store's closes as of D equal
the Parquet store's; a read at a knowledge time after the revisions differs exactly at the
revised bars.

    python -m bench.pit_read [--size tiny|quick|full]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from bench.common import bench_stack, entry, say, size_main

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from bloasis.config import Settings
    from bloasis.marketdata import MarketData

SEED: Final = 7
YEARS: Final = 10
REVISED_SHARE: Final = 0.01
TARGET_S: Final = 3.0
# size -> (symbols, timed rounds)
SIZES: Final = {"tiny": (50, 3), "quick": (200, 3), "full": (500, 5)}


def bars_frame(md: MarketData, source: str = "synthetic") -> pd.DataFrame:
    """`md`'s stock bars in `write_bars`' long format (symbol-major, bars only where a close
    exists), plus the index bars (``^SPX``)."""
    from bloasis.marketdata.validate import INDEX_SYMBOL

    assert md.ohlcv is not None
    t_n, n = md.closes.shape
    days = md.index.values.astype("datetime64[D]")
    long = pd.DataFrame(
        {
            "symbol": np.repeat(np.asarray(md.symbols, dtype=object), t_n),
            "session": np.tile(days, n),
            **{f: md.ohlcv[f].to_numpy().T.ravel() for f in ("open", "high", "low", "close")},
            "adj_close": md.closes.to_numpy().T.ravel(),
            "volume": md.ohlcv["volume"].to_numpy().T.ravel(),
        }
    )
    long = long[np.isfinite(long["adj_close"].to_numpy())]
    m = md.market
    index = pd.DataFrame(
        {
            "symbol": INDEX_SYMBOL,
            "session": days,
            "open": m["index_open"].to_numpy(),
            "high": m["index_high"].to_numpy(),
            "low": m["index_low"].to_numpy(),
            "close": m["index_close"].to_numpy(),
            "adj_close": m["index_close"].to_numpy(),
            "volume": m["index_volume"].to_numpy(),
        }
    )
    out = pd.concat([index, long], ignore_index=True)
    out["source"] = source
    return out


def series_frame(md: MarketData, source: str = "synthetic") -> pd.DataFrame:
    """The market series of `md` as store observations (real VIX only, yields by session, the
    credit spread by month)."""
    from bloasis.marketdata.sources import credit_months_of

    m = md.market
    days = md.index.values.astype("datetime64[D]")
    parts = []
    real_vix = ~m["vix_is_proxy"].to_numpy(dtype=bool)
    for name, col, keep in (
        ("VIX", "vix", real_vix),
        ("UST10Y", "ust10y", None),
        ("UST2Y", "ust2y", None),
    ):
        v = m[col].to_numpy(dtype=np.float64)
        ok = np.isfinite(v) if keep is None else keep & np.isfinite(v)
        parts.append(pd.DataFrame({"series": name, "obs_date": days[ok], "value": v[ok]}))
    credit = credit_months_of(md)
    parts.append(
        pd.DataFrame(
            {
                "series": "BAA_AAA",
                "obs_date": credit.index.values.astype("datetime64[D]"),
                "value": credit.to_numpy(),
            }
        )
    )
    out = pd.concat(parts, ignore_index=True)
    out["source"] = source
    return out


def load_store(engine: Engine, md: MarketData, vintage_at: datetime) -> tuple[float, int]:
    """`md` into the store as a vintage ingested at `vintage_at`; (write seconds of the bars,
    bar rows)."""
    from bloasis.store import marketdata as store

    bars = bars_frame(md)
    series = series_frame(md)
    with engine.begin() as conn:
        iid = store.begin_ingest(conn, kind="vintage", source="synthetic", params={})
        store.upsert_symbols(
            conn,
            [store.SymbolInfo(str(s), "stock", None, str(sec)) for s, sec in md.sectors.items()],
        )
        t = time.perf_counter()
        b = store.write_bars(conn, bars, ingest_id=iid, ingested_at=vintage_at)
        write_s = time.perf_counter() - t
        s = store.write_series(conn, series, ingest_id=iid, ingested_at=vintage_at)
        store.finish_ingest(
            conn, iid, status="completed", result={"bars": b.summary(), "series": s.summary()}
        )
    if b.inserted != len(bars):
        raise AssertionError(f"vintage inserted {b.inserted} of {len(bars)} bars")
    return write_s, len(bars)


def revise(
    engine: Engine, md: MarketData, share: float, at: datetime, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Revise `share` of the stock bars once (close and adj_close moved to the middle of the
    bar's range, which stays a valid bar), ingested at `at`; returns the revised cells
    (session rows, symbol columns)."""
    from bloasis.store import marketdata as store

    assert md.ohlcv is not None
    rng = np.random.default_rng(seed)
    high, low = md.ohlcv["high"].to_numpy(), md.ohlcv["low"].to_numpy()
    mid = (high + low) / 2
    close = md.closes.to_numpy()
    # Clearly revised (far beyond the store's rel_tol of 1e-6).
    cand_r, cand_c = np.nonzero(np.isfinite(mid) & (np.abs(mid - close) > 1e-4 * np.abs(close)))
    k = max(1, int(share * len(cand_r)))
    pick = rng.choice(len(cand_r), size=k, replace=False)
    r, c = cand_r[pick], cand_c[pick]
    days = md.index.values.astype("datetime64[D]")
    frame = pd.DataFrame(
        {
            "symbol": np.asarray(md.symbols, dtype=object)[c],
            "session": days[r],
            **{f: md.ohlcv[f].to_numpy()[r, c] for f in ("open", "high", "low", "volume")},
            "close": mid[r, c],
            "adj_close": mid[r, c],
            "source": "synthetic-revised",
        }
    )
    with engine.begin() as conn:
        iid = store.begin_ingest(conn, kind="live", source="synthetic-revised", params={})
        out = store.write_bars(conn, frame, ingest_id=iid, ingested_at=at)
        store.finish_ingest(conn, iid, status="completed", result=out.summary())
    if out.revised != k:
        raise AssertionError(f"{out.revised} of {k} revisions stored")
    return r, c


def _median_time(fn: Any, rounds: int) -> tuple[float, Any]:
    times, got = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), got


def run(size: str = "full", settings: Settings | None = None) -> list[dict[str, Any]]:
    from bloasis.marketdata import SyntheticSource
    from bloasis.marketdata.database import DatabaseSource
    from bloasis.marketdata.parquet import ParquetSource, write_parquet
    from bloasis.store import marketdata as store
    from bloasis.store.db import engine_for

    n_symbols, rounds = SIZES[size]
    say(f"pit_read: generating {n_symbols} symbols x {YEARS} years...")
    md = SyntheticSource(n_symbols, YEARS, SEED).load()
    end = md.last_date
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bloasis-pit-") as tmp, bench_stack(settings) as s:
        engine = engine_for(s.require("database_url"))
        pq_dir = write_parquet(md, Path(tmp) / "store")
        # Vintage an hour ago, revisions a minute ago: both long after D's cut-off.
        now = datetime.now(UTC)
        say("pit_read: writing the vintage into the store...")
        write_s, rows = load_store(engine, md, now - timedelta(hours=1))
        say(f"pit_read: {rows} bars written in {write_s:.1f}s; revising {REVISED_SHARE:.0%}...")
        rev_r, rev_c = revise(engine, md, REVISED_SHARE, now - timedelta(minutes=1), SEED)
        db = DatabaseSource(engine)
        pq = ParquetSource(pq_dir)
        db.load(end=end)  # warm: imports, the calendar, the connection pool
        pq.read(end=end)
        db_s, got = _median_time(lambda: db.load(end=end), rounds)
        pq_s, want = _median_time(lambda: pq.read(end=end), rounds)
        pq_load_s, _ = _median_time(lambda: pq.load(end=end), rounds)
        k = db.knowledge_time(end)

        def copy_only() -> int:
            with engine.connect() as conn:
                return len(store.read_visible_bars(conn, end=end, known_at=k))

        copy_s, visible = _median_time(copy_only, rounds)
        equal = bool(
            np.array_equal(got.closes.to_numpy(), want.closes.to_numpy(), equal_nan=True)
            and list(got.closes.columns) == list(want.closes.columns)
            and got.index.equals(want.index)
        )
        # A read knowing the revisions sees them, and only them.
        later = DatabaseSource(engine, known_at=datetime.now(UTC)).load(end=end)
        a, b = later.closes.to_numpy(), md.closes.to_numpy()
        diff = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        dr, dc = np.nonzero(diff)
        revisions_seen = bool(
            len(dr) == len(rev_r)
            and set(zip(dr.tolist(), dc.tolist(), strict=True))
            == set(zip(rev_r.tolist(), rev_c.tolist(), strict=True))
        )
    say(
        f"pit_read: database {db_s:.3f}s, parquet read {pq_s:.3f}s (load {pq_load_s:.3f}s), "
        f"equal={equal}, revisions_seen={revisions_seen}"
    )
    out.append(
        entry(
            "pit_read",
            db_s,
            "s",
            compared_to="ParquetSource.read of the same universe (write_parquet; no point in"
            " time, no validation), same run",
            baseline_value=pq_s,
            target=f"<= {TARGET_S:g} s ({n_symbols} symbols x {YEARS} years)",
            met=bool(db_s <= TARGET_S and equal and revisions_seen),
            size=size,
            symbols=n_symbols,
            sessions=len(got.index),
            as_of=end.isoformat(),
            bar_versions_stored=rows + len(rev_r),
            bars_visible=visible,
            revised_bars=len(rev_r),
            measured="DatabaseSource.load(end=D): binary COPY per table with the visibility"
            " predicate, market frame, validation; median of"
            f" {rounds} after a warm-up",
            copy_and_parse_s=round(copy_s, 3),
            parquet_load_with_validation_s=round(pq_load_s, 3),
            closes_equal=equal,
            revisions_seen_after_their_ingest=revisions_seen,
            vintage_write_s=round(write_s, 2),
            vintage_rows=rows,
            vintage_rows_per_s=round(rows / write_s),
        )
    )
    return out


if __name__ == "__main__":
    size_main(__doc__, SIZES, run)
