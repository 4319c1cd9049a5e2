"""Live market data end to end, offline: the real FRED and Yahoo adapters over HTTP against the
local provider (their documented formats, the embedded history one session at a time), into the
point-in-time store in the real PostgreSQL, then the pipeline reading it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, text

from bloasis import calendar
from bloasis.app import ingest
from bloasis.app.daily import DailyRequest, run_daily
from bloasis.config import Settings
from bloasis.marketdata.database import DatabaseSource
from bloasis.marketdata.providers.local import LocalProvider
from bloasis.marketdata.sources import EmbeddedSource
from bloasis.store import marketdata as md_store
from bloasis.store.models import MarketBarRow, MarketIngestRow, MarketSeriesRow, OutboxRow

KEY = "0123456789abcdef0123456789abcdef"  # the local provider's FRED key: must never be printed
SEEDED = date(2016, 6, 1)  # the store's history ends here (real VIX and Treasuries exist then)
CURRENT20 = "AAPL AMD BAC BBY CVX GE HD JNJ JPM KO LLY MRK MSFT PEP PFE PG RRC UNH WMT XOM".split()  # noqa: SIM905


def after_close(d: date, minutes: int = 60) -> datetime:
    """The market clock `minutes` after session d's close (past the 30-minute settle delay)."""
    return calendar.session_close(d) + timedelta(minutes=minutes)


def at(d: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm), calendar.TZ).astimezone(UTC)


@pytest.fixture
def provider() -> Iterator[LocalProvider]:
    with LocalProvider(published_through=SEEDED, api_key=KEY) as p:
        yield p


@pytest.fixture
def live(stack_settings: Settings, provider: LocalProvider, clean_db: Engine) -> Settings:
    """Settings of a live deployment on the local provider, over a store holding the embedded
    history through SEEDED."""
    md_store.load_embedded_vintage(clean_db, through=SEEDED)
    return stack_settings.model_copy(
        update={
            "universe": "live",
            "live_universe": "current20",
            "fred_url": provider.base_url,
            "yahoo_url": provider.base_url,
            "fred_api_key": SecretStr(KEY),
            "provider_attempts": 2,
            "provider_timeout_seconds": 2.0,
            "fred_requests_per_second": 1000.0,
            "yahoo_requests_per_second": 1000.0,
            "model_version": f"regime-v2-test-live-{uuid.uuid4().hex[:6]}",
        }
    )


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def stored_close(engine: Engine, symbol: str, d: date) -> list[tuple[int, float, str]]:
    """(version, close, source) of every version of a bar."""
    with engine.connect() as conn:
        return [
            (int(v), float(c), str(s))
            for v, c, s in conn.execute(
                text(
                    "SELECT b.version, b.close, b.source FROM md_bars b JOIN md_symbols s"
                    " ON s.id = b.symbol_id WHERE s.symbol = :s AND b.session = :d"
                    " ORDER BY b.version"
                ),
                {"s": symbol, "d": d},
            )
        ]


def embedded_close(symbol: str, d: date) -> float:
    md = EmbeddedSource().load(end=d)
    return (
        float(md.closes[symbol].iloc[-1])
        if symbol != "^SPX"
        else float(md.market["index_close"].iloc[-1])
    )


def embedded_vix(d: date) -> float:
    m = EmbeddedSource().load(end=d).market
    assert not m["vix_is_proxy"].iloc[-1]
    return float(m["vix"].iloc[-1])


# --- incremental ingest --------------------------------------------------------------------------


