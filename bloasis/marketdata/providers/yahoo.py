"""Yahoo Finance chart API (v8), called directly.

``GET {base}/v8/finance/chart/{symbol}?period1=<unix>&period2=<unix>&interval=1d&events=div,splits
&includeAdjustedClose=true`` answers::

    {"chart": {"result": [{
        "meta": {"currency": "USD", "symbol": "^GSPC", "exchangeTimezoneName": "America/New_York",
                 "gmtoffset": -18000, "dataGranularity": "1d", ...},
        "timestamp": [1672756200, ...],
        "events": {"dividends": {"1676039400": {"amount": 0.23, "date": 1676039400}},
                   "splits": {"1598880600": {"date": 1598880600, "numerator": 4.0,
                                             "denominator": 1.0, "splitRatio": "4:1"}}},
        "indicators": {"quote": [{"open": [...], "high": [...], "low": [...], "close": [...],
                                  "volume": [...]}],
                       "adjclose": [{"adjclose": [...]}]}}],
      "error": null}}

Timestamps are each bar's session open in UTC (the newest, in-progress bar carries the time of
its last trade instead); they are turned into exchange-local session dates. Arrays may hold null.
``close`` is split-adjusted, ``adjclose`` split- and dividend-adjusted. An unknown symbol is HTTP
404 with ``{"chart": {"result": null, "error": {"code": "Not Found", "description": "No data
found, symbol may be delisted"}}}``. Yahoo refuses clients without a browser-like User-Agent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from bloasis import calendar
from bloasis.marketdata.providers import (
    DailyBars,
    FloatArray,
    ProviderDataError,
    SymbolNotFound,
)
from bloasis.marketdata.providers.http import HttpClient

if TYPE_CHECKING:
    from bloasis.config import Settings

PROVIDER: Final = "yahoo"
CHART_PATH: Final = "/v8/finance/chart/"
USER_AGENT: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
HEADERS: Final = {"User-Agent": USER_AGENT, "Accept": "application/json"}
QUOTE_FIELDS: Final = ("open", "high", "low", "close", "volume")


def span_seconds(start: date, end: date) -> tuple[int, int]:
    """(period1, period2): midnight starting `start` and midnight ending `end`, exchange time,
    as unix seconds; every bar of a session in [start, end] has its timestamp in between."""
    p1 = datetime.combine(start, time(0), calendar.TZ)
    p2 = datetime.combine(end + timedelta(days=1), time(0), calendar.TZ)
    return int(p1.timestamp()), int(p2.timestamp())


def _number(x: object) -> float:
    # null -> NaN; bools are not numbers even though JSON decoders make them ints.
    if x is None:
        return math.nan
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"not a number: {x!r}")
    return float(x)


# JSON value types that are numbers or null (bool is not: a subclass of int, but not a number).
_PLAIN: Final = frozenset({int, float, type(None)})


def _array(values: object, n: int, name: str) -> FloatArray:
    if not isinstance(values, list):
        raise ValueError(f"'{name}' is not a list")
    if len(values) != n:
        raise ValueError(f"'{name}' has {len(values)} values for {n} timestamps")
    if set(map(type, values)) <= _PLAIN:
        # Fast path (C loops): numpy turns None into NaN for a float64 array.
        out = np.array(values, dtype=np.float64)
    else:
        try:
            out = np.array([_number(v) for v in values], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"'{name}': {exc}") from None
    out[~np.isfinite(out)] = np.nan  # a stray Infinity/NaN literal is as unknown as a null
    return out


# Sane unix-second bounds for a daily bar (1900..2200): anything else is a malformed answer,
# and datetime would overflow on it.
_TS_MIN: Final = -2_208_988_800
_TS_MAX: Final = 7_258_118_400


def _local_date(ts: object, tz: ZoneInfo) -> date:
    if isinstance(ts, str) and ts.lstrip("-").isdigit():
        ts = int(ts)
    if isinstance(ts, bool) or not isinstance(ts, int) or not _TS_MIN <= ts <= _TS_MAX:
        raise ValueError(f"bad timestamp {ts!r}")
    return datetime.fromtimestamp(ts, UTC).astimezone(tz).date()


def _events(
    raw: object, kind: str, tz: ZoneInfo, parse: Callable[[dict[str, Any], str], float]
) -> list[tuple[date, float]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ValueError(f"events.{kind} is not an object")
    out: list[tuple[date, float]] = []
    for key, ev in raw.items():
        where = f"events.{kind}[{key}]"
        if not isinstance(ev, dict):
            raise ValueError(f"{where} is not an object")
        try:
            day = _local_date(ev.get("date", key), tz)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        out.append((day, parse(ev, where)))
    out.sort()
    return out


def _dividend(ev: dict[str, Any], where: str) -> float:
    amount = _number(ev.get("amount"))
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{where}: bad amount {ev.get('amount')!r}")
    return amount


def _split(ev: dict[str, Any], where: str) -> float:
    num, den = _number(ev.get("numerator")), _number(ev.get("denominator"))
    if not (math.isfinite(num) and math.isfinite(den) and num > 0 and den > 0):
        raise ValueError(f"{where}: bad ratio {ev.get('numerator')!r}/{ev.get('denominator')!r}")
    return num / den


def parse_chart(
    payload: Any, symbol: str, start: date, end: date, *, allow_empty: bool = False
) -> DailyBars:
    """`DailyBars` of `symbol` in [start, end] from a chart answer, validated: equal array
    lengths, strictly increasing timestamps, one bar per local date, known fields.

    Bars dated outside [start, end] are dropped (Yahoo appends its latest price after the
    requested end). No bar at all for a span holding NYSE sessions is a ProviderDataError
    ("no bars") unless `allow_empty`."""

    def bad(reason: str) -> ProviderDataError:
        return ProviderDataError(PROVIDER, symbol, start, end, reason)

    chart = payload.get("chart") if isinstance(payload, dict) else None
    if not isinstance(chart, dict):
        raise bad("answer has no 'chart' object")
    err = chart.get("error")
    if err:
        desc = err.get("description") if isinstance(err, dict) else err
        code = err.get("code") if isinstance(err, dict) else None
        if code == "Not Found":
            raise SymbolNotFound(PROVIDER, symbol, start, end, f"{code}: {desc}")
        raise bad(f"error: {code}: {desc}")
    results = chart.get("result")
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise bad("answer has no result")
    r = results[0]
    meta = r.get("meta")
    if not isinstance(meta, dict):
        raise bad("result has no 'meta'")
    answered = meta.get("symbol")
    if isinstance(answered, str) and answered.upper() != symbol.upper():
        raise bad(f"answer is for symbol {answered!r}")
    granularity = meta.get("dataGranularity", "1d")
    if granularity != "1d":
        raise bad(f"answer has {granularity!r} bars, not daily")
    tz_name = meta.get("exchangeTimezoneName") or calendar.EXCHANGE_TZ
    try:
        tz = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise bad(f"unknown exchange time zone {tz_name!r}") from None

    stamps = r.get("timestamp") or []
    if not isinstance(stamps, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in stamps
    ):
        raise bad("'timestamp' is not a list of integers")
    n = len(stamps)
    try:
        indicators = r.get("indicators") or {}
        quotes = indicators.get("quote") or [{}]
        quote = quotes[0] if isinstance(quotes, list) and quotes else None
        if not isinstance(quote, dict):
            raise ValueError("no indicators.quote")
        if n == 0:
            cols = {f: np.empty(0) for f in (*QUOTE_FIELDS, "adjclose")}
        else:
            missing = [f for f in QUOTE_FIELDS if f not in quote]
            if missing:
                raise ValueError(f"indicators.quote lacks {', '.join(missing)}")
            cols = {f: _array(quote[f], n, f) for f in QUOTE_FIELDS}
            adj = indicators.get("adjclose")
            if not (isinstance(adj, list) and adj and isinstance(adj[0], dict)):
                raise ValueError("no indicators.adjclose (asked with includeAdjustedClose)")
            cols["adjclose"] = _array(adj[0].get("adjclose"), n, "adjclose")
        events = r.get("events") or {}
        if not isinstance(events, dict):
            raise ValueError("'events' is not an object")
        dividends = _events(events.get("dividends"), "dividends", tz, _dividend)
        splits = _events(events.get("splits"), "splits", tz, _split)
    except ValueError as exc:
        raise bad(str(exc)) from None

    try:
        days = [_local_date(t, tz) for t in stamps]
    except ValueError as exc:
        raise bad(f"'timestamp': {exc}") from None
    for k, (a, b) in enumerate(pairwise(stamps), start=1):
        if b <= a:
            raise bad(f"timestamps not strictly increasing at #{k} ({b} after {a})")
    for a, b in pairwise(days):
        if b == a:
            raise bad(f"{b}: two bars on one session")
    keep = np.array([start <= d <= end for d in days], dtype=bool)
    sessions = [d for d, k in zip(days, keep, strict=True) if k]
    if not sessions and not allow_empty and len(calendar.sessions(start, end)) > 0:
        raise bad("no bars")
    return DailyBars(
        symbol=symbol,
        sessions=sessions,
        open=cols["open"][keep],
        high=cols["high"][keep],
        low=cols["low"][keep],
        close=cols["close"][keep],
        adj_close=cols["adjclose"][keep],
        volume=cols["volume"][keep],
        dividends=[(d, a) for d, a in dividends if start <= d <= end],
        splits=[(d, s) for d, s in splits if start <= d <= end],
    )


class YahooProvider:
    """Daily bars from the Yahoo chart API over one `HttpClient`; every request carries
    browser-like headers (`HEADERS`), whatever headers the client was built with."""

    name: Final = PROVIDER

    def __init__(self, base_url: str, http: HttpClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http

    @classmethod
    def from_settings(cls, settings: Settings) -> YahooProvider:
        return cls(settings.yahoo_url, HttpClient.from_settings(settings, PROVIDER))

    def __repr__(self) -> str:
        return f"YahooProvider(base_url={self.base_url!r})"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> YahooProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def daily_bars(
        self, symbol: str, start: date, end: date, *, allow_empty: bool = False
    ) -> DailyBars:
        """Bars of `symbol` for the sessions in [start, end] (see `parse_chart`)."""
        if not symbol or symbol != symbol.strip():
            raise ValueError(f"bad Yahoo symbol {symbol!r}")
        if end < start:
            raise ValueError(f"end {end} is before start {start}")
        period1, period2 = span_seconds(start, end)
        params: dict[str, str | int | float] = {
            "period1": period1,
            "period2": period2,
            "interval": "1d",
            # "splits" is what yfinance sends; Yahoo also accepts "split".
            "events": "div,splits",
            "includeAdjustedClose": "true",
        }
        url = self.base_url + CHART_PATH + quote(symbol, safe="")
        payload = self.http.get_json(
            url, params, series=symbol, start=start, end=end, headers=HEADERS
        )
        return parse_chart(payload, symbol, start, end, allow_empty=allow_empty)
