"""Market data: embedded real values, point in time, validation, synthetic generator, files."""

from __future__ import annotations

import dataclasses
import gzip
import sys
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bloasis.marketdata import (
    GICS_SECTORS,
    MARKET_COLUMNS,
    DataFormatError,
    DataQualityWarning,
    DataValidationError,
    EmbeddedSource,
    FileSource,
    MarketData,
    MarketDataSource,
    SyntheticSource,
    default_source,
    generate,
    nyse_sessions,
    validate,
    validate_bars,
    write_csv,
)
from bloasis.marketdata.build_dataset import SECTORS
from bloasis.marketdata.sources import _read_embedded, monthly_availability


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


def row(md: MarketData, day: str) -> pd.Series:
    return cast(pd.Series, md.market.loc[pd.Timestamp(day)])


def cell(frame: pd.DataFrame, day: str | pd.Timestamp, symbol: str) -> float:
    r = _pos(frame, day)
    return float(frame.to_numpy()[r, list(frame.columns).index(symbol)])


def _pos(frame: pd.DataFrame, day: str | pd.Timestamp) -> int:
    r = int(np.searchsorted(frame.index.to_numpy(), pd.Timestamp(day).to_datetime64()))
    assert frame.index[r] == pd.Timestamp(day)
    return r


def assert_same(a: MarketData, b: MarketData) -> None:
    pd.testing.assert_frame_equal(a.market, b.market)
    pd.testing.assert_frame_equal(a.closes, b.closes)
    assert (a.ohlcv is None) == (b.ohlcv is None)
    if a.ohlcv is not None and b.ohlcv is not None:
        assert a.ohlcv.keys() == b.ohlcv.keys()
        for k in a.ohlcv:
            pd.testing.assert_frame_equal(a.ohlcv[k], b.ohlcv[k])
    pd.testing.assert_series_equal(a.sectors, b.sectors)


# ------------------------------------------------------------------------------------------------
# Embedded dataset: real values


def test_embedded_layout(md: MarketData) -> None:
    idx = md.index
    assert list(md.market.columns) == list(MARKET_COLUMNS)
    assert idx.tz is None and idx.is_monotonic_increasing and idx.is_unique
    assert (idx == idx.normalize()).all()
    assert md.first_date == date(1990, 1, 2) and md.last_date == date(2022, 12, 28)
    assert len(idx) == 8313
    assert idx.equals(nyse_sessions("1990-01-02", "2022-12-28"))
    assert md.closes.index.equals(idx) and md.ohlcv is None
    assert md.market["vix_is_proxy"].dtype == bool
    assert all(t == np.float64 for t in md.closes.dtypes)
    # The shipped file holds exactly the build's GICS table (the build is the one place of it).
    assert md.sectors.to_dict() == SECTORS
    assert md.sectors["XOM"] == "Energy" and md.sectors["JNJ"] == "Health Care"
    assert set(md.sectors) <= set(GICS_SECTORS)
    assert md.source == "embedded"


def test_embedded_real_values(md: MarketData) -> None:
    assert row(md, "1990-01-02")["index_close"] == 359.69
    # 2008-10-15: -9.0%, one of the largest daily drops of the index.
    closes = md.market["index_close"]
    drop = closes.loc["2008-10-15"] / closes.loc["2008-10-14"] - 1
    assert drop == pytest.approx(907.84 / 998.01 - 1) and drop < -0.09
    assert (closes.pct_change().loc["2008"] >= drop).all()
    # Index OHLCV only where arch has it (1999..2018).
    assert np.isnan(row(md, "1998-12-31")["index_open"])
    r = row(md, "2008-10-10")
    assert r["index_low"] <= r["index_close"] <= r["index_high"] and r["index_volume"] > 1e9
    assert cell(md.closes, "1990-01-02", "AAPL") == 0.264


def test_vix_real_and_proxy(md: MarketData) -> None:
    real = row(md, "2015-08-24")
    assert not real["vix_is_proxy"] and real["vix"] == pytest.approx(40.74)
    proxy = row(md, "2008-10-10")
    assert proxy["vix_is_proxy"] and proxy["vix"] > 40
    m = md.market
    flags = m["vix_is_proxy"]
    assert not flags.loc["2014-01-03":"2019-01-03"].any()
    assert flags.loc[:"2014-01-02"].all() and flags.loc["2019-01-04":].all()
    # The proxy needs 21 returns: the first 21 rows have none.
    assert m["vix"].iloc[:21].isna().all() and m["vix"].iloc[21:].notna().all()