def test_incremental_ingest_stores_new_sessions_once(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 3))
    out = ingest.run_ingest(live, now=after_close(date(2016, 6, 3)))
    assert out.status == "ingested"
    assert out.new_sessions == [date(2016, 6, 2), date(2016, 6, 3)]
    assert out.quarantined == [] and out.revisions == []
    # Index and stocks arrive exactly (the provider serves the embedded values).
    for sym in ("^SPX", "AAPL", "XOM"):
        assert stored_close(clean_db, sym, date(2016, 6, 3)) == [
            (1, pytest.approx(embedded_close(sym, date(2016, 6, 3))), "yahoo")
        ]
    # VIX of the newest session from Yahoo (FRED publishes it a day later); Treasuries dated
    # by their publication (the day after they describe).
    with clean_db.connect() as conn:
        cur = md_store.current_series(conn, ["VIX", "UST10Y"], date(2016, 6, 2), date(2016, 6, 3))
    got = {(r.series, r.obs_date): r.source for r in cur.itertuples()}
    assert got[("VIX", date(2016, 6, 3))] == "yahoo"
    assert got[("UST10Y", date(2016, 6, 3))] == "fred"

    # Nothing new: nothing fetched at all.
    provider.clear_requests()
    again = ingest.run_ingest(live, now=after_close(date(2016, 6, 3), 120))
    assert again.status == "up to date" and provider.requests == []

    # One more session: only the lookback window is asked for, one new session stored.
    provider.publish_next()
    n_bars = count(clean_db, MarketBarRow)
    nxt = ingest.run_ingest(live, now=after_close(date(2016, 6, 6)))
    assert nxt.new_sessions == [date(2016, 6, 6)]
    assert count(clean_db, MarketBarRow) == n_bars + 21  # the index and 20 stocks
    starts = {
        r.params.get("period1") for r in provider.requests if r.path.startswith("/v8/finance")
    }
    window_start = calendar.session_open(calendar.session_dates(date(2016, 5, 25), SEEDED)[0])
    assert all(int(s) >= int(window_start.timestamp()) - 86400 for s in starts)
    # Yesterday's VIX now arrives from FRED too: the cross-check agrees, no warning.
    assert not [w for w in nxt.warnings if w.startswith("VIX 2016-06-03")]


def test_the_pipeline_reads_the_store_and_matches_the_embedded_data(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 3))
    ingest.run_ingest(live, now=after_close(date(2016, 6, 3)))
    db = DatabaseSource(clean_db, symbols=CURRENT20).load()
    emb = EmbeddedSource().load(end=date(2016, 6, 3))
    assert db.last_date == date(2016, 6, 3)
    # Closes: through the provider's round trip, chained onto the stored adjusted series.
    np.testing.assert_allclose(
        db.closes[CURRENT20].to_numpy()[-300:], emb.closes[CURRENT20].to_numpy()[-300:], rtol=1e-9
    )
    summary = asyncio.run(
        run_daily(DailyRequest(trigger="manual", relay=False), run_id=uuid.uuid4(), settings=live)
    )
    assert summary["as_of"] == "2016-06-03" and summary["historical"] is False
    assert summary["strategies"] and summary["users"] >= 0


# --- the session calendar ----------------------------------------------------------------------


def test_early_close_holiday_and_the_session_complete_guard(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    md_store.load_embedded_vintage(clean_db, through=date(2016, 11, 22))
    provider.publish_through(date(2016, 11, 23))
    provider.partial = True  # Yahoo also serves the in-progress bar of the next session
    # Wednesday during trading hours: Wednesday is not complete, Tuesday is the target.
    during = ingest.run_ingest(live, now=at(date(2016, 11, 23), 14))
    assert during.target == date(2016, 11, 22) and during.status == "up to date"
    # Thanksgiving (closed), then Friday 25th, an early close at 13:00.
    assert not calendar.is_session(date(2016, 11, 24))
    assert calendar.session_close(date(2016, 11, 25)) == at(date(2016, 11, 25), 13)
    # Friday at 12:00: Friday is still trading; Wednesday is stored, its partial bar is not.
    provider.publish_through(date(2016, 11, 23))
    out = ingest.run_ingest(live, now=at(date(2016, 11, 25), 12))
    assert out.new_sessions == [date(2016, 11, 23)]
    assert stored_close(clean_db, "^SPX", date(2016, 11, 25)) == []
    # Friday 13:45: the early close plus the 30-minute settle delay has passed.
    provider.publish_through(date(2016, 11, 25))
    provider.partial = False
    out = ingest.run_ingest(live, now=at(date(2016, 11, 25), 13, 45))
    assert out.target == date(2016, 11, 25) and out.new_sessions == [date(2016, 11, 25)]
    got = stored_close(clean_db, "^SPX", date(2016, 11, 25))
    assert got == [(1, pytest.approx(embedded_close("^SPX", date(2016, 11, 25))), "yahoo")]
    # The pipeline's own guard: with the store holding Friday, a read at 12:00 stops before it.
    from bloasis.pipeline import load_market_data_with_issues

    noon = at(date(2016, 11, 25), 12)
    md, _ = load_market_data_with_issues(None, "live", settings=live, now=noon)
    assert md.last_date == date(2016, 11, 23)


# --- provider failures: a clear error, nothing written, the next run succeeds -------------------


@pytest.mark.parametrize(
    ("kind", "match", "expect"),
    [
        ("500", "^GSPC", "yahoo ^GSPC 2016-05-24..2016-06-02: HTTP 500 after 2 attempts"),
        ("timeout", "AAPL", "yahoo AAPL 2016-05-24..2016-06-02"),
        ("malformed", "^GSPC", "yahoo ^GSPC 2016-05-24..2016-06-02: malformed JSON"),
        ("empty", "XOM", "yahoo XOM 2016-05-24..2016-06-02"),
        ("500", "DGS10", "fred DGS10"),
    ],
)
def test_provider_failures_write_nothing_and_the_next_run_succeeds(
    live: Settings,
    provider: LocalProvider,
    clean_db: Engine,
    kind: str,
    match: str,
    expect: str,
) -> None:
    provider.publish_through(date(2016, 6, 2))
    # Retried failures fail every attempt (2); a malformed or empty answer is not retried.
    provider.fail_next(kind, match=match, times=2 if kind in ("500", "timeout") else 1,
                       delay_s=3.0)  # fmt: skip
    bars, series = count(clean_db, MarketBarRow), count(clean_db, MarketSeriesRow)
    with pytest.raises(ingest.IngestError) as err:
        ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    assert expect in str(err.value)
    assert (count(clean_db, MarketBarRow), count(clean_db, MarketSeriesRow)) == (bars, series)
    with clean_db.connect() as conn:
        failed = conn.execute(
            select(MarketIngestRow.status, MarketIngestRow.error).order_by(
                MarketIngestRow.id.desc()
            )
        ).first()
    assert failed is not None and failed.status == "failed" and expect in (failed.error or "")
    out = ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    assert out.new_sessions == [date(2016, 6, 2)]


def test_429_retry_after_is_honoured(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 2))
    provider.fail_next("429", match="^GSPC", retry_after=0.5)
    t0 = datetime.now(UTC)
    out = ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    assert out.new_sessions == [date(2016, 6, 2)]
    assert (datetime.now(UTC) - t0).total_seconds() >= 0.5
    assert [r.status for r in provider.requests if "%5EGSPC" in r.path or "^GSPC" in r.path][
        :2
    ] == [429, 200]


