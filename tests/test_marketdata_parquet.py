"""The bars store (`parquet:DIR`): written by `bloasis data import` / `write_parquet`, read back
equal to the data written (embedded and synthetic, whole and cut at an as-of), validated like
the other sources, and clear errors for a bad path or a damaged store."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bloasis.config import SettingsError, load_settings, universe_tag
from bloasis.marketdata import (
    DataFormatError,
    DataValidationError,
    EmbeddedSource,
    MarketData,
    SyntheticSource,
)
from bloasis.marketdata.parquet import BARS_FILE, ParquetSource, write_parquet
from bloasis.pipeline import load_market_data, load_market_data_with_issues


def assert_same(a: MarketData, b: MarketData) -> None:
    pd.testing.assert_frame_equal(a.market, b.market)
    pd.testing.assert_frame_equal(a.closes, b.closes)
    if a.ohlcv is None:
        assert b.ohlcv is None
    else:
        assert b.ohlcv is not None and set(a.ohlcv) == set(b.ohlcv)
        for k in a.ohlcv:
            pd.testing.assert_frame_equal(a.ohlcv[k], b.ohlcv[k])
    pd.testing.assert_series_equal(a.sectors.sort_index(), b.sectors.sort_index())
    assert a.snapshot_hash() == b.snapshot_hash()


@pytest.fixture(scope="module")
def synthetic() -> MarketData:
    return SyntheticSource(40, 2, seed=3).load()


def test_synthetic_round_trip_whole_and_as_of(synthetic: MarketData, tmp_path: Path) -> None:
    write_parquet(synthetic, tmp_path / "s")
    src = ParquetSource(tmp_path / "s")
    got = src.load()
    assert_same(synthetic, got)
    assert got.source == f"parquet:{tmp_path / 's'}" and src.issues == []
    # Closes are the raw closes (no adjustment): stored once, not twice.
    assert "adj_close" not in pq.read_schema(tmp_path / "s" / BARS_FILE).names
    mid = synthetic.index[300].date()
    assert_same(synthetic.as_of(mid), ParquetSource(tmp_path / "s").load(end=mid))
    start = synthetic.index[100].date()
    assert_same(synthetic.between(start, mid), ParquetSource(tmp_path / "s").load(start, mid))


def test_embedded_round_trip_through_the_universe_setting(tmp_path: Path) -> None:
    md = EmbeddedSource().load()
    write_parquet(md, tmp_path / "e")
    got = load_market_data(None, f"parquet:{tmp_path / 'e'}")
    assert_same(md, got)
    assert got.ohlcv is None  # closes only, like the embedded data
    assert_same(
        md.as_of(date(2008, 10, 15)),
        load_market_data(date(2008, 10, 15), f"parquet:{tmp_path / 'e'}"),
    )


def test_cli_data_import_writes_a_store_the_pipeline_reads(tmp_path: Path) -> None:
    from bloasis.cli import main

    assert (
        main(["data", "import", "--universe", "synthetic:25:5:1", "--out", str(tmp_path / "c")])
        == 0
    )
    assert_same(SyntheticSource(25, 1, seed=5).load(), ParquetSource(tmp_path / "c").load())
    # The store's results live under their own model version namespace (path-derived tag).
    assert universe_tag(f"parquet:{tmp_path / 'c'}").startswith("parquet:c:")


def test_bad_path_and_bad_setting_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"bars store not found: .*nowhere.*BLOASIS_UNIVERSE=parquet:DIR"
    ):
        ParquetSource(tmp_path / "nowhere").load()
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match=r"half: bars\.parquet is missing"):
        load_market_data(None, f"parquet:{tmp_path / 'half'}")
    with pytest.raises(
        SettingsError, match=r"BLOASIS_UNIVERSE='parquet:': .*parquet: needs a directory"
    ):
        load_settings(state_dir=tmp_path, universe="parquet:")


def test_a_damaged_store_is_a_format_error(synthetic: MarketData, tmp_path: Path) -> None:
    write_parquet(synthetic, tmp_path / "d")
    bars = pq.read_table(tmp_path / "d" / BARS_FILE)
    # Rows out of (symbol, date) order: the reader must not scatter them into the wrong cells.
    flipped = bars.take(pa.array(np.arange(bars.num_rows)[::-1]))
    pq.write_table(
        flipped.replace_schema_metadata(bars.schema.metadata), tmp_path / "d" / BARS_FILE
    )
    with pytest.raises(
        DataFormatError, match=r"parquet:.*not in \(symbol, date\) order|dates differ"
    ):
        ParquetSource(tmp_path / "d").load()
    pq.write_table(
        bars.slice(0, 100).replace_schema_metadata(bars.schema.metadata), tmp_path / "d" / BARS_FILE
    )
    with pytest.raises(DataFormatError, match=r"has 100 rows, expected"):
        ParquetSource(tmp_path / "d").load()


def test_bad_bars_fail_validation_or_are_quarantined(synthetic: MarketData, tmp_path: Path) -> None:
    assert synthetic.ohlcv is not None
    sym, day = synthetic.symbols[7], synthetic.index[200]
    bad_close = synthetic.ohlcv["close"].copy()
    bad_close.loc[day, sym] = -1.0
    ohlcv = dict(synthetic.ohlcv, close=bad_close)
    bad = MarketData(
        market=synthetic.market, closes=bad_close, ohlcv=ohlcv, sectors=synthetic.sectors,
        source=synthetic.source,
    )  # fmt: skip
    write_parquet(bad, tmp_path / "b")
    with pytest.raises(DataValidationError, match=rf"{sym} {day.date()} \[non_positive\]"):
        ParquetSource(tmp_path / "b").load()
    md, issues = load_market_data_with_issues(None, f"parquet:{tmp_path / 'b'}", quarantine=True)
    assert {(i.symbol, i.date, i.rule) for i in issues} >= {(sym, day.date(), "non_positive")}
    assert np.isnan(md.closes.loc[day, sym]) and np.isnan(md.ohlcv["high"].loc[day, sym])  # type: ignore[index]
