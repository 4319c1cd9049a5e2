"""Live-provider adapters (FRED, Yahoo) over real HTTP on loopback against the local provider
server: exact round trips of the embedded data, the publication clock, retries and Retry-After,
timeouts, malformed/empty/unknown answers, the rate limit, corporate actions, in-progress bars,
secrets kept out of errors and logs, and the standalone server process."""

from __future__ import annotations

import itertools
import logging
import math
import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bloasis import calendar
from bloasis.marketdata.providers import (
    DailyBars,
    ProviderConfigError,
    ProviderDataError,
    ProviderError,
    ProviderUnavailable,
    SymbolNotFound,
)
from bloasis.marketdata.providers.fred import FredProvider, parse_observations
from bloasis.marketdata.providers.http import (
    REDACTED_LOGGERS,
    HttpClient,
    RateLimiter,
    RedactingFilter,
    install_log_redaction,
    parse_retry_after,
)
from bloasis.marketdata.providers.local import LocalProvider
from bloasis.marketdata.providers.yahoo import HEADERS, YahooProvider, parse_chart, span_seconds
from bloasis.marketdata.sources import (
    EMBEDDED_PATH,
    EmbeddedSource,
    _read_embedded,
    credit_months_of,
)
from bloasis.marketdata.synthetic import SyntheticSource
from bloasis.marketdata.types import MarketData

KEY = "s3cr3t-fred-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def md() -> MarketData:
    return EmbeddedSource().load()


@pytest.fixture
def lp(md: MarketData) -> Iterator[LocalProvider]:
    raw = _read_embedded(str(EMBEDDED_PATH))
    with LocalProvider(md, published_through=date(2017, 1, 3), api_key=KEY, raw=raw) as server:
        yield server