def test_quarantine_leaves_a_failing_symbol_out(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 2))
    provider.fail_next("500", match="AAPL", times=2)
    out = ingest.run_ingest(
        live.model_copy(update={"quarantine": True}), now=after_close(date(2016, 6, 2))
    )
    assert out.new_sessions == [date(2016, 6, 2)]
    assert any(q.startswith("yahoo AAPL") for q in out.quarantined)
    assert stored_close(clean_db, "AAPL", date(2016, 6, 2)) == []
    assert len(stored_close(clean_db, "MSFT", date(2016, 6, 2))) == 1
    # The next ingest fetches AAPL from its own last session: the hole is filled.
    provider.publish_next()
    ingest.run_ingest(live, now=after_close(date(2016, 6, 3)))
    assert len(stored_close(clean_db, "AAPL", date(2016, 6, 2))) == 1


# --- revisions, splices, cross-checks ------------------------------------------------------------


def test_a_revision_is_a_new_version_and_earlier_as_of_reads_are_unchanged(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 2))
    first = after_close(date(2016, 6, 2))
    ingest.run_ingest(live, now=first)
    before = DatabaseSource(clean_db, symbols=CURRENT20).load(end=date(2016, 6, 2))
    old = stored_close(clean_db, "KO", date(2016, 6, 2))[0][1]
    provider.revise("KO", date(2016, 6, 2), close=old * 1.01, adjclose=old * 1.01)
    provider.publish_next()
    out = ingest.run_ingest(live, now=after_close(date(2016, 6, 3)))
    assert out.bars["revised"] == 1
    assert out.revisions[0].startswith("KO 2016-06-02 close")
    assert [v for v, _, _ in stored_close(clean_db, "KO", date(2016, 6, 2))] == [1, 2]
    # As of 2016-06-02 (its cut-off, the next open, precedes the revision): the old value, the
    # same data as the run of that day saw; as of 2016-06-03: the revised one.
    again = DatabaseSource(clean_db, symbols=CURRENT20).load(end=date(2016, 6, 2))
    assert again.snapshot_hash() == before.snapshot_hash()
    later = DatabaseSource(clean_db, symbols=CURRENT20).load(end=date(2016, 6, 3))
    assert later.closes["KO"].loc["2016-06-02"] == pytest.approx(old * 1.01)


def test_the_splice_refuses_a_discontinuity_naming_symbol_session_and_values(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 2))
    provider.offset("AAPL", 1.05)
    with pytest.raises(ingest.IngestError) as err:
        ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    stored = embedded_close("AAPL", SEEDED)
    msg = str(err.value)
    assert f"AAPL {SEEDED}: stored close {stored:.6g} (embedded), yahoo {stored * 1.05:.6g}" in msg
    assert "5.00% discontinuity" in msg and "BLOASIS_SPLICE_TOLERANCE" in msg
    provider.offset("AAPL", 1.0)
    provider.offset("^GSPC", 0.9)
    with pytest.raises(ingest.IngestError, match=r"splice refused: \^SPX 2016-06-01"):
        ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))