def test_credit_spread_publication_lag(md: MarketData) -> None:
    cs = md.market["credit_spread"]
    # Moody's BAA-AAA: Nov 2008 3.09, Dec 2008 3.38, Jan 2009 3.09. December's value is visible
    # from 2009-01-07 (first session of January + 5 days); January's only in February.
    assert cs.loc["2009-01-06"] == pytest.approx(3.09)
    assert cs.loc["2009-01-07"] == pytest.approx(3.38)
    assert cs.loc["2009-01-15"] == pytest.approx(3.38)
    assert cs.loc["2009-02-06"] == pytest.approx(3.38)
    assert cs.loc["2009-02-09"] == pytest.approx(3.09)
    dec = np.array([np.datetime64("2008-12-01", "D").astype(np.int64)])
    assert md.index[int(monthly_availability(dec, md.index, 5)[0])] == pd.Timestamp("2009-01-07")
    # The series ends in Dec 2018: forward fill stops 45 days after its last value appeared.
    assert cs.last_valid_index() == pd.Timestamp("2019-02-21")
    assert cs.loc["1990-01-02"] == pytest.approx(0.92)


def test_yield_curve(md: MarketData) -> None:
    slope = md.market["ust10y"] - md.market["ust2y"]
    assert slope.loc["2006-12-29"] < 0 and slope.loc["2007-02-27"] < 0
    assert slope.loc["2006-06":"2007-05"].mean() < 0
    assert (slope.loc["2010"] > 0).all()
    ust = md.market["ust10y"]
    # Treasury prints stop on 2017-03-29; carried at most 10 days.
    assert ust.loc["2017-04-07"] == ust.loc["2017-03-29"]
    assert ust.loc["2017-04-10":].isna().all()
    # Columbus Day 2008: bond market closed, NYSE open -> previous day's print.
    assert ust.loc["2008-10-13"] == ust.loc["2008-10-10"]


def test_embedded_passes_validation(md: MarketData) -> None:
    out, issues = validate(md)
    assert out is md and issues == []


def test_embedded_load_fast_and_hash() -> None:
    _read_embedded.cache_clear()
    t = time.perf_counter()
    a = EmbeddedSource().load()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    b = EmbeddedSource().load()
    warm = time.perf_counter() - t
    assert cold < 0.5 and warm < 0.1  # budget 100 ms; generous against a busy CI machine
    t = time.perf_counter()
    h = a.snapshot_hash()
    assert time.perf_counter() - t < 0.25
    assert len(h) == 64 and h == b.snapshot_hash()
    assert a.as_of("2020-01-02").snapshot_hash() != h
    assert a.as_of("2020-01-02").snapshot_hash() == b.as_of("2020-01-02").snapshot_hash()


def test_default_source() -> None:
    src = default_source()
    assert isinstance(src, EmbeddedSource) and isinstance(src, MarketDataSource)
    assert isinstance(SyntheticSource(3, 1), MarketDataSource)


# ------------------------------------------------------------------------------------------------
# Point in time


def test_as_of_is_prefix(md: MarketData) -> None:
    rng = np.random.default_rng(7)
    for i in rng.integers(0, len(md.index), 20):
        d = md.index[i]
        sub = md.as_of(d.date())
        assert sub.last_date == d.date()
        pd.testing.assert_frame_equal(sub.market, md.market.iloc[: i + 1])
        pd.testing.assert_frame_equal(sub.closes, md.closes.iloc[: i + 1])
    # A weekend date sees the Friday before.
    assert md.as_of("2008-10-11").last_date == date(2008, 10, 10)
    assert len(md.as_of("1989-12-31").market) == 0


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(d=st.dates(min_value=date(1990, 1, 1), max_value=date(2023, 1, 10)))
@pytest.mark.slow
def test_load_end_equals_as_of(md: MarketData, d: date) -> None:
    # Loading only what was published by D gives exactly the first rows of the full history:
    # appending later data never changes earlier rows (credit forward fill, VIX proxy, yields).
    assert_same(EmbeddedSource().load(end=d), md.as_of(d))


def test_load_before_first_session(md: MarketData) -> None:
    empty = EmbeddedSource().load(end=date(1989, 12, 31))
    assert len(empty.market) == 0 and empty.closes.shape == (0, 20)
    assert_same(empty, md.as_of("1989-12-31"))
    assert validate(empty)[1] == []
    assert (
        repr(empty) == "MarketData(source='embedded', sessions=0 [empty], symbols=20, ohlcv=none)"
    )