class Sleeps:
    """An injected `sleep`: records the waits, never sleeps."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def http(provider: str, sleep: Callable[[float], None] | None = None, **kw: Any) -> HttpClient:
    args: dict[str, Any] = {
        "timeout_s": 2.0,
        "attempts": 3,
        "max_retry_after_s": 5.0,
        "requests_per_second": 1e6,  # spacing 1 us: the limiter never waits in these tests
        "sleep": sleep or Sleeps(),
    }
    args.update(kw)
    return HttpClient(provider, **args)


def fred(lp: LocalProvider, key: str | None = KEY, **kw: Any) -> FredProvider:
    return FredProvider(lp.base_url, key, http("fred", **kw))


def yahoo(lp: LocalProvider, **kw: Any) -> YahooProvider:
    return YahooProvider(lp.base_url, http("yahoo", **kw))


def col(md: MarketData, name: str, first: date, last: date) -> np.ndarray:
    return md.between(first, last).market[name].to_numpy(dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# Round trips of the embedded data


def test_fred_vixcls_2016_round_trips_exactly(lp: LocalProvider, md: MarketData) -> None:
    obs = fred(lp).observations("VIXCLS", date(2016, 1, 1), date(2016, 12, 31))
    values = {o.date: o.value for o in obs}
    sessions = calendar.session_dates(date(2016, 1, 1), date(2016, 12, 31))
    assert [d for d, v in values.items() if v is not None] == sessions
    vix = md.between("2016-01-01", "2016-12-31").market
    assert not vix["vix_is_proxy"].any()
    assert [values[d] for d in sessions] == vix["vix"].tolist()
    assert values[date(2016, 1, 4)] == 20.7 and values[date(2016, 12, 30)] == 14.04
    # FRED lists weekday holidays as "." (None): New Year, MLK day, Good Friday...
    assert values[date(2016, 1, 1)] is None and values[date(2016, 3, 25)] is None
    assert all(d.weekday() < 5 for d in values)


def test_fred_dgs10_dates_and_values_as_shipped(lp: LocalProvider) -> None:
    raw = _read_embedded(str(EMBEDDED_PATH))
    obs = fred(lp).observations("DGS10", date(2016, 10, 3), date(2016, 10, 31))
    days = raw.ust_days.astype("datetime64[D]")
    lo, hi = (
        np.searchsorted(days, np.datetime64("2016-10-03")),
        np.searchsorted(days, np.datetime64("2016-11-01")),
    )
    expected = dict(zip(days[lo:hi].tolist(), raw.ust10y[lo:hi].tolist(), strict=True))
    got = {o.date: o.value for o in obs if o.value is not None}
    assert got == expected
    assert got[date(2016, 10, 3)] == 1.63
    # Columbus Day: NYSE open, bond market closed: FRED's ".".
    assert {o.date: o.value for o in obs}[date(2016, 10, 10)] is None


def test_fred_baa_aaa_months_as_shipped(lp: LocalProvider) -> None:
    raw = _read_embedded(str(EMBEDDED_PATH))
    months = raw.credit_months.astype("datetime64[D]").tolist()
    f = fred(lp)
    for series, values in (("BAA", raw.baa), ("AAA", raw.aaa)):
        obs = f.observations(series, date(2016, 1, 1), date(2016, 12, 31))
        assert [o.date for o in obs] == [date(2016, m, 1) for m in range(1, 13)]
        shipped = dict(zip(months, values.tolist(), strict=True))
        assert [o.value for o in obs] == [shipped[o.date] for o in obs]
    baa = f.observations("BAA", date(2016, 12, 1), date(2016, 12, 31))
    aaa = f.observations("AAA", date(2016, 12, 1), date(2016, 12, 31))
    assert (baa[0].value, aaa[0].value) == (4.83, 4.06)


def test_yahoo_index_ohlcv_round_trips_exactly(lp: LocalProvider, md: MarketData) -> None:
    first, last = date(2016, 11, 28), date(2016, 12, 30)
    bars = yahoo(lp).daily_bars("^GSPC", first, last)
    assert isinstance(bars, DailyBars) and bars.symbol == "^GSPC"
    assert bars.sessions == calendar.session_dates(first, last)
    assert bars.close.tolist() == col(md, "index_close", first, last).tolist()
    assert bars.adj_close.tolist() == bars.close.tolist()
    assert bars.open.tolist() == col(md, "index_open", first, last).tolist()
    assert bars.high.tolist() == col(md, "index_high", first, last).tolist()
    assert bars.low.tolist() == col(md, "index_low", first, last).tolist()
    assert bars.volume.tolist() == col(md, "index_volume", first, last).tolist()
    assert bars.close[-1] == 2238.83 and bars.dividends == [] and bars.splits == []


def test_yahoo_stock_closes_round_trip_and_unknown_fields_are_nan(
    lp: LocalProvider, md: MarketData
) -> None:
    bars = yahoo(lp).daily_bars("AAPL", date(2016, 1, 1), date(2016, 12, 31))
    expected = md.between("2016-01-01", "2016-12-31").closes["AAPL"]
    assert bars.sessions == [ts.date() for ts in expected.index]
    assert bars.close.tolist() == expected.tolist() == bars.adj_close.tolist()
    assert len(bars) == 252
    # The embedded set has no stock OHLCV: Yahoo's nulls arrive as NaN.
    assert np.isnan(bars.open).all() and np.isnan(bars.volume).all()


def test_yahoo_vix_is_real_vix_close_only(lp: LocalProvider, md: MarketData) -> None:
    bars = yahoo(lp).daily_bars("^VIX", date(2016, 12, 1), date(2016, 12, 30))
    assert bars.close.tolist() == col(md, "vix", date(2016, 12, 1), date(2016, 12, 30)).tolist()
    assert np.isnan(bars.open).all() and np.isnan(bars.volume).all()
    # No real VIX after 2019-01-03 in the embedded set: a session span without bars is an error.
    lp.publish_through(date(2019, 2, 1))
    with pytest.raises(ProviderDataError, match="no bars"):
        yahoo(lp).daily_bars("^VIX", date(2019, 1, 7), date(2019, 1, 11))


def test_yahoo_timestamps_are_session_opens(lp: LocalProvider) -> None:
    period1 = int(datetime(2016, 3, 10, tzinfo=UTC).timestamp())
    period2 = int(datetime(2016, 3, 16, tzinfo=UTC).timestamp())
    resp = httpx.get(
        f"{lp.base_url}/v8/finance/chart/%5EGSPC",
        params={"period1": period1, "period2": period2, "interval": "1d"},
        headers=HEADERS,
    )
    result = resp.json()["chart"]["result"][0]
    days = calendar.session_dates(date(2016, 3, 10), date(2016, 3, 15))
    assert result["timestamp"] == [int(calendar.session_open(d).timestamp()) for d in days]
    assert result["meta"]["exchangeTimezoneName"] == "America/New_York"
    # 2016-03-14 is after the DST switch: the open moves from 14:30 to 13:30 UTC.
    assert result["meta"]["gmtoffset"] == -14400
    assert calendar.session_open(date(2016, 3, 11)).hour == 14
    assert calendar.session_open(date(2016, 3, 14)).hour == 13


def test_concurrent_fetches_share_one_client(lp: LocalProvider, md: MarketData) -> None:
    y = yahoo(lp)
    symbols = md.symbols
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = dict(
            zip(
                symbols,
                pool.map(lambda s: y.daily_bars(s, date(2016, 12, 1), date(2016, 12, 30)), symbols),
                strict=True,
            )
        )
    for s in symbols:
        assert got[s].close.tolist() == md.between("2016-12-01", "2016-12-30").closes[s].tolist()
    assert y.http.stats()["requests"] == len(symbols)
    assert y.http.stats()["bytes"] > 0


def test_synthetic_universe_with_ohlcv_and_derived_credit() -> None:
    syn = SyntheticSource(4, 1, seed=3).load()
    assert syn.ohlcv is not None
    first, last = syn.first_date, syn.last_date
    with LocalProvider(syn, published_through=last, api_key=KEY) as lp:
        symbol = syn.symbols[1]
        bars = yahoo(lp).daily_bars(symbol, first, last)
        assert bars.sessions == [ts.date() for ts in syn.index]
        assert bars.close.tolist() == syn.closes[symbol].tolist() == bars.adj_close.tolist()
        for field in ("open", "high", "low", "volume"):
            assert getattr(bars, field).tolist() == syn.ohlcv[field][symbol].tolist()
        f = fred(lp)
        dgs10 = [o for o in f.observations("DGS10", first, last) if o.value is not None]
        expected = syn.market["ust10y"].iloc[:-1]  # the last session is published tomorrow
        assert [o.value for o in dgs10] == expected.tolist()
        # Monthly BAA and AAA whose difference is the data's credit spread (in cents).
        spread = credit_months_of(syn)
        spread = spread[[ts.date() >= first for ts in spread.index]]
        baa = f.observations("BAA", first, last)
        aaa = f.observations("AAA", first, last)
        assert [o.date for o in baa] == [o.date for o in aaa]
        assert baa and [o.date for o in baa] == [ts.date() for ts in spread.index[: len(baa)]]
        for b, a, want in zip(baa, aaa, spread.tolist(), strict=False):
            assert b.value is not None and a.value is not None
            assert abs((b.value - a.value) - want) <= 0.0051


# ------------------------------------------------------------------------------------------------
# The clock


def test_values_appear_only_once_published(md: MarketData) -> None:
    with LocalProvider(md, published_through=date(2016, 1, 5), api_key=KEY) as lp:
        f, y = fred(lp), yahoo(lp)
        week = (date(2016, 1, 4), date(2016, 1, 8))
        assert y.daily_bars("^GSPC", *week).sessions == [date(2016, 1, 4), date(2016, 1, 5)]
        # FRED publishes a day's value the next day.
        assert [o.date for o in f.observations("SP500", *week)] == [date(2016, 1, 4)]
        assert lp.publish_next() == date(2016, 1, 6) == lp.published_through
        assert y.daily_bars("^GSPC", *week).sessions[-1] == date(2016, 1, 6)
        sp = f.observations("SP500", *week)
        assert [o.date for o in sp] == [date(2016, 1, 4), date(2016, 1, 5)]
        assert sp[-1].value == 2016.71
        # Monthly: a month's value once the clock is in a later month.
        lp.publish_through(date(2016, 1, 29))
        months = (date(2015, 11, 1), date(2016, 2, 1))
        assert [o.date for o in f.observations("BAA", *months)][-1] == date(2015, 12, 1)
        lp.publish_next()
        assert lp.published_through == date(2016, 2, 1)
        assert [o.date for o in f.observations("BAA", *months)][-1] == date(2016, 1, 1)


def test_publish_next_holds_at_end(md: MarketData) -> None:
    with LocalProvider(md, published_through=date(2022, 12, 22), end=date(2022, 12, 27)) as lp:
        assert lp.next_session == date(2022, 12, 23)
        assert [lp.publish_next() for _ in range(4)] == [
            date(2022, 12, 23),
            date(2022, 12, 27),
            date(2022, 12, 27),
            date(2022, 12, 27),
        ]
        assert lp.next_session is None
        status = httpx.get(lp.base_url + "/control/status").json()
        assert status["published_through"] == "2022-12-27" and status["next_session"] is None
    with LocalProvider(md, published_through=date(2022, 12, 27)) as lp:
        assert lp.publish_next() == date(2022, 12, 28) == lp.publish_next()  # the data's end


# ------------------------------------------------------------------------------------------------
# Retries, failures


def test_429_retry_after_is_honoured_then_success(
    lp: LocalProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bloasis.providers")
    sleeps = Sleeps()
    lp.fail_next("429", match="^GSPC", retry_after=3)
    y = yahoo(lp, sleep=sleeps)
    bars = y.daily_bars("^GSPC", date(2016, 12, 1), date(2016, 12, 30))
    assert len(bars) == 21
    assert sleeps.waits == [3.0]
    assert [r.status for r in lp.requests] == [429, 200]
    assert y.http.stats() | {"bytes": 0} == {
        "requests": 2,
        "retries": 1,
        "bytes": 0,
        "failures": 0,
    }
    lines = [r.getMessage() for r in caplog.records if r.name == "bloasis.providers"]
    assert lines == ["yahoo ^GSPC 2016-12-01..2016-12-30: HTTP 429; retry 1 of 2 in 3.00 s "
                     "(Retry-After)"]  # fmt: skip


def test_503_retry_after_on_fred(lp: LocalProvider) -> None:
    sleeps = Sleeps()
    lp.fail_next("503", retry_after=0.5, times=2)
    obs = fred(lp, sleep=sleeps).observations("SP500", date(2016, 12, 1), date(2016, 12, 30))
    assert obs[-1] == type(obs[-1])(date(2016, 12, 30), 2238.83)
    assert sleeps.waits == [0.5, 0.5]


def test_500_every_attempt_is_unavailable_with_backoff(lp: LocalProvider) -> None:
    sleeps = Sleeps()
    lp.fail_next("500", times=4)
    y = yahoo(lp, sleep=sleeps, attempts=4, backoff_base_s=0.5)
    with pytest.raises(ProviderUnavailable) as info:
        y.daily_bars("^GSPC", date(2022, 12, 1), date(2022, 12, 28))
    err = info.value
    assert str(err) == "yahoo ^GSPC 2022-12-01..2022-12-28: HTTP 500 after 4 attempts"
    assert (err.provider, err.series, err.start, err.end) == (
        "yahoo",
        "^GSPC",
        date(2022, 12, 1),
        date(2022, 12, 28),
    )
    # Exponential with jitter: wait k in [step/2, step], step = 0.5 * 2**(k-1).
    assert len(sleeps.waits) == 3
    for k, wait in enumerate(sleeps.waits, start=1):
        step = 0.5 * 2 ** (k - 1)
        assert step / 2 <= wait <= step
    assert len(lp.requests) == 4 and y.http.stats()["failures"] == 1


def test_timeout_is_unavailable(lp: LocalProvider) -> None:
    lp.fail_next("timeout", times=2, delay_s=1.5)
    f = fred(lp, timeout_s=0.3, attempts=2)
    t0 = time.monotonic()
    with pytest.raises(ProviderUnavailable) as info:
        f.observations("DGS10", date(2016, 1, 4), date(2016, 1, 8))
    assert time.monotonic() - t0 < 1.5  # two 0.3 s timeouts, not two 1.5 s holds
    assert str(info.value) == (
        "fred DGS10 2016-01-04..2016-01-08: timeout (ReadTimeout, 0.3 s) after 2 attempts"
    )


def test_disconnect_is_retried(lp: LocalProvider) -> None:
    lp.fail_next("disconnect", match="AAPL")
    y = yahoo(lp)
    assert len(y.daily_bars("AAPL", date(2016, 12, 1), date(2016, 12, 30))) == 21
    assert [r.fault for r in lp.requests] == ["disconnect", None]
    assert y.http.stats()["retries"] == 1


def test_connection_refused_is_unavailable() -> None:
    with socket_port() as port:
        pass  # closed: nothing listens there now
    y = YahooProvider(f"http://127.0.0.1:{port}", http("yahoo", attempts=2))
    with pytest.raises(ProviderUnavailable, match=r"connection error \(ConnectError.*after 2"):
        y.daily_bars("^GSPC", date(2016, 12, 1), date(2016, 12, 30))


def test_malformed_json_is_a_data_error_not_retried(lp: LocalProvider) -> None:
    lp.fail_next("malformed", match="VIXCLS")
    f = fred(lp)
    with pytest.raises(ProviderDataError, match=r"fred VIXCLS .*: malformed JSON"):
        f.observations("VIXCLS", date(2016, 1, 1), date(2016, 12, 31))
    lp.fail_next("malformed")
    with pytest.raises(ProviderDataError, match="malformed JSON"):
        yahoo(lp).daily_bars("MSFT", date(2016, 1, 1), date(2016, 12, 31))
    assert len(lp.requests) == 2 and f.http.stats()["retries"] == 0


def test_empty_answers_are_data_errors(lp: LocalProvider) -> None:
    lp.fail_next("empty", match="^GSPC")
    with pytest.raises(ProviderDataError, match=r"yahoo \^GSPC .*: no bars"):
        yahoo(lp).daily_bars("^GSPC", date(2016, 12, 1), date(2016, 12, 30))
    lp.fail_next("empty", match="DGS2", times=2)
    f = fred(lp)
    with pytest.raises(ProviderDataError, match=r"fred DGS2 .*: no observations"):
        f.observations("DGS2", date(2016, 12, 1), date(2016, 12, 30))
    assert f.observations("DGS2", date(2016, 12, 1), date(2016, 12, 30), allow_empty=True) == []
    # A span without sessions is not an error.
    weekend = yahoo(lp).daily_bars("^GSPC", date(2016, 12, 24), date(2016, 12, 26))
    assert len(weekend) == 0


def test_unknown_symbol_and_series_are_symbol_not_found(lp: LocalProvider) -> None:
    with pytest.raises(SymbolNotFound, match="HTTP 404: Not Found: No data found, symbol may"):
        yahoo(lp).daily_bars("NOPE", date(2016, 12, 1), date(2016, 12, 30))
    with pytest.raises(SymbolNotFound, match="The series does not exist"):
        fred(lp).observations("NOPE", date(2016, 12, 1), date(2016, 12, 30))
    lp.fail_next("not_found", match="MSFT")
    with pytest.raises(SymbolNotFound) as info:
        yahoo(lp).daily_bars("MSFT", date(2016, 12, 1), date(2016, 12, 30))
    assert isinstance(info.value, ProviderDataError) and info.value.series == "MSFT"
    assert [r.status for r in lp.requests] == [404, 400, 404]


def test_retry_after_over_the_maximum_fails_at_once(lp: LocalProvider) -> None:
    sleeps = Sleeps()
    lp.fail_next("429", retry_after=600)
    f = fred(lp, sleep=sleeps, max_retry_after_s=120)
    with pytest.raises(ProviderUnavailable) as info:
        f.observations("VIXCLS", date(2016, 1, 1), date(2016, 1, 31))
    msg = str(info.value)
    assert "retry after 600 s" in msg and "BLOASIS_PROVIDER_MAX_RETRY_AFTER_SECONDS" in msg
    assert sleeps.waits == [] and len(lp.requests) == 1


def test_bad_and_missing_api_key(lp: LocalProvider) -> None:
    with pytest.raises(ProviderDataError, match="api_key is not registered") as info:
        fred(lp, key="wrong-key-000000").observations("DGS10", date(2016, 1, 4), date(2016, 1, 8))
    assert not isinstance(info.value, SymbolNotFound)
    with pytest.raises(ProviderConfigError, match="BLOASIS_FRED_API_KEY"):
        fred(lp, key=None).observations("DGS10", date(2016, 1, 4), date(2016, 1, 8))
    assert len(lp.requests) == 1  # the missing key never reached the network


# ------------------------------------------------------------------------------------------------
# Rate limit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_rate_limit_spaces_requests(lp: LocalProvider) -> None:
    clock = FakeClock()
    f = fred(lp, requests_per_second=2, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        f.observations("SP500", date(2016, 12, 1), date(2016, 12, 30))
    assert clock.waits == [0.5, 0.5, 0.5]
    assert clock.now == 1.5


def test_rate_limiter_is_thread_safe_in_real_time() -> None:
    limiter = RateLimiter(40.0)  # 25 ms apart
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = limiter.acquire()
        with lock:
            waits.append(wait)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(8):
            pool.submit(take)
    elapsed = time.monotonic() - t0
    # 8 slots 25 ms apart: the last starts >= 175 ms after the first, whatever the scheduling
    # (without the lock, 4 threads would take their first slots together).
    assert len(waits) == 8
    assert elapsed >= 7 * 0.025 - 0.002
    assert max(waits) >= 0.025 - 0.002  # threads queued behind the others' slots
    assert elapsed < 2.0


# ------------------------------------------------------------------------------------------------
# Secrets


def test_api_key_never_in_errors_or_logs(
    lp: LocalProvider, md: MarketData, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "bloasis.providers"):
        caplog.set_level(logging.DEBUG, logger=name)
    span = (date(2016, 1, 4), date(2016, 1, 29))
    f = fred(lp, attempts=2, timeout_s=0.3)
    assert f.observations("DGS10", *span)  # httpx logs the full URL at INFO
    errors: list[ProviderError] = []
    for kind in ("500", "timeout", "malformed", "empty", "not_found"):
        lp.fail_next(kind, times=2, delay_s=1.0)  # 2: every attempt of the retried kinds
        with pytest.raises(ProviderError) as info:
            f.observations("DGS10", *span)
        errors.append(info.value)
        lp.clear_faults()
    lp.fail_next("429", retry_after=999)
    with pytest.raises(ProviderError) as info:
        f.observations("DGS10", *span)
    errors.append(info.value)
    # A server that does not know this key answers FRED's 400.
    with LocalProvider(md, published_through=date(2017, 1, 3), api_key="other") as other:
        with pytest.raises(ProviderError) as info:
            fred(other).observations("DGS10", *span)
        errors.append(info.value)
    with pytest.raises(ProviderError) as info:
        FredProvider(lp.base_url, None, http("fred")).observations("DGS10", *span)
    errors.append(info.value)
    assert len({type(e) for e in errors}) == 4  # unavailable, data, not found, config

    for err in errors:
        text = " ".join(
            [str(err), repr(err), err.reason, *traceback.format_exception(err), str(err.args)]
        )
        assert KEY not in text, text
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and str(copy) == str(err)
    assert KEY not in repr(f) and KEY not in repr(f.http)

    records = caplog.records
    assert any(r.name == "httpx" for r in records)
    assert any(r.name.startswith("httpcore") for r in records)
    for r in records:
        assert KEY not in r.getMessage(), r.name
        assert KEY not in str(r.msg) and KEY not in str(r.args)
    assert any("api_key=***" in r.getMessage() for r in records if r.name == "httpx")
    install_log_redaction()  # idempotent: one filter per logger, however many clients
    for name in REDACTED_LOGGERS:
        assert sum(isinstance(x, RedactingFilter) for x in logging.getLogger(name).filters) == 1
    assert all(r.params.get("api_key") == "***" for r in lp.requests if r.path.startswith("/fred"))


# ------------------------------------------------------------------------------------------------
# Corporate actions, revisions, offsets, in-progress bars


def test_splits_and_dividends(md: MarketData) -> None:
    split_ex, div_ex = date(2016, 6, 1), date(2016, 8, 4)
    span = (date(2016, 5, 2), date(2016, 8, 31))
    closes = md.between(*span).closes["AAPL"]
    with LocalProvider(md, published_through=date(2016, 5, 31), api_key=KEY) as lp:
        lp.add_split("AAPL", split_ex, 4.0)
        lp.add_dividend("AAPL", div_ex, 0.57)
        lp.add_split("KO", date(2016, 6, 15), 1.5)
        y = yahoo(lp)
        before = y.daily_bars("AAPL", *span)
        assert before.splits == [] and before.dividends == []
        assert before.close.tolist() == closes.loc[:"2016-05-31"].tolist()

        lp.publish_through(date(2016, 8, 31))
        after = y.daily_bars("AAPL", *span)
        assert after.splits == [(split_ex, 4.0)]
        assert after.dividends == [(div_ex, 0.57)]
        # Every price at the post-split level (history adjusted, the series continuous).
        np.testing.assert_allclose(after.close, closes.to_numpy() / 4.0, rtol=1e-12)
        i = after.sessions.index(div_ex)
        factor = 1 - 0.57 / after.close[i - 1]
        np.testing.assert_allclose(after.adj_close[:i], after.close[:i] * factor, rtol=1e-12)
        assert after.adj_close[i:].tolist() == after.close[i:].tolist()
        # Only the events inside the span asked for.
        assert y.daily_bars("AAPL", date(2016, 7, 1), date(2016, 7, 29)).splits == []
        assert y.daily_bars("KO", *span).splits == [(date(2016, 6, 15), 1.5)]


def test_revise_and_offset(lp: LocalProvider, md: MarketData) -> None:
    d = date(2016, 12, 15)
    lp.revise("^GSPC", d, close=2200.5, volume=None)
    lp.revise("DGS10", d, value=None)
    lp.revise("VIXCLS", d, value=99.25)
    bars = yahoo(lp).daily_bars("^GSPC", date(2016, 12, 14), date(2016, 12, 16))
    assert bars.close.tolist()[1] == 2200.5 and math.isnan(bars.volume[1])
    f = fred(lp)
    assert {o.date: o.value for o in f.observations("DGS10", d, d)} == {d: None}
    assert f.observations("VIXCLS", d, d)[0].value == 99.25
    # Cross-source disagreement: FRED's SP500 2 % above Yahoo's ^GSPC.
    lp.offset("SP500", 1.02)
    span = (date(2016, 12, 1), date(2016, 12, 9))
    sp = [o.value for o in f.observations("SP500", *span)]
    gspc = yahoo(lp).daily_bars("^GSPC", *span).close
    np.testing.assert_allclose(np.array(sp, dtype=float), gspc * 1.02, rtol=1e-12)
    with pytest.raises(KeyError):
        lp.offset("NOPE", 1.1)
    with pytest.raises(ValueError):
        lp.revise("DGS10", d, close=1.0)


def test_partial_bar_only_when_set(lp: LocalProvider, md: MarketData) -> None:
    lp.publish_through(date(2016, 12, 28))
    span = (date(2016, 12, 27), date(2016, 12, 30))
    y, f = yahoo(lp), fred(lp)
    assert y.daily_bars("^GSPC", *span).sessions[-1] == date(2016, 12, 28)
    vix_before = f.observations("VIXCLS", *span)
    lp.partial = True
    bars = y.daily_bars("^GSPC", *span)
    assert bars.sessions == [date(2016, 12, 27), date(2016, 12, 28), date(2016, 12, 29)]
    full = md.market.loc["2016-12-29"]
    assert bars.close[-1] == pytest.approx(full["index_close"] * 0.99, rel=1e-12)
    assert bars.low[-1] <= bars.close[-1]
    assert f.observations("VIXCLS", *span) == vix_before  # FRED never serves partial values
    stock = y.daily_bars("JPM", *span)
    assert stock.sessions[-1] == date(2016, 12, 29)
    jpm = float(md.closes["JPM"].loc["2016-12-29"])
    assert stock.close[-1] == pytest.approx(jpm * 0.99, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# Parsing details (no network)


def _chart(**over: Any) -> dict[str, Any]:
    t = [int(calendar.session_open(d).timestamp()) for d in (date(2020, 8, 28), date(2020, 8, 31))]
    result: dict[str, Any] = {
        "meta": {"symbol": "AAPL", "exchangeTimezoneName": "America/New_York"},
        "timestamp": t,
        "events": {
            "splits": {str(t[1]): {"date": t[1], "numerator": 4.0, "denominator": 1.0}},
            "dividends": {str(t[0]): {"amount": 0.82, "date": t[0]}},
        },
        "indicators": {
            "quote": [
                {
                    "open": [126.0, 127.6],
                    "high": [126.4, 131.0],
                    "low": [124.6, 126.0],
                    "close": [124.8, None],
                    "volume": [187_630_000, 225_702_700],
                }
            ],
            "adjclose": [{"adjclose": [122.9, 127.1]}],
        },
    }
    result.update(over)
    return {"chart": {"result": [result], "error": None}}


def test_parse_chart_shapes() -> None:
    span = (date(2020, 8, 24), date(2020, 9, 4))
    bars = parse_chart(_chart(), "AAPL", *span)
    assert bars.sessions == [date(2020, 8, 28), date(2020, 8, 31)]
    assert bars.splits == [(date(2020, 8, 31), 4.0)]
    assert bars.dividends == [(date(2020, 8, 28), 0.82)]
    assert bars.close[0] == 124.8 and math.isnan(bars.close[1])
    assert bars.volume.tolist() == [187_630_000.0, 225_702_700.0]
    # A bar after the span (Yahoo appends its latest price) is dropped.
    assert parse_chart(_chart(), "AAPL", date(2020, 8, 24), date(2020, 8, 28)).splits == []
    bad = _chart()
    bad["chart"]["result"][0]["indicators"]["quote"][0]["high"] = [1.0]
    with pytest.raises(ProviderDataError, match="'high' has 1 values for 2 timestamps"):
        parse_chart(bad, "AAPL", *span)
    t = _chart()["chart"]["result"][0]["timestamp"]
    with pytest.raises(ProviderDataError, match="not strictly increasing"):
        parse_chart(_chart(timestamp=[t[1], t[0]]), "AAPL", *span)
    with pytest.raises(ProviderDataError, match="answer is for symbol 'AAPL'"):
        parse_chart(_chart(), "MSFT", *span)
    with pytest.raises(ProviderDataError, match="lacks volume"):
        q = _chart()
        del q["chart"]["result"][0]["indicators"]["quote"][0]["volume"]
        parse_chart(q, "AAPL", *span)


def test_parse_observations_rejects_bad_rows() -> None:
    span = (date(2024, 1, 1), date(2024, 1, 31))

    def page(*rows: tuple[Any, Any]) -> dict[str, Any]:
        return {"observations": [{"date": d, "value": v} for d, v in rows]}

    obs, _ = parse_observations(page(("2024-01-02", "4.5"), ("2024-01-03", ".")), "X", *span)
    assert [(o.date, o.value) for o in obs] == [(date(2024, 1, 2), 4.5), (date(2024, 1, 3), None)]
    cases = [
        (page(("2024-1-02", "1")), "bad date"),
        (page(("2024-01-02", "nan")), "2024-01-02: bad value 'nan'"),
        (page(("2024-01-02", "1e999")), "non-finite"),
        (page(("2024-01-03", "1"), ("2024-01-02", "1")), "2024-01-02: dates not strictly"),
        (page(("2023-12-29", "1")), "outside the requested span"),
        ({"count": 0}, "no 'observations'"),
    ]
    for payload, message in cases:
        with pytest.raises(ProviderDataError, match=re.escape(message)) as info:
            parse_observations(payload, "X", *span)
        assert str(info.value).startswith("fred X 2024-01-01..2024-01-31: ")


def test_parse_retry_after_forms() -> None:
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0
    for bad in (None, "", "soon", "-5", "1e3"):
        assert parse_retry_after(bad) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_property_retry_after_never_raises(value: str) -> None:
    now = datetime(2024, 1, 2, tzinfo=UTC)
    out = parse_retry_after(value, now=now)
    assert out is None or (math.isfinite(out) and out >= 0)


_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12)
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"date": st.one_of(_json_scalar, st.dates().map(date.isoformat)), "value": _json_scalar}
        ),
        max_size=5,
    )
)
def test_property_observation_parsing_only_raises_data_errors(rows: list[dict[str, Any]]) -> None:
    span = (date(1, 1, 1), date(9999, 12, 31))
    try:
        obs, _ = parse_observations({"observations": rows}, "X", *span)
    except ProviderDataError as exc:
        assert str(exc).startswith("fred X ")
        return
    assert len(obs) == len(rows)
    for o in obs:
        assert o.value is None or math.isfinite(o.value)
    assert all(a.date < b.date for a, b in itertools.pairwise(obs))


# ------------------------------------------------------------------------------------------------
# The standalone server process


class socket_port:
    """A free loopback port (bound while inside the block)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@pytest.mark.slow