def test_a_split_reported_by_the_provider_is_undone_not_refused(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 3))
    provider.add_split("AAPL", date(2016, 6, 3), 4.0)  # a 4:1 split on the newest session
    out = ingest.run_ingest(live, now=after_close(date(2016, 6, 3)))
    assert out.quarantined == []
    real = embedded_close("AAPL", date(2016, 6, 3))
    # The session after the split trades at a quarter of the price; its adjusted close is
    # chained onto the stored series, so the total-return history has no jump.
    assert stored_close(clean_db, "AAPL", date(2016, 6, 3))[0][1] == pytest.approx(real / 4)
    db = DatabaseSource(clean_db, symbols=CURRENT20).load()
    assert db.closes["AAPL"].iloc[-1] == pytest.approx(real)


def test_provider_disagreement_is_a_warning_naming_both_values(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 3))
    provider.offset("SP500", 1.02)  # FRED's index level 2% above Yahoo's
    ingest.run_ingest(live, now=after_close(date(2016, 6, 3)))
    provider.offset("VIXCLS", 1.10)  # and FRED's VIX 10% above Yahoo's
    provider.publish_next()
    out = ingest.run_ingest(live, now=after_close(date(2016, 6, 6)))
    spx = embedded_close("^SPX", date(2016, 6, 3))
    assert any(
        w.startswith("index 2016-06-03: yahoo ^GSPC close") and f"{spx:.6g}" in w
        for w in out.warnings
    ), out.warnings
    vix = next(w for w in out.warnings if w.startswith("VIX 2016-06-03"))
    fred, yahoo = 1.1 * embedded_vix(date(2016, 6, 3)), embedded_vix(date(2016, 6, 3))
    assert f"fred VIXCLS {fred:.4g} vs yahoo ^VIX {yahoo:.4g} (9.1% apart" in vix
    # The stored VIX of that session stays the first source's (Yahoo's): no silent pick.
    with clean_db.connect() as conn:
        cur = md_store.current_series(conn, ["VIX"], date(2016, 6, 3), date(2016, 6, 3))
    assert list(cur["source"]) == ["yahoo"]


# --- concurrency, secrets -------------------------------------------------------------------------


def test_two_ingests_at_once_one_does_the_work(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 3))
    now = after_close(date(2016, 6, 3))
    outs: list[Any] = []

    def one() -> None:
        outs.append(ingest.run_ingest(live, now=now))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(o.status for o in outs) == ["ingested", "up to date"]
    index_requests = [r for r in provider.requests if r.path.endswith("%5EGSPC") or
                      r.path.endswith("^GSPC")]  # fmt: skip
    assert len(index_requests) == 1