def test_load_start_end_window(md: MarketData) -> None:
    w = EmbeddedSource().load(start=date(2008, 9, 1), end=date(2008, 12, 31))
    assert w.first_date == date(2008, 9, 2) and w.last_date == date(2008, 12, 31)
    # Warm-up history before `start` is used: the VIX proxy is defined from the first row.
    assert w.market["vix"].notna().all()
    assert_same(w, md.between("2008-09-01", "2008-12-31"))


# ------------------------------------------------------------------------------------------------
# Validation


def tiny() -> MarketData:
    """A small valid MarketData: 10 January 2020 sessions, two symbols with OHLCV."""
    sessions = nyse_sessions("2020-01-02", "2020-01-31")[:10]
    n = len(sessions)
    base = np.linspace(100.0, 109.0, n)
    market = pd.DataFrame(
        {
            "index_close": base * 30,
            "index_open": base * 30,
            "index_high": base * 30.3,
            "index_low": base * 29.7,
            "index_volume": np.full(n, 1e9),
            "vix": np.full(n, 15.0),
            "vix_is_proxy": np.zeros(n, dtype=bool),
            "ust10y": np.full(n, 1.8),
            "ust2y": np.full(n, 1.5),
            "credit_spread": np.full(n, 0.9),
        },
        index=sessions,
    )
    cols = pd.Index(["AAA", "BBB"], name="symbol")
    close = pd.DataFrame(np.c_[base, base * 2], index=sessions, columns=cols)
    ohlcv = {
        "open": close.copy(),
        "high": close * 1.01,
        "low": close * 0.99,
        "close": close.copy(),
        "volume": close * 0 + 1000.0,
    }
    sectors = pd.Series(["Energy", "Financials"], index=cols.copy(), name="sector")
    return MarketData(market, close.copy(), ohlcv, sectors, "tiny")


def _set(md: MarketData, field: str, day: int, symbol: str, value: float) -> MarketData:
    assert md.ohlcv is not None
    ohlcv = {k: v.copy() for k, v in md.ohlcv.items()}
    closes = md.closes.copy()
    target = closes if field == "adj" else ohlcv[field]
    target.iloc[day, list(target.columns).index(symbol)] = value
    return dataclasses.replace(md, closes=closes, ohlcv=ohlcv)


def _market(md: MarketData, f: Callable[[pd.DataFrame], pd.DataFrame]) -> MarketData:
    market = f(md.market.copy())
    take = md.market.index.get_indexer(market.index)
    ohlcv = None if md.ohlcv is None else {k: v.iloc[take] for k, v in md.ohlcv.items()}
    return dataclasses.replace(md, market=market, closes=md.closes.iloc[take], ohlcv=ohlcv)


def _reindexed(md: MarketData, index: pd.DatetimeIndex, take: list[int]) -> MarketData:
    def fix(df: pd.DataFrame) -> pd.DataFrame:
        out = df.iloc[take].copy()
        out.index = index
        return out

    ohlcv = None if md.ohlcv is None else {k: fix(v) for k, v in md.ohlcv.items()}
    return dataclasses.replace(md, market=fix(md.market), closes=fix(md.closes), ohlcv=ohlcv)


def _with_index_rows(md: MarketData, take: list[int], dates: list[str] | None = None) -> MarketData:
    idx = md.index[take] if dates is None else pd.DatetimeIndex(dates).as_unit("ns")
    return _reindexed(md, pd.DatetimeIndex(idx, name="date"), take)


S = nyse_sessions("2020-01-02", "2020-01-31")[:10]

