"""The point-in-time market-data store in PostgreSQL (`bloasis.store.marketdata`) and
`DatabaseSource` over it, against the real embedded server: the embedded vintage reads back equal
to `EmbeddedSource`, versions and the visibility rule (a hypothesis property over the real SQL),
idempotent and extendable vintages, write counts with NaNs, `last_dates`, the ingest log, the
symbol filter, and validation of bad bars written into the store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from bloasis import calendar
from bloasis.marketdata import (
    DataFormatError,
    DataQualityWarning,
    DataValidationError,
    EmbeddedSource,
    MarketData,
)
from bloasis.marketdata.database import DatabaseSource
from bloasis.store import marketdata as store

NAN = float("nan")


def assert_same(a: MarketData, b: MarketData) -> None:
    pd.testing.assert_frame_equal(a.market, b.market)
    pd.testing.assert_frame_equal(a.closes, b.closes)
    assert (a.ohlcv is None) == (b.ohlcv is None)
    pd.testing.assert_series_equal(a.sectors, b.sectors)
    assert a.snapshot_hash() == b.snapshot_hash()


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def close_of(md: MarketData, symbol: str, day: date) -> float:
    return float(md.closes[symbol].to_numpy()[md.index.get_loc(pd.Timestamp(day))])


def bars(rows: list[tuple[Any, ...]], source: str = "test") -> pd.DataFrame:
    """(symbol, session, open, high, low, close, adj_close, volume) tuples -> write_bars input."""
    df = pd.DataFrame(rows, columns=["symbol", "session", *store.FIELDS])
    df["source"] = source
    return df


def write(engine: Engine, frame: pd.DataFrame, at: datetime, **kw: Any) -> store.WriteOutcome:
    with engine.begin() as conn:
        iid = store.begin_ingest(conn, kind="live", source="test", params={})
        out = store.write_bars(conn, frame, ingest_id=iid, ingested_at=at, **kw)
        store.finish_ingest(conn, iid, status="completed", result=out.summary())
    return out


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


# ------------------------------------------------------------------------------------------------
# The embedded vintage


def test_embedded_vintage_reads_back_equal_to_the_embedded_source(clean_db: Engine) -> None:
    out = store.load_embedded_vintage(clean_db)
    emb = EmbeddedSource()
    assert out.ingest_id is not None and out.through == date(2022, 12, 28)
    assert out.bars.inserted == count(clean_db, "SELECT count(*) FROM md_bars") > 170_000
    assert out.bars.revised == out.bars.unchanged == 0
    db = DatabaseSource(clean_db)
    assert db.newest_session() == date(2022, 12, 28)
    # 1995: VIX proxy only; 2012: proxy, yields; 2016: real VIX and yields; the last session.
    for d in (date(1995, 6, 1), date(2012, 3, 5), date(2016, 7, 1), date(2022, 12, 28)):
        got = db.load(end=d)
        assert got.source == "database" and got.ohlcv is None
        assert_same(got, emb.load(end=d))
    assert db.load().snapshot_hash() == emb.load().snapshot_hash()
    lo, hi = date(2016, 1, 4), date(2016, 7, 1)
    assert_same(db.load(start=lo, end=hi), emb.load(lo, hi))
    # A day that is not a session: the same cut as the embedded source's.
    holiday = date(2016, 7, 4)
    assert db.load(end=holiday).snapshot_hash() == emb.load(end=holiday).snapshot_hash()


def test_vintage_is_idempotent_and_extends_with_a_later_through(clean_db: Engine) -> None:
    first = store.load_embedded_vintage(clean_db, through=date(1994, 12, 30))
    assert first.ingest_id is not None and first.inserted > 0
    again = store.load_embedded_vintage(clean_db, through=date(1994, 12, 30))
    assert again.ingest_id is None and again.inserted == 0  # nothing written, no ingest row
    assert store.load_embedded_vintage(clean_db, through=date(1993, 6, 1)).ingest_id is None
    n_bars = count(clean_db, "SELECT count(*) FROM md_bars")
    more = store.load_embedded_vintage(clean_db, through=date(1995, 12, 29))
    # Only the observations after the covered date: the whole of 1995 and nothing else.
    emb = EmbeddedSource().load(end=date(1995, 12, 29))
    in_1995 = emb.closes.loc["1995"]
    assert more.bars.inserted == len(in_1995) + int(np.isfinite(in_1995.to_numpy()).sum())
    assert more.bars.unchanged == 0
    assert count(clean_db, "SELECT count(*) FROM md_bars") == n_bars + more.bars.inserted
    assert count(clean_db, "SELECT max(version) FROM md_bars") == 1
    assert_same(DatabaseSource(clean_db).load(), emb)
    with clean_db.connect() as conn:
        log = conn.execute(
            text(
                "SELECT kind, source, status, params, result, finished_at FROM md_ingests "
                "ORDER BY id"
            )
        ).all()
    assert [(r.kind, r.source, r.status) for r in log] == [("vintage", "embedded", "completed")] * 2
    assert [r.params["through"] for r in log] == ["1994-12-30", "1995-12-29"]
    assert log[1].params["after"] == "1994-12-30" and log[1].params["sha256"]
    assert log[1].result["bars"]["inserted"] == more.bars.inserted
    assert all(r.finished_at is not None for r in log)
    with clean_db.connect() as conn:
        recent = store.recent_ingests(conn, limit=1)
    assert [(i["kind"], i["status"], i["params"]["through"]) for i in recent] == [
        ("vintage", "completed", "1995-12-29")
    ]
    assert isinstance(recent[0]["started_at"], str) and recent[0]["error"] is None


def test_a_failed_vintage_rolls_back_and_is_logged(
    clean_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> store.WriteOutcome:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "write_series", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.load_embedded_vintage(clean_db, through=date(1990, 3, 1))
    assert count(clean_db, "SELECT count(*) FROM md_bars") == 0
    with clean_db.connect() as conn:
        (row,) = conn.execute(text("SELECT status, error, params FROM md_ingests")).all()
    assert row.status == "failed" and "disk on fire" in row.error
    assert row.params["through"] == "1990-03-01"


# ------------------------------------------------------------------------------------------------
# Writes: versions, NaNs, counts


def test_write_bars_counts_inserts_unchanged_and_revisions_with_nans(clean_db: Engine) -> None:
    d1, d2, d3 = date(2016, 6, 13), date(2016, 6, 14), date(2016, 6, 15)
    t1 = utc(2016, 7, 1, 12)
    first = bars(
        [
            ("AAA", d1, 10.0, 11.0, 9.0, 10.5, 10.4, 1e6),
            ("AAA", d2, NAN, NAN, NAN, 10.7, 10.6, NAN),
            ("BBB", d1, NAN, NAN, NAN, 50.0, 50.0, NAN),
        ]
    )
    out = write(clean_db, first, t1)
    assert (out.inserted, out.revised, out.unchanged, out.revisions) == (3, 0, 0, [])
    # The same values (within rel_tol, NaN = NaN), a new key, from another source.
    same = first.copy()
    same["close"] = same["close"] * (1 + 1e-9)
    same["source"] = "other"
    same = pd.concat([same, bars([("BBB", d3, NAN, NAN, NAN, 51.0, 51.0, NAN)])])
    out = write(clean_db, same, t1 + timedelta(hours=1))
    assert (out.inserted, out.revised, out.unchanged) == (1, 0, 3)
    # Revisions: a close that moved; a volume that became known (NaN -> value).
    t3 = t1 + timedelta(days=1)
    out = write(
        clean_db,
        bars(
            [
                ("AAA", d1, 10.0, 11.0, 9.0, 10.5, 10.4, 1e6),  # unchanged
                ("AAA", d2, NAN, NAN, NAN, 10.7, 10.6, 2e6),  # volume NaN -> 2e6
                ("BBB", d1, NAN, NAN, NAN, 50.5, 50.5, NAN),  # close 50 -> 50.5
            ],
            source="fix",
        ),
        t3,
    )
    assert (out.inserted, out.revised, out.unchanged) == (0, 2, 1)
    by_key = {(r.key, r.day): r for r in out.revisions}
    assert by_key[("BBB", d1)].field == "close" and by_key[("BBB", d1)].old == 50.0
    assert by_key[("BBB", d1)].new == 50.5 and by_key[("BBB", d1)].source == "fix"
    assert by_key[("AAA", d2)].field == "volume" and np.isnan(by_key[("AAA", d2)].old)
    with clean_db.connect() as conn:
        cur = store.current_bars(conn, ["AAA", "BBB"], d1, d3)
        only_b = store.current_bars(conn, ["BBB"], None, d1)
        status = {x.key: x for x in store.last_dates(conn)}
        old = conn.execute(
            text(
                "SELECT b.version, b.close, b.superseded_at, b.available_at FROM md_bars b "
                "JOIN md_symbols s ON s.id = b.symbol_id WHERE s.symbol = 'BBB' "
                "AND b.session = :d ORDER BY b.version"
            ),
            {"d": d1},
        ).all()
    assert list(cur["symbol"]) == ["AAA", "AAA", "BBB", "BBB"]
    assert list(cur["version"]) == [1, 2, 2, 1] and cur["volume"].iloc[1] == 2e6
    assert list(only_b["close"]) == [50.5]
    # Version 1 loaded after its cut-off (available NULL), superseded by version 2 at t3.
    assert [(r.version, r.close, r.superseded_at, r.available_at) for r in old] == [
        (1, 50.0, t3, None),
        (2, 50.5, None, t3),
    ]
    assert (status["BBB"].last_date, status["BBB"].versions, status["BBB"].kind) == (d3, 2, "stock")
    assert status["BBB"].source == "test" and status["AAA"].last_date == d2
    assert status["BBB"].first_seen == t1 + timedelta(hours=1)
    # Ingest times of a key must not go backwards; a key twice in one batch is refused.
    with pytest.raises(ValueError, match="must not go backwards"):
        write(clean_db, bars([("BBB", d1, NAN, NAN, NAN, 49.0, 49.0, NAN)]), t1)
    with pytest.raises(ValueError, match="more than once"):
        write(clean_db, pd.concat([first, first]), t3)
    with clean_db.connect() as conn:
        log = conn.execute(text("SELECT status, result FROM md_ingests ORDER BY id")).all()
    assert [r.status for r in log] == ["completed"] * 3  # the refused writes rolled back
    assert log[2].result["revised"] == 2


def test_write_series_versions_and_current_series(clean_db: Engine) -> None:
    t1, t2 = utc(2016, 7, 1), utc(2016, 7, 2)
    rows = pd.DataFrame(
        {
            "series": ["UST10Y", "UST10Y", "XCHECK"],
            "obs_date": [date(2016, 6, 13), date(2016, 6, 14), date(2016, 6, 14)],
            "value": [1.61, 1.62, 7.0],
            "source": "fred",
        }
    )
    with clean_db.begin() as conn:
        iid = store.begin_ingest(conn, kind="live", source="fred", params={})
        a = store.write_series(conn, rows, ingest_id=iid, ingested_at=t1)
        changed = rows.assign(value=[1.61, 1.65, 7.0])
        b = store.write_series(conn, changed, ingest_id=iid, ingested_at=t2)
        cur = store.current_series(conn, ["UST10Y"], None, None)
        everything = store.current_series(conn, None, date(2016, 6, 14), None)
        status = {x.key: x for x in store.last_dates(conn)}
        before = store.read_visible_series(conn, end=date(2016, 6, 14), known_at=t1)
        after = store.read_visible_series(conn, end=date(2016, 6, 14), known_at=t2)
    assert (a.inserted, b.revised, b.unchanged) == (3, 1, 2)
    (rev,) = b.revisions
    assert (rev.key, rev.day, rev.field) == ("UST10Y", date(2016, 6, 14), "value")
    assert (rev.old, rev.new, rev.source) == (1.62, 1.65, "fred")
    assert list(cur["value"]) == [1.61, 1.65] and list(cur["version"]) == [1, 2]
    assert sorted(everything["series"]) == ["UST10Y", "XCHECK"]
    assert (status["UST10Y"].kind, status["UST10Y"].versions) == ("series", 2)
    assert status["XCHECK"].versions == 1
    # Only the read series (XCHECK is stored, not read); each version at its knowledge time.
    assert sorted(np.asarray(before.values["value"], dtype=float)) == [1.61, 1.62]
    assert sorted(np.asarray(after.values["value"], dtype=float)) == [1.61, 1.65]


def test_upsert_symbols_updates_only_what_is_given(clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        ids = store.upsert_symbols(
            conn,
            [
                store.SymbolInfo("AAA", "stock", "Aaa Inc", "Energy"),
                store.SymbolInfo("^SPX", "index"),
            ],
        )
        again = store.upsert_symbols(conn, [store.SymbolInfo("AAA", "stock", None, "Utilities")])
        row = conn.execute(text("SELECT name, sector FROM md_symbols WHERE symbol = 'AAA'")).one()
        with pytest.raises(ValueError, match="kind"):
            store.upsert_symbols(conn, [store.SymbolInfo("X", "etf")])
    assert set(ids) == {"AAA", "^SPX"} and again == {"AAA": ids["AAA"]}
    assert tuple(row) == ("Aaa Inc", "Utilities")


# ------------------------------------------------------------------------------------------------
# Visibility


def test_a_revision_is_seen_only_after_its_ingest_and_old_reads_stay_reproducible(
    clean_db: Engine,
) -> None:
    d, day = date(2016, 6, 17), date(2016, 6, 15)
    store.load_embedded_vintage(clean_db, through=d, now=utc(2016, 6, 20, 12))
    db = DatabaseSource(clean_db)
    before = db.load(end=d)
    old = close_of(before, "AAPL", day)
    t2 = utc(2016, 6, 22, 15)  # after the cut-off of D (2016-06-20 13:30 UTC)
    out = write(clean_db, bars([("AAPL", day, NAN, NAN, NAN, old + 1, old + 1, NAN)], "vendor"), t2)
    assert out.revised == 1
    # As of D (cut-off before t2): the old value, the same snapshot as before the revision.
    again = db.load(end=d)
    assert close_of(again, "AAPL", day) == old
    assert again.snapshot_hash() == before.snapshot_hash()
    # Known after t2: the new value (and a later as-of uses min(now, its cut-off) >= t2).
    late = DatabaseSource(clean_db, known_at=t2).load(end=d)
    assert close_of(late, "AAPL", day) == old + 1
    assert late.snapshot_hash() != before.snapshot_hash()
    later_day = date(2016, 6, 22)
    assert close_of(db.load(end=later_day), "AAPL", day) == old + 1
    just_before = DatabaseSource(clean_db, now=lambda: t2 - timedelta(seconds=1))
    assert close_of(just_before.load(end=later_day), "AAPL", day) == old
    with clean_db.connect() as conn:
        status = {x.key: x for x in store.last_dates(conn)}
    assert status["AAPL"].versions == 2 and status["MSFT"].versions == 1
    assert status["^SPX"].kind == "index" and status["^SPX"].last_date == d


def test_a_live_first_version_is_invisible_before_its_ingest(clean_db: Engine) -> None:
    d0, d1 = date(2016, 6, 16), date(2016, 6, 17)
    # The vintage is written the evening of d0, before d0's cut-off (2016-06-17 13:30 UTC):
    # d0's rows are seen live, the earlier ones were history.
    t0 = utc(2016, 6, 16, 21)
    store.load_embedded_vintage(clean_db, through=d0, now=t0)
    with clean_db.connect() as conn:
        avail: dict[date, int] = dict(
            conn.execute(
                text(
                    "SELECT session, count(DISTINCT available_at) FILTER (WHERE available_at "
                    "IS NOT NULL) FROM md_bars WHERE session >= '2016-06-15' GROUP BY session"
                )
            ).all()
        )
    assert avail == {date(2016, 6, 15): 0, d0: 1}
    # d1's bars and series (the embedded ones), ingested live after its close and before its
    # cut-off (2016-06-20 13:30 UTC).
    new_bars, new_series, _ = store._embedded_frames(d0, d1)
    t1 = utc(2016, 6, 17, 21)
    with clean_db.begin() as conn:
        iid = store.begin_ingest(conn, kind="live", source="test", params={})
        assert store.write_bars(conn, new_bars, ingest_id=iid, ingested_at=t1).inserted == 21
        store.write_series(conn, new_series, ingest_id=iid, ingested_at=t1)
    emb = EmbeddedSource().load(end=d1)
    seen = DatabaseSource(clean_db, known_at=t1).load(end=d1)
    assert seen.last_date == d1 and not bool(seen.market["vix_is_proxy"].iloc[-1])
    assert_same(seen, emb)

    def last(end: date, **kw: Any) -> date:
        return DatabaseSource(clean_db, **kw).load(end=end).last_date

    assert last(d1, known_at=t1 - timedelta(minutes=1)) == d0
    # Default K = min(now, cut-off): the clock decides while the cut-off is ahead.
    assert last(d1, now=lambda: t1 - timedelta(seconds=1)) == d0
    assert last(d1, now=lambda: utc(2016, 6, 18)) == d1
    # Seen live on d0's evening: invisible before that, even as of d0 itself.
    assert last(d0, known_at=t0 - timedelta(hours=1)) == date(2016, 6, 15)


# Offsets (minutes) around the session's knowledge cut-off: ingests before it are "live".
_CUT_DAY = date(2016, 6, 15)
_offsets = st.integers(min_value=-3000, max_value=3000)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    history=st.lists(
        st.tuples(_offsets, st.sampled_from([1.0, 2.0, 3.0, NAN])), min_size=1, max_size=5
    ),
    probes=st.lists(_offsets, min_size=1, max_size=6),
)
def test_property_one_visible_version_the_latest_available_never_a_later_one(
    engine: Engine, history: list[tuple[int, float]], probes: list[int]
) -> None:
    """Random histories of writes of one bar (ingest times around its cut-off, values that may
    repeat or be NaN), read through the real COPY SQL at random knowledge times."""
    cut = calendar.knowledge_cutoff(_CUT_DAY)
    times = sorted({cut + timedelta(minutes=m) for m, _ in history})
    values = [v for _, v in history][: len(times)]
    # The model: a new version whenever the value differs from the current one (NaN = NaN).
    versions: list[tuple[datetime | None, float]] = []  # (available from, value)
    for t, v in zip(times, values, strict=True):
        if not versions:
            versions.append((None if t >= cut else t, v))
        elif not (v == versions[-1][1] or (np.isnan(v) and np.isnan(versions[-1][1]))):
            versions.append((t, v))

    def expected(k: datetime) -> tuple[int, float] | None:
        starts = [a for a, _ in versions]
        ends = [*starts[1:], None]
        hits = [
            (i + 1, v)
            for i, ((a, v), e) in enumerate(zip(versions, ends, strict=True))
            if (a is None or a <= k) and (e is None or e > k)
        ]
        assert len(hits) <= 1
        return hits[0] if hits else None

    ks = sorted({cut + timedelta(minutes=m) for m in probes} | set(times))
    ks += [t - timedelta(microseconds=1) for t in times]
    with engine.connect() as conn, conn.begin() as tx:
        iid = store.begin_ingest(conn, kind="live", source="prop", params={})
        for t, v in zip(times, values, strict=True):
            frame = bars([("PROP", _CUT_DAY, NAN, NAN, NAN, v, v, NAN)])
            store.write_bars(conn, frame, ingest_id=iid, ingested_at=t)
        sid = conn.execute(text("SELECT id FROM md_symbols WHERE symbol = 'PROP'")).scalar_one()
        stored = conn.execute(
            text("SELECT count(*) FROM md_bars WHERE symbol_id = :s"), {"s": sid}
        ).scalar_one()
        assert stored == len(versions)
        seen: dict[datetime, int] = {}
        for k in sorted(set(ks)):
            got = store.read_visible_bars(conn, end=_CUT_DAY, known_at=k, symbol_ids=[sid])
            assert len(got) <= 1  # at most one version per (symbol, session)
            want = expected(k)
            if want is None:
                assert len(got) == 0, k
                continue
            assert len(got) == 1, k
            value = float(got.values["close"][0])
            assert value == want[1] or (np.isnan(value) and np.isnan(want[1]))
            seen[k] = want[0]
        # Earlier knowledge never sees a later revision.
        order = [seen[k] for k in sorted(seen)]
        assert order == sorted(order)
        tx.rollback()


# ------------------------------------------------------------------------------------------------
# The source: symbol filter, validation


def test_symbol_filter_sectors_and_errors(clean_db: Engine) -> None:
    with pytest.raises(DataFormatError, match="no \\^SPX bars stored"):
        DatabaseSource(clean_db).load()
    assert DatabaseSource(clean_db).newest_session() is None
    store.load_embedded_vintage(clean_db, through=date(1992, 12, 31))
    d = date(1992, 6, 30)
    got = DatabaseSource(clean_db, symbols=["MSFT", "AAPL", "MSFT"]).load(end=d)
    emb = EmbeddedSource().load(end=d)
    assert got.symbols == ["AAPL", "MSFT"]
    pd.testing.assert_frame_equal(got.closes, emb.closes[["AAPL", "MSFT"]])
    pd.testing.assert_frame_equal(got.market, emb.market)
    assert dict(got.sectors) == dict(emb.sectors[["AAPL", "MSFT"]])
    with pytest.raises(DataValidationError, match="NOPE - \\[not_stored\\]"):
        DatabaseSource(clean_db, symbols=["NOPE", "AAPL"]).load(end=d)
    lenient = DatabaseSource(clean_db, symbols=["NOPE", "AAPL"], quarantine=True)
    with pytest.warns(DataQualityWarning, match="not_stored"):
        assert lenient.load(end=d).symbols == ["AAPL"]
    assert [(i.symbol, i.rule) for i in lenient.issues] == [("NOPE", "not_stored")]
    with pytest.raises(ValueError, match="not stock"):
        DatabaseSource(clean_db, symbols=["^SPX"]).load(end=d)
    with pytest.raises(DataFormatError, match="visible on or before 1980"):
        DatabaseSource(clean_db).load(end=date(1980, 1, 2))


def test_a_bad_bar_in_the_store_fails_validation_or_is_quarantined(clean_db: Engine) -> None:
    d = date(1990, 12, 31)
    store.load_embedded_vintage(clean_db, through=d)
    t = datetime.now(UTC)
    # High below low (a later revision with OHLC), and a stock bar on a day the index lacks.
    write(clean_db, bars([("AAPL", date(1990, 12, 28), 10.0, 9.0, 11.0, 10.0, 10.0, 1e6)]), t)
    with pytest.raises(DataValidationError) as err:
        DatabaseSource(clean_db, known_at=t).load(end=d)
    assert "AAPL 1990-12-28 [high_lt_low]" in str(err.value)
    assert any(i.rule == "high_lt_low" and i.symbol == "AAPL" for i in err.value.issues)
    src = DatabaseSource(clean_db, known_at=t, quarantine=True)
    with pytest.warns(DataQualityWarning, match="high_lt_low"):
        md = src.load(end=d)
    assert np.isnan(close_of(md, "AAPL", date(1990, 12, 28)))
    assert {i.rule for i in src.issues} >= {"high_lt_low"}
    # Before the revision was ingested the store's answer was clean (and still is).
    assert DatabaseSource(clean_db).load(end=d).ohlcv is None
    write(clean_db, bars([("MSFT", date(1990, 12, 29), NAN, NAN, NAN, 1.0, 1.0, NAN)]), t)
    with pytest.raises(DataValidationError, match="MSFT 1990-12-29 \\[not_in_index\\]"):
        DatabaseSource(clean_db, known_at=t + timedelta(seconds=1), symbols=["MSFT"]).load(end=d)