def test_the_api_key_is_never_printed(
    live: Settings,
    provider: LocalProvider,
    clean_db: Engine,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    provider.publish_through(date(2016, 6, 2))
    provider.fail_next("500", match="DGS2", times=2)
    with pytest.raises(ingest.IngestError) as err:
        ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    report = ingest.data_status(live, now=after_close(date(2016, 6, 2)))
    text_out = ingest.format_data_status(report) + json.dumps(report, default=str)
    with clean_db.connect() as conn:
        errors = " ".join(e or "" for (e,) in conn.execute(select(MarketIngestRow.error)))
    everything = [str(err.value), repr(err.value), caplog.text, text_out, errors,
                  capsys.readouterr().err, repr(live)]  # fmt: skip
    assert "api_key=***" in caplog.text  # the requests were logged, redacted
    for where in everything:
        assert KEY not in where


# --- catch-up: missed sessions computed in order, each once -------------------------------------


def test_catch_up_of_five_sessions_across_a_holiday(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    md_store.load_embedded_vintage(clean_db, through=date(2016, 6, 28))
    provider.publish_through(date(2016, 6, 28))
    settings = live

    def run() -> dict[str, Any]:
        req = DailyRequest(trigger="baseline", relay=False)
        return asyncio.run(run_daily(req, run_id=uuid.uuid4(), settings=settings))

    first = run()
    assert first["as_of"] == "2016-06-28" and "caught_up" not in first
    # Down for five sessions, across Independence Day (Monday 2016-07-04).
    provider.publish_through(date(2016, 7, 6))
    out = ingest.run_ingest(settings, now=after_close(date(2016, 7, 6)))
    missed = [date(2016, 6, 29), date(2016, 6, 30), date(2016, 7, 1), date(2016, 7, 5)]
    assert out.new_sessions == [*missed, date(2016, 7, 6)]
    summary = run()
    assert summary["as_of"] == "2016-07-06" and summary["historical"] is False
    assert summary["caught_up"] == [d.isoformat() for d in missed]
    # Each session stored and published exactly once, in order; the older ones historical.
    with clean_db.connect() as conn:
        regimes = [
            r.as_of for r in conn.execute(
                text("SELECT as_of FROM regimes WHERE model_version = :m ORDER BY id"),
                {"m": settings.model_version + "@live"},
            )
        ]  # fmt: skip
        events = [
            json.loads(p)
            for (p,) in conn.execute(
                select(OutboxRow.payload)
                .where(OutboxRow.topic == "strategy-events")
                .order_by(OutboxRow.id)
            )
        ]
    tail = regimes[-5:]
    assert tail == [*missed, date(2016, 7, 6)] and len(set(regimes)) == len(regimes)
    # One event per profile strategy (its per-symbol events follow it, flagged alike).
    profile_events = [
        e for e in events if not e.get("user_id") and e["event_type"] == "strategy_signal"
    ]
    flags = {(e["strategy_id"], e["historical"]) for e in profile_events}
    per_symbol = [e for e in events if e["event_type"] == "strategy_signal_symbol"]
    assert per_symbol and all(
        (e["strategy_id"], e["historical"]) in flags for e in per_symbol if not e["user_id"]
    )
    by_day: dict[str, list[bool]] = {}
    for e in profile_events:
        by_day.setdefault(e["as_of"], []).append(e["historical"])
    assert list(by_day)[-5:] == [d.isoformat() for d in [*missed, date(2016, 7, 6)]]
    assert all(len(v) == 3 for v in by_day.values())  # three profiles, once each
    assert [all(v) for k, v in by_day.items() if k > "2016-06-28"] == [True] * 4 + [False]
    # A rerun computes nothing and publishes nothing.
    n = count(clean_db, OutboxRow)
    again = run()
    assert "caught_up" not in again and count(clean_db, OutboxRow) == n


def test_regime_events_of_a_catch_up_chain_previous_regimes(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    """The change events of caught-up sessions are historical and each names the regime of
    the session before it."""
    from bloasis.app.daily import missed_sessions

    md_store.load_embedded_vintage(clean_db, through=date(2020, 2, 28))
    provider.publish_through(date(2020, 2, 28))
    first = asyncio.run(
        run_daily(
            DailyRequest(strategies=False, relay=False, history_days=30),
            run_id=uuid.uuid4(),
            settings=live,
        )
    )
    assert first["as_of"] == "2020-02-28"
    # Two weeks missed in March 2020: bull -> bear -> crisis within them.
    provider.publish_through(date(2020, 3, 13))
    ingest.run_ingest(live, now=after_close(date(2020, 3, 13)))
    mv = live.model_version + "@live"
    md = DatabaseSource(clean_db, symbols=CURRENT20).load()
    assert len(missed_sessions(clean_db, mv, md.index, date(2020, 3, 13), tiers=False)) == 9
    asyncio.run(
        run_daily(DailyRequest(strategies=False, relay=False), run_id=uuid.uuid4(), settings=live)
    )
    with clean_db.connect() as conn:
        changes = [
            json.loads(p)
            for (p,) in conn.execute(
                select(OutboxRow.payload)
                .where(OutboxRow.topic == "regime-events", OutboxRow.event_id.like(f"%:{mv}:%"))
                .order_by(OutboxRow.id)
            )
        ]
        labels = dict(
            conn.execute(
                text("SELECT as_of, regime FROM regimes WHERE model_version = :m"), {"m": mv}
            ).all()
        )
        alerts = conn.execute(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.topic == "alert-events")
        ).scalar_one()
    march = [c for c in changes if c["regime"]["as_of"] >= "2020-03-02"]
    assert march, changes
    for c in march:
        day = date.fromisoformat(c["regime"]["as_of"])
        assert c["previous_regime"] == labels[calendar.previous_session(day)]
        assert c["historical"] is (day < date(2020, 3, 13))
    # Alerts only for the live session (e.g. entering crisis), never for the history.
    live_changes = [c for c in march if not c["historical"]]
    assert alerts <= 4 * len(live_changes) + 4


def test_missed_sessions_beyond_the_cap_get_the_regime_only(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    settings = live.model_copy(update={"catch_up_max_sessions": 2})
    provider.publish_through(SEEDED)
    asyncio.run(run_daily(DailyRequest(relay=False), run_id=uuid.uuid4(), settings=settings))
    provider.publish_through(date(2016, 6, 8))  # five sessions later
    ingest.run_ingest(settings, now=after_close(date(2016, 6, 8)))
    out = asyncio.run(run_daily(DailyRequest(relay=False), run_id=uuid.uuid4(), settings=settings))
    assert out["caught_up"] == ["2016-06-06", "2016-06-07"]
    mv = settings.model_version + "@live"
    with clean_db.connect() as conn:
        days = {
            r.as_of: r.trigger
            for r in conn.execute(
                text("SELECT as_of, trigger FROM regimes WHERE model_version = :m"), {"m": mv}
            )
        }
        strategies = {
            r.as_of
            for r in conn.execute(
                text("SELECT DISTINCT as_of FROM strategies WHERE model_version = :m"), {"m": mv}
            )
        }
    assert days[date(2016, 6, 2)] == "backfill" and days[date(2016, 6, 3)] == "backfill"
    assert strategies == {SEEDED, date(2016, 6, 6), date(2016, 6, 7), date(2016, 6, 8)}


def test_data_status_names_each_series_source(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 3))
    ingest.run_ingest(live, now=after_close(date(2016, 6, 3)))
    report = ingest.data_status(live, now=after_close(date(2016, 6, 3), 90))
    series = {r["key"]: r for r in report["series"]}
    assert series["^SPX"]["last"] == "2016-06-03" and series["^SPX"]["source"] == "yahoo"
    assert series["^SPX"]["behind"] == 0 and series["^SPX"]["lag_hours"] == 1.0
    assert series["VIX"]["source"] == "yahoo" and series["UST10Y"]["source"] == "fred"
    assert series["BAA_AAA"]["source"] == "embedded"  # no newer month published yet
    assert len(report["stocks"]) == 20 and report["ingests"][0]["status"] == "completed"
    text_out = ingest.format_data_status(report)
    assert "^SPX      last 2016-06-03  source yahoo" in text_out
    assert "stocks    20 symbols" in text_out


def test_settings_validate_live_names(stack_settings: Settings) -> None:
    from bloasis.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="BLOASIS_LIVE_UNIVERSE='sp600'"):
        load_settings(state_dir=stack_settings.state_dir, live_universe="sp600")
    with pytest.raises(SettingsError, match="BLOASIS_MARKET_CLOCK"):
        load_settings(state_dir=stack_settings.state_dir, market_clock="lunar")
    with pytest.raises(SettingsError, match=r"BLOASIS_LIVE_PROVIDERS='fred': .*yahoo is required"):
        load_settings(state_dir=stack_settings.state_dir, live_providers="fred")
    assert dataclasses.is_dataclass(ingest.IngestOutcome)


# --- the chain under Prefect: ingest, then the pipeline (catch-up sessions as subflow runs) ---


@pytest.mark.prefect
def test_ingest_flow_runs_the_pipeline_for_each_new_session_in_order(
    flow_db: Engine,
    stack_settings: Settings,
    provider: LocalProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    from prefect.client.orchestration import get_client

    from bloasis.clock import market_now, write_clock_file
    from flows.ingest import market_data_ingest
    from flows.pipeline import daily_pipeline

    clock = tmp_path / "clock.json"
    mv = f"regime-v2-test-flow-live-{uuid.uuid4().hex[:6]}"
    for k, v in {
        "BLOASIS_MARKET_DATA": "live",
        "BLOASIS_LIVE_UNIVERSE": "current20",
        "BLOASIS_FRED_URL": provider.base_url,
        "BLOASIS_YAHOO_URL": provider.base_url,
        "BLOASIS_FRED_API_KEY": KEY,
        "BLOASIS_MARKET_CLOCK": f"file:{clock}",
        "BLOASIS_MODEL_VERSION": mv,
    }.items():
        monkeypatch.setenv(k, v)
    md_store.load_embedded_vintage(flow_db, through=SEEDED)
    # The market clock of a replay: the provider published SEEDED a moment ago.
    write_clock_file(clock, SEEDED, datetime.now(UTC))
    assert market_now(stack_settings.model_copy(update={"market_clock": f"file:{clock}"})) > (
        calendar.session_close(SEEDED)
    )
    first = asyncio.run(daily_pipeline(history_days=20, relay=False))
    assert first["as_of"] == SEEDED.isoformat()

    provider.publish_through(date(2016, 6, 6))
    write_clock_file(clock, date(2016, 6, 6), datetime.now(UTC))
    out = asyncio.run(market_data_ingest())
    assert out["new_sessions"] == ["2016-06-02", "2016-06-03", "2016-06-06"]
    pipe = out["pipeline"]
    assert pipe["as_of"] == "2016-06-06" and pipe["caught_up"] == ["2016-06-02", "2016-06-03"]

    async def run_names() -> list[str]:
        async with get_client() as client:
            runs = await client.read_flow_runs()
        return [r.name for r in runs]

    names = asyncio.run(run_names())
    for d in ("2016-06-02", "2016-06-03", "2016-06-06"):
        assert f"pipeline-{d}" in names, names
    # Nothing new: the ingest fetches nothing and runs no pipeline.
    again = asyncio.run(market_data_ingest())
    assert again["status"] == "up to date" and "pipeline" not in again


def test_a_universe_member_without_stored_bars_is_left_out_not_fatal(
    live: Settings, provider: LocalProvider, clean_db: Engine, tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from bloasis.marketdata.universe import load_universe
    from bloasis.pipeline import load_market_data_with_issues

    members = load_universe("current20").members
    path = tmp_path / "u.csv"
    path.write_text(
        "symbol,name,sector\n"
        + "".join(f"{m.symbol},{m.name},{m.sector}\n" for m in members)
        + "ZZZZ,Gone Inc,Energy\n"
    )
    settings = live.model_copy(update={"live_universe": f"file:{path}"})
    provider.publish_through(date(2016, 6, 2))
    out = ingest.run_ingest(settings, now=after_close(date(2016, 6, 2)))
    assert any(q.startswith("yahoo ZZZZ") for q in out.quarantined)  # not found: left out
    caplog.set_level(logging.WARNING)
    md, _ = load_market_data_with_issues(None, "live", settings=settings)
    assert "ZZZZ" not in md.symbols and len(md.symbols) == 20
    assert "1 of 21 universe members have no stored bars and are left out (ZZZZ)" in caplog.text


def test_a_bad_bar_fails_the_ingest_naming_it_or_is_quarantined(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    from bloasis.marketdata import DataValidationError

    provider.publish_through(date(2016, 6, 2))
    provider.revise("MSFT", date(2016, 6, 2), close=-1.0)  # a broken print
    with pytest.raises(DataValidationError, match=r"MSFT 2016-06-02 \[non_positive\]"):
        ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    assert stored_close(clean_db, "MSFT", date(2016, 6, 2)) == []
    out = ingest.run_ingest(
        live.model_copy(update={"quarantine": True}), now=after_close(date(2016, 6, 2))
    )
    assert any("MSFT 2016-06-02 [non_positive]" in q for q in out.quarantined)
    assert stored_close(clean_db, "MSFT", date(2016, 6, 2)) == []
    assert len(stored_close(clean_db, "KO", date(2016, 6, 2))) == 1


def test_the_first_ingest_loads_the_embedded_history_as_the_first_vintage(
    stack_settings: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    settings = stack_settings.model_copy(
        update={"universe": "live", "live_universe": "current20", "fred_url": provider.base_url,
                "yahoo_url": provider.base_url, "fred_api_key": SecretStr(KEY)}
    )  # fmt: skip
    out = ingest.run_ingest(settings, now=after_close(SEEDED))
    # The index and the 20 stocks since 1990 (each from its listing), and the series.
    assert out.seeded == count(clean_db, MarketBarRow) + count(clean_db, MarketSeriesRow)
    assert count(clean_db, MarketBarRow) > 170_000
    assert out.status == "up to date"  # the store now reaches 2022-12-28, past the target
    assert "history vintage loaded first" in ingest.format_outcome(out)
    again = ingest.run_ingest(settings, now=after_close(SEEDED))
    assert again.seeded == 0


def test_a_rerun_of_a_past_session_reads_it_as_known_at_its_cut_off(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    """The regime of a session, recomputed after a revision of its data arrived, is computed
    from the same data as the first time (same snapshot hash): reproducible."""
    provider.publish_through(date(2016, 6, 2))
    ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    req = DailyRequest(strategies=False, relay=False)
    first = asyncio.run(run_daily(req, run_id=uuid.uuid4(), settings=live))
    assert first["as_of"] == "2016-06-02"
    old = stored_close(clean_db, "KO", date(2016, 6, 2))[0][1]
    provider.revise("KO", date(2016, 6, 2), close=old * 1.01, adjclose=old * 1.01)
    provider.publish_next()
    out = ingest.run_ingest(live, now=after_close(date(2016, 6, 3)))
    assert out.bars["revised"] == 1
    # Another model version: a real recomputation of 2016-06-02, not a no-op rerun.
    other = live.model_copy(update={"model_version": live.model_version + "-b"})
    again = asyncio.run(
        run_daily(dataclasses.replace(req, as_of=date(2016, 6, 2)), run_id=uuid.uuid4(),
                  settings=other)
    )  # fmt: skip
    assert again["historical"] is True
    with clean_db.connect() as conn:
        hashes = dict(
            conn.execute(
                text("SELECT id::text, data_snapshot_hash FROM pipeline_runs WHERE id::text IN"
                     " (:a, :b)"), {"a": first["run_id"], "b": again["run_id"]},
            ).all()
        )  # fmt: skip
    assert hashes[first["run_id"]] == hashes[again["run_id"]]
    newest = asyncio.run(run_daily(req, run_id=uuid.uuid4(), settings=other))
    assert newest["as_of"] == "2016-06-03"
    with clean_db.connect() as conn:
        later = conn.execute(
            text("SELECT data_snapshot_hash FROM pipeline_runs WHERE id::text = :a"),
            {"a": newest["run_id"]},
        ).scalar_one()
    assert later != hashes[first["run_id"]]


def test_yahoo_alone_needs_no_fred_key(
    live: Settings, provider: LocalProvider, clean_db: Engine, tmp_path: Any
) -> None:
    from bloasis.app import steps
    from bloasis.clock import write_clock_file

    clock = tmp_path / "clock.json"  # the market's clock, as a replay's provider keeps it
    write_clock_file(clock, date(2016, 6, 3), datetime.now(UTC))
    settings = live.model_copy(
        update={"live_providers": "yahoo", "fred_api_key": None, "market_clock": f"file:{clock}"}
    )
    provider.publish_through(date(2016, 6, 3))
    provider.clear_requests()
    out = steps.ingest_market_data(settings)
    assert out.new_sessions and not [r for r in provider.requests if r.path.startswith("/fred")]
    with clean_db.connect() as conn:
        cur = md_store.current_series(conn, ["VIX"], date(2016, 6, 2), date(2016, 6, 3))
    assert set(cur["source"]) == {"yahoo"}


def test_vix_from_neither_provider_fails_naming_both(
    live: Settings, provider: LocalProvider, clean_db: Engine
) -> None:
    provider.publish_through(date(2016, 6, 2))
    provider.fail_next("500", match="VIX", times=4)  # ^VIX and VIXCLS, every attempt
    with pytest.raises(ingest.IngestError) as err:
        ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    msg = str(err.value)
    assert msg.startswith("VIX unavailable from every provider: ")
    assert "yahoo ^VIX 2016-05-24..2016-06-02: HTTP 500" in msg and "fred VIXCLS" in msg
    # One of them answering is a warning, not a failure.
    provider.fail_next("500", match="VIXCLS", times=2)
    out = ingest.run_ingest(live, now=after_close(date(2016, 6, 2)))
    assert out.new_sessions == [date(2016, 6, 2)]
    assert any(
        w.startswith("VIX cross-check source unavailable: fred VIXCLS") for w in out.warnings
    )


def test_an_index_missing_a_session_is_refused_naming_it() -> None:
    """Pure logic of the check (no server): the provider's index bars skip a session."""
    from bloasis.marketdata.providers import DailyBars

    days = calendar.session_dates(date(2016, 5, 31), date(2016, 6, 3))
    kept = [d for d in days if d != date(2016, 6, 2)]
    px = np.linspace(2090.0, 2100.0, len(kept))
    bars = DailyBars("^GSPC", kept, px, px + 5, px - 5, px, px, np.full(len(kept), 1e9), [], [])
    fetch = ingest._Fetch("yahoo", "^GSPC", "^SPX", date(2016, 5, 31), date(2016, 6, 3))
    stored = pd.DataFrame(
        {"symbol": ["^SPX"], "session": [date(2016, 5, 31)], "open": [px[0]], "high": [px[0] + 5],
         "low": [px[0] - 5], "close": [px[0]], "adj_close": [px[0]], "volume": [1e9],
         "source": ["embedded"]}
    )  # fmt: skip
    settings = Settings(universe="embedded")
    with pytest.raises(ingest.IngestError, match=r"no bar for session\(s\) 2016-06-02 "):
        ingest._transform(settings, {fetch: bars}, stored, pd.DataFrame(), date(2016, 6, 3),
                          date(2016, 5, 31))  # fmt: skip
