"""Smoke test against the real FRED and Yahoo services (opt in: BLOASIS_NETWORK_TESTS=1, and
BLOASIS_FRED_API_KEY for FRED). Everything else runs offline against the local provider, which
speaks their documented formats; this checks that the formats still are what the adapters
read, and that a real ingest splices onto the embedded history."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine

from bloasis import calendar
from bloasis.config import Settings, load_settings

# Deselected unless BLOASIS_NETWORK_TESTS=1 (tests/conftest.py).
pytestmark = [pytest.mark.network]


def fred_key() -> str:
    key = os.environ.get("BLOASIS_FRED_API_KEY", "")
    assert key, "the FRED part needs BLOASIS_FRED_API_KEY (a free key from fred.stlouisfed.org)"
    return key


def settings() -> Settings:
    return load_settings(state_dir="/nonexistent")


def test_yahoo_index_bars_and_a_real_split() -> None:
    from bloasis.marketdata.providers.yahoo import YahooProvider

    y = YahooProvider.from_settings(settings())
    today = calendar.exchange_today()
    bars = y.daily_bars("^GSPC", today - timedelta(days=20), today)
    assert bars.sessions and all(calendar.is_session(d) for d in bars.sessions)
    assert 1000 < float(bars.close[-1]) < 50000
    # AAPL's 4:1 split, ex-date 2020-08-31, as the chart API's events list it.
    aapl = y.daily_bars("AAPL", date(2020, 8, 3), date(2020, 9, 30))
    assert (date(2020, 8, 31), 4.0) in aapl.splits


def test_fred_series_and_the_index_cross_check() -> None:
    from bloasis.marketdata.providers.fred import FredProvider
    from bloasis.marketdata.providers.yahoo import YahooProvider

    fred_key()
    s = settings()
    f = FredProvider.from_settings(s)
    end = calendar.exchange_today()
    start = end - timedelta(days=45)
    for sid in ("VIXCLS", "DGS10", "DGS2", "SP500"):
        obs = f.observations(sid, start, end)
        assert any(o.value is not None for o in obs), sid
    baa = f.observations("BAA", date(2024, 1, 1), date(2024, 12, 31))
    assert len(baa) == 12 and all(o.date.day == 1 for o in baa)
    sp = {o.date: o.value for o in f.observations("SP500", start, end) if o.value}
    gspc = YahooProvider.from_settings(s).daily_bars("^GSPC", start, end)
    both = [(d, c) for d, c in zip(gspc.sessions, gspc.close, strict=True) if d in sp]
    assert both and all(abs(c / sp[d] - 1) < s.crosscheck_tolerance for d, c in both)


def test_a_real_ingest_splices_onto_the_embedded_history(
    stack_settings: Settings, clean_db: Engine
) -> None:
    from bloasis.app import ingest

    fred_key()
    live = stack_settings.model_copy(
        update={
            "universe": "live",
            "live_universe": "current20",
            "fred_api_key": settings().fred_api_key,
            "fred_url": settings().fred_url,
            "yahoo_url": settings().yahoo_url,
        }
    )
    out = ingest.run_ingest(live)
    assert out.status == "ingested" and out.new_sessions
    assert out.new_sessions[-1] == calendar.latest_complete_session(
        datetime.now(UTC), timedelta(seconds=live.session_settle_seconds)
    )
    print(ingest.format_outcome(out))