BAD_CASES: dict[str, tuple[Callable[[MarketData], MarketData], str, str, str]] = {
    # name: (corruption, symbol, date, rule)
    "interior_nan": (lambda m: _set(m, "adj", 4, "AAA", np.nan), "AAA", "2020-01-08", "nan"),
    "non_positive": (lambda m: _set(m, "adj", 3, "BBB", -1.0), "BBB", "2020-01-07", "non_positive"),
    "zero_price": (lambda m: _set(m, "open", 2, "AAA", 0.0), "AAA", "2020-01-06", "non_positive"),
    "high_lt_low": (lambda m: _set(m, "high", 5, "AAA", 50.0), "AAA", "2020-01-09", "high_lt_low"),
    "close_above_high": (
        lambda m: _set(m, "close", 6, "BBB", 500.0),
        "BBB",
        "2020-01-10",
        "close_outside_range",
    ),
    "negative_volume": (
        lambda m: _set(m, "volume", 1, "BBB", -5.0),
        "BBB",
        "2020-01-03",
        "negative_volume",
    ),
    "index_nan": (
        lambda m: _market(
            m, lambda f: f.assign(index_close=f["index_close"].where(f.index != S[2]))
        ),
        "^SPX",
        "2020-01-06",
        "nan",
    ),
    "duplicate_date": (
        lambda m: _with_index_rows(m, [0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9]),
        "^SPX",
        "2020-01-06",
        "duplicate_date",
    ),
    "unsorted_dates": (
        lambda m: _with_index_rows(m, [0, 1, 3, 2, 4, 5, 6, 7, 8, 9]),
        "^SPX",
        "2020-01-06",
        "unsorted_dates",
    ),
    "calendar_gap": (
        lambda m: _with_index_rows(m, [0, 1, 2, 4, 5, 6, 7, 8, 9]),
        "^SPX",
        "2020-01-07",
        "calendar_gap",
    ),
    "not_a_session": (
        lambda m: _with_index_rows(m, [0, 1, 2], ["2020-01-02", "2020-01-03", "2020-01-04"]),
        "^SPX",
        "2020-01-04",
        "not_a_session",
    ),
}


def test_tiny_is_valid() -> None:
    m = tiny()
    assert validate(m) == (m, [])


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_validation_rule(case: str) -> None:
    corrupt, symbol, day, rule = BAD_CASES[case]
    bad = corrupt(tiny())
    with pytest.raises(DataValidationError) as err:
        validate(bad)
    msg = str(err.value)
    assert f"{symbol} {day} [{rule}]" in msg, msg
    assert any(
        i.symbol == symbol and i.date == date.fromisoformat(day) and i.rule == rule
        for i in err.value.issues
    )
    # Quarantine: no exception, the issue is reported and the bad value/row is gone.
    cleaned, issues = validate(bad, quarantine=True)
    assert any(i.rule == rule and i.symbol == symbol for i in issues)
    if symbol == "^SPX" and rule in ("duplicate_date", "unsorted_dates", "not_a_session", "nan"):
        idx = cleaned.index
        assert idx.is_monotonic_increasing and idx.is_unique
        assert cleaned.market["index_close"].notna().all()
        assert idx.isin(nyse_sessions(idx[0], idx[-1])).all()
    elif symbol != "^SPX":
        d = pd.Timestamp(day)
        assert np.isnan(cell(cleaned.closes, d, symbol))
        assert cleaned.ohlcv is not None
        assert all(np.isnan(cell(f, d, symbol)) for f in cleaned.ohlcv.values())
        # Other bars untouched.
        assert cleaned.closes.drop(index=d).notna().all().all()


def test_quarantine_of_duplicates_gives_valid_data() -> None:
    bad = _with_index_rows(tiny(), [0, 1, 2, 2, 4, 3, 5, 6, 7, 8, 9])
    cleaned, issues = validate(bad, quarantine=True)
    assert {i.rule for i in issues} == {"duplicate_date", "unsorted_dates"}
    assert validate(cleaned)[1] == []
    pd.testing.assert_frame_equal(cleaned.market, tiny().market)


def test_validation_message_lists_ten_then_counts() -> None:
    m = tiny()
    assert m.ohlcv is not None
    for i in range(10):
        m = _set(m, "adj", i, "AAA", -float(i + 1))
        m = _set(m, "adj", i, "BBB", -float(i + 1))
    with pytest.raises(DataValidationError, match=r"20 data issue\(s\).*; and 10 more$"):
        validate(m)


def test_unknown_sector() -> None:
    m = tiny()
    m = dataclasses.replace(m, sectors=pd.Series({"AAA": "Energy", "BBB": "Tech"}))
    with pytest.raises(DataValidationError, match=r"BBB - \[unknown_sector\]"):
        validate(m)
    cleaned, _ = validate(m, quarantine=True)
    assert list(cleaned.sectors.index) == ["AAA"]


def test_misaligned_frames_always_raise() -> None:
    m = tiny()
    m = dataclasses.replace(m, closes=m.closes.iloc[:5])
    with pytest.raises(DataValidationError, match="misaligned_index"):
        validate(m, quarantine=True)