def test_main_serves_steps_and_stops_on_sigterm() -> None:
    cmd = [
        sys.executable,
        "-m",
        "bloasis.marketdata.providers.local",
        "--data",
        "embedded",
        "--published-through",
        "2016-01-04",
        "--every",
        "1",
        "--api-key",
        KEY,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[str] = []

    def wait_for(pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                assert proc.poll() is None, "\n".join(seen)
                continue
            seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(seen))

    try:
        url = wait_for(r"on (http://127\.0\.0\.1:\d+)").group(1)
        assert wait_for(r"published (\S+)").group(1) == "2016-01-05"
        assert wait_for(r"published (\S+)").group(1) == "2016-01-06"
        status = httpx.get(url + "/control/status").json()
        assert status["published_through"] in ("2016-01-06", "2016-01-07")
        bars = YahooProvider(url, http("yahoo")).daily_bars(
            "^GSPC", date(2016, 1, 4), date(2016, 1, 5)
        )
        assert bars.close.tolist() == [2012.66, 2016.71]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        reader.join(timeout=5)
        while not lines.empty():
            seen.append(lines.get())
        assert any(line.endswith("stopped") for line in seen), "\n".join(seen)
        assert not any(KEY in line for line in seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_span_seconds_cover_whole_local_days() -> None:
    # Midnight New York to midnight New York, across the DST switch of 2016-03-13.
    p1, p2 = span_seconds(date(2016, 3, 11), date(2016, 3, 14))
    assert datetime.fromtimestamp(p1, calendar.TZ).isoformat() == "2016-03-11T00:00:00-05:00"
    assert datetime.fromtimestamp(p2, calendar.TZ).isoformat() == "2016-03-15T00:00:00-04:00"
    assert p2 - p1 == 4 * 86400 - 3600