def test_validate_bars_rules() -> None:
    bars = pd.DataFrame(
        {
            "date": pd.to_datetime(
                ["2020-01-02", "2020-01-03", "2020-01-03", "2020-01-02", "2020-01-04", "2020-01-06"]
            ),
            "symbol": ["AAA", "AAA", "AAA", "BBB", "BBB", "BBB"],
            "open": [10.0, 10.0, 10.0, 5.0, 5.0, 5.0],
            "high": [11.0, 11.0, 11.0, 4.0, 6.0, 6.0],
            "low": [9.0, 9.0, 9.0, 4.5, 4.0, 4.0],
            "close": [10.5, 10.5, 10.5, 5.0, 5.0, 5.0],
            "volume": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        }
    )
    with pytest.raises(DataValidationError) as err:
        validate_bars(bars, context="t.csv")
    msg = str(err.value)
    assert msg.startswith("t.csv: ")
    assert "AAA 2020-01-03 [duplicate_date]" in msg
    assert "BBB 2020-01-02 [high_lt_low]" in msg
    assert "BBB 2020-01-04 [not_a_session]" in msg
    out, issues = validate_bars(bars, quarantine=True)
    assert len(out) == 3 and len(issues) >= 4


# ------------------------------------------------------------------------------------------------
# Synthetic universe


def test_synthetic_deterministic_and_valid() -> None:
    a = generate(40, 2, seed=1)
    b = generate(40, 2, seed=1)
    c = generate(40, 2, seed=2)
    assert a.data.snapshot_hash() == b.data.snapshot_hash()
    assert a.data.snapshot_hash() != c.data.snapshot_hash()
    md = a.data
    assert md.source == "synthetic(seed=1,n=40,years=2)"
    assert md.index.equals(nyse_sessions("2010-01-04", "2012-01-03"))
    assert md.closes.shape == (len(md.index), 40)
    assert set(md.sectors) == set(GICS_SECTORS)
    assert set(a.regimes.unique()) <= {"bull", "bear", "crisis", "sideways", "recovery"}
    assert validate(md)[1] == []
    o = md.ohlcv
    assert o is not None and o.keys() == {"open", "high", "low", "close", "volume"}
    listed = o["close"].notna()
    assert ((o["low"] <= o["open"]) & (o["open"] <= o["high"]))[listed].all().all()
    assert ((o["low"] <= o["close"]) & (o["close"] <= o["high"]))[listed].all().all()
    assert ((o["volume"] > 0) | ~listed).all().all()
    # 10% list later: leading NaNs only.
    late = md.closes.iloc[0].isna()
    assert late.sum() == 4 and md.closes.iloc[-1].notna().all()
    m = md.market
    assert m["vix"].between(9, 150).all() and not m["vix_is_proxy"].any()
    assert m[["ust10y", "ust2y", "credit_spread"]].notna().all().all()


def test_synthetic_regimes_drive_market() -> None:
    u = generate(50, 30, seed=3)
    ret = u.data.market["index_close"].pct_change()
    vol = ret.groupby(u.regimes).std()
    spread = u.data.market["credit_spread"].groupby(u.regimes).mean()
    assert vol["crisis"] > 2 * vol["bull"]
    assert spread["crisis"] > spread["bull"]
    mean = ret.groupby(u.regimes).mean()
    assert mean["bull"] > 0 and mean["recovery"] > 0 and mean["crisis"] < 0


def test_synthetic_source_point_in_time() -> None:
    src = SyntheticSource(15, 3, seed=5)
    full = src.load()
    d = date(2011, 6, 15)
    assert_same(src.load(end=d), full.as_of(d))
    assert src.load(start=d).first_date == date(2011, 6, 15)


@pytest.mark.slow
def test_synthetic_scale() -> None:
    u = generate(5000, 10, seed=11)  # its speed: bench pipeline_5000x10y
    md = u.data
    assert md.closes.shape == (len(md.index), 5000) and len(md.index) > 2500
    assert np.isfinite(md.market["index_close"]).all()


# ------------------------------------------------------------------------------------------------
# Files


def test_file_round_trip_embedded(md: MarketData, tmp_path: Path) -> None:
    window = md.between("2015-01-01", "2016-12-31")
    syms = ["AAPL", "JPM", "XOM"]
    sub = dataclasses.replace(window, closes=window.closes[syms], sectors=window.sectors[syms])
    path = write_csv(sub, tmp_path / "bars.csv")
    loaded = FileSource(path).load()
    assert loaded.source == f"csv:{path}"
    assert loaded.ohlcv is None
    assert_same(loaded, sub)
    assert loaded.snapshot_hash() == sub.snapshot_hash()


def test_file_round_trip_synthetic_gz(tmp_path: Path) -> None:
    md = generate(6, 2, seed=4).data
    path = write_csv(md, tmp_path / "bars.csv.gz")
    with gzip.open(path, "rt") as fh:
        assert fh.readline().strip() == "date,symbol,open,high,low,close,adj_close,volume,sector"
    src = FileSource(path)
    loaded = src.load()
    assert src.issues == []
    assert_same(loaded, md)
    d = date(2011, 3, 31)
    assert_same(src.load(end=d), loaded.as_of(d))


def _write(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD_HEAD = "date,symbol,open,high,low,close,adj_close,volume\n"
SPX = (
    "2020-01-02,^SPX,3244.67,3258.14,3235.53,3257.85,,\n"
    "2020-01-03,^SPX,3226.36,3246.15,3222.34,3234.85,,\n"
)


def test_malformed_csv_missing_column(tmp_path: Path) -> None:
    p = _write(tmp_path, "date,symbol,open\n2020-01-02,AAA,1\n")
    with pytest.raises(DataFormatError, match=r"bad\.csv: missing required column\(s\) close"):
        FileSource(p).load()


def test_malformed_csv_bad_date(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD_HEAD + SPX + "2020-13-45,AAA,1,1,1,1,1,1\n")
    with pytest.raises(DataFormatError) as err:
        FileSource(p).load()
    assert str(p) in str(err.value) and "line 4" in str(err.value)
    assert "bad date '2020-13-45'" in str(err.value)


def test_malformed_csv_bad_number_and_no_index(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD_HEAD + SPX + "2020-01-02,AAA,1,1,1,abc,1,1\n")
    with pytest.raises(DataFormatError, match=r"line 4: column 'close' value 'abc'"):
        FileSource(p).load()
    p = _write(tmp_path, GOOD_HEAD + "2020-01-02,AAA,1,1,1,1,1,1\n", "noidx.csv")
    with pytest.raises(DataFormatError, match=r"noidx\.csv: no \^SPX rows"):
        FileSource(p).load()
    with pytest.raises(FileNotFoundError):
        FileSource(tmp_path / "missing.csv").load()


def test_file_validation_and_quarantine(tmp_path: Path) -> None:
    text = (
        GOOD_HEAD
        + SPX
        + (
            "2020-01-02,AAA,10,11,9,10.5,10.5,100\n"
            "2020-01-03,AAA,10,11,9,-3,-3,100\n"
            "2020-01-02,BBB,5,6,4,5,5,100\n"
            "2020-01-02,BBB,5,6,4,5,5,100\n"
            "2020-01-03,BBB,5,6,4,5.5,5.5,100\n"
        )
    )
    p = _write(tmp_path, text)
    with pytest.raises(DataValidationError) as err:
        FileSource(p).load()
    msg = str(err.value)
    assert str(p) in msg
    assert "AAA 2020-01-03 [non_positive]" in msg and "BBB 2020-01-02 [duplicate_date]" in msg
    src = FileSource(p, quarantine=True)
    with pytest.warns(DataQualityWarning, match="quarantined"):
        loaded = src.load()
    assert {(i.symbol, i.rule) for i in src.issues} >= {
        ("AAA", "non_positive"),
        ("BBB", "duplicate_date"),
    }
    assert np.isnan(cell(loaded.closes, "2020-01-03", "AAA"))
    assert cell(loaded.closes, "2020-01-03", "BBB") == 5.5


def test_file_na_tokens_are_unknown(tmp_path: Path) -> None:
    p = _write(
        tmp_path, GOOD_HEAD + SPX + "2020-01-02,AAA,NaN,NA,,10,10,\n2020-01-03,AAA,,,,11,,\n"
    )
    loaded = FileSource(p).load()
    assert loaded.ohlcv is None  # no open/high/low/volume values at all
    assert cell(loaded.closes, "2020-01-03", "AAA") == 11.0
    assert loaded.sectors.empty


def test_parquet_needs_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pyarrow is not a dependency: behave as on a machine without it, whatever this one has.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    p = _write(tmp_path, "x", "bars.parquet")
    with pytest.raises(DataFormatError, match="pyarrow"):
        FileSource(p).load()


def test_no_warning_for_clean_file(md: MarketData, tmp_path: Path) -> None:
    sub = md.between("2016-01-01", "2016-03-31")
    sub = dataclasses.replace(sub, closes=sub.closes[["KO"]], sectors=sub.sectors[["KO"]])
    path = write_csv(sub, tmp_path / "ko.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FileSource(path, quarantine=True).load()
