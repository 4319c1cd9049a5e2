"""A local stand-in for FRED and Yahoo Finance: one loopback HTTP server speaking both formats.

It serves a `MarketData` (the embedded dataset by default, or e.g. a synthetic universe) one
session at a time, so the live ingest can be run, tested and benchmarked offline: point
``BLOASIS_FRED_URL`` and ``BLOASIS_YAHOO_URL`` at the base URL `start()` returns.

Paths (as the real services):

- ``GET /fred/series/observations?series_id=&api_key=&file_type=json&observation_start=
  &observation_end=[&offset=&limit=&sort_order=]``: VIXCLS (real VIX only), DGS10 / DGS2
  (Treasury yields, dated as in the data), BAA / AAA (Moody's, monthly, dated the first of the
  month), SP500 (index close). Daily series carry "." on weekdays without a value inside their
  range, as FRED does. A daily value dated d is served once ``published_through > d`` (FRED
  publishes the next day); a monthly one once ``published_through`` is in a later month.
  A missing or wrong api_key, an unknown series, bad dates: FRED's 400 error JSON.
- ``GET /v8/finance/chart/{symbol}?period1=&period2=&interval=1d``: ``^GSPC`` (index bars,
  adjclose = close), ``^VIX`` (real VIX only, close only), and every stock of the data
  (close = adjclose = its adjusted close; open/high/low/volume from ``md.ohlcv`` when there is
  one, else null). Bars up to ``published_through``; with ``partial = True`` also the next
  session's in-progress bar (close -1 %, timestamped 11:30 New York). Unknown symbol: Yahoo's
  404 body.
- ``GET /control/status``, ``POST /control/publish-next``,
  ``POST /control/publish-through?date=YYYY-MM-DD``: the clock, for manual stepping.

Scenarios (tests): `fail_next` (429 / 500 / 503 / timeout / disconnect / malformed / empty /
not_found), `revise` (a provider revision), `offset` (scale one source's series: cross-source
disagreement), `add_split` / `add_dividend` (corporate actions, applied as Yahoo does once the
ex-date is published), `partial`.

Run standalone: ``python -m bloasis.marketdata.providers.local --data embedded
--published-through 2016-01-04 [--end D] [--every SECONDS] [--port P] [--api-key K]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import pandas as pd

from bloasis import calendar
from bloasis.clock import write_clock_file
from bloasis.marketdata.sources import (
    EMBEDDED_PATH,
    EmbeddedSource,
    _Embedded,
    _read_embedded,
    credit_months_of,
)
from bloasis.marketdata.types import MarketData

log = logging.getLogger("bloasis.providers.local")

FAULT_KINDS: Final = (
    "429",
    "500",
    "503",
    "timeout",
    "disconnect",
    "malformed",
    "empty",
    "not_found",
)
# A "timeout" fault holds its response this long at most: long enough to beat any test's client
# timeout, short enough never to stall a test run.
MAX_DELAY_S: Final = 5.0
FRED_PATH: Final = "/fred/series/observations"
YAHOO_PREFIX: Final = "/v8/finance/chart/"
INDEX_SYMBOL: Final = "^GSPC"
VIX_SYMBOL: Final = "^VIX"
FRED_DAILY: Final = ("VIXCLS", "DGS10", "DGS2", "SP500")
FRED_MONTHLY: Final = ("BAA", "AAA")
YAHOO_FIELDS: Final = ("open", "high", "low", "close", "adjclose", "volume")
PRICE_FIELDS: Final = ("open", "high", "low", "close", "adjclose")
PARTIAL_MOVE: Final = -0.01
# An in-progress bar carries the time of its last trade: 2 h after the open (11:30 New York).
PARTIAL_AFTER_OPEN_S: Final = 2 * 3600
FRED_LIMIT: Final = 100_000
REQUEST_LOG_SIZE: Final = 100_000
_SECRET_PARAMS: Final = ("api_key",)
_EPOCH: Final = date(1970, 1, 1)

_FRED_BAD_KEY: Final = (
    "Bad Request.  The value for variable api_key is not registered.  "
    "Read https://fred.stlouisfed.org/docs/api/api_key.html for more information."
)
_FRED_NO_KEY: Final = "Bad Request.  Variable api_key has not been set."
_FRED_NO_SERIES: Final = "Bad Request.  The series does not exist."
_YAHOO_NOT_FOUND: Final = {
    "chart": {
        "result": None,
        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
    }
}


def _day(d: date) -> int:
    return (d - _EPOCH).days


def _date(n: int | np.integer[Any]) -> date:
    return _EPOCH + timedelta(days=int(n))


def _json(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()


def _listed(a: np.ndarray, integer: bool = False) -> list[float | int | None]:
    # JSON arrays as Yahoo writes them: null for unknown, integers for volumes.
    if integer:
        return [(int(x) if x.is_integer() else x) if math.isfinite(x) else None for x in a.tolist()]
    return [x if math.isfinite(x) else None for x in a.tolist()]


@dataclass
class Fault:
    """A failure injected into the next matching requests (`LocalProvider.fail_next`)."""

    kind: str
    match: str | None
    times: int
    retry_after: float | None
    delay_s: float


@dataclass(frozen=True)
class ServedRequest:
    """One request the server answered: params with the api_key redacted, the status sent (0 =
    connection dropped) and the fault injected, if any."""

    method: str
    path: str
    params: dict[str, str]
    status: int
    fault: str | None = None


@dataclass
class _Series:
    """A FRED series: sorted day numbers and values (NaN = ".")."""

    days: np.ndarray
    values: np.ndarray
    monthly: bool


@dataclass
class _Scenario:
    revisions: dict[str, dict[date, dict[str, float | None]]] = field(default_factory=dict)
    offsets: dict[str, float] = field(default_factory=dict)
    splits: dict[str, list[tuple[date, float]]] = field(default_factory=dict)
    dividends: dict[str, list[tuple[date, float]]] = field(default_factory=dict)


def _with_missing(days: np.ndarray, values: np.ndarray) -> _Series:
    """A daily FRED series: the values, plus "." (NaN) on weekdays without one between the first
    and the last value (FRED lists a business-day series' holidays that way)."""
    ok = np.isfinite(values)
    days, values = np.asarray(days, dtype=np.int64)[ok], np.asarray(values, dtype=np.float64)[ok]
    if len(days) == 0:
        return _Series(days, values, monthly=False)
    span = np.arange(days[0], days[-1] + 1, dtype=np.int64)
    weekdays = span[np.is_busday(span.astype("datetime64[D]"))]
    grid = np.union1d(weekdays, days)
    out = np.full(len(grid), np.nan)
    out[np.searchsorted(grid, days)] = values
    return _Series(grid, out, monthly=False)


def _fred_series(md: MarketData, raw: _Embedded | None) -> dict[str, _Series]:
    m = md.market
    sess = np.asarray(md.index.values.astype("datetime64[D]").astype(np.int64))
    vix = m["vix"].to_numpy(dtype=np.float64)
    real = ~m["vix_is_proxy"].to_numpy(dtype=bool) & np.isfinite(vix)
    out = {
        "VIXCLS": _with_missing(sess[real], vix[real]),
        "SP500": _with_missing(sess, m["index_close"].to_numpy(dtype=np.float64)),
    }
    if raw is not None:
        # Dated by their own (bond-market) days, including the few that are not NYSE sessions.
        out["DGS10"] = _with_missing(raw.ust_days, raw.ust10y)
        out["DGS2"] = _with_missing(raw.ust_days, raw.ust2y)
        months = np.asarray(raw.credit_months, dtype=np.int64)
        baa, aaa = np.asarray(raw.baa), np.asarray(raw.aaa)
    else:
        out["DGS10"] = _with_missing(sess, m["ust10y"].to_numpy(dtype=np.float64))
        out["DGS2"] = _with_missing(sess, m["ust2y"].to_numpy(dtype=np.float64))
        months, baa, aaa = _derived_credit(md)
    order = np.argsort(months, kind="stable")
    out["BAA"] = _Series(months[order], baa[order].astype(np.float64), monthly=True)
    out["AAA"] = _Series(months[order], aaa[order].astype(np.float64), monthly=True)
    return out


def _derived_credit(md: MarketData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monthly BAA and AAA for data that only has the spread (e.g. synthetic): the spread's
    monthly observations (`credit_months_of`), AAA = that month's mean 10Y yield + 1 (5 % when
    unknown), BAA = AAA + spread; both rounded to cents as FRED publishes them."""
    spread = credit_months_of(md)
    if spread.empty:
        empty = np.empty(0)
        return empty.astype(np.int64), empty, empty
    idx = pd.DatetimeIndex(spread.index)
    months = np.asarray(idx.values.astype("datetime64[D]").astype(np.int64))
    ust = md.market["ust10y"]
    by_month = ust.groupby(pd.DatetimeIndex(ust.index).to_period("M")).mean()
    level = by_month.reindex(idx.to_period("M")).to_numpy(dtype=np.float64)
    aaa = np.round(np.where(np.isfinite(level), level + 1.0, 5.0), 2)
    baa = np.round(aaa + spread.to_numpy(dtype=np.float64), 2)
    return months, baa, aaa


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], provider: LocalProvider) -> None:
        self.provider = provider
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx pools connections
    server_version = "bloasis-local-provider"
    # Headers and body go out in two writes: with Nagle on, the second waits for the client's
    # delayed ACK (~40 ms a request on keep-alive connections).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.server.provider._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.provider._handle(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes the request line, api_key included, to stderr; requests are
        # logged (redacted) by the provider instead.
        pass


Response = tuple[int, dict[str, str], bytes]


class LocalProvider:
    """FRED and Yahoo over `md`, published one session at a time (see the module docstring).

    `md` None serves the embedded dataset (with its raw Treasury and Moody's series). `raw` are
    the embedded dataset's raw arrays: with them DGS10/DGS2/BAA/AAA are served exactly as
    shipped; without, they are derived from `md.market`. `end` caps `publish_next`."""

    def __init__(
        self,
        md: MarketData | None = None,
        *,
        published_through: date,
        api_key: str = "local-key",
        raw: _Embedded | None = None,
        end: date | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock_file: Path | None = None,
    ) -> None:
        if md is None:
            md = EmbeddedSource().load()
            raw = raw if raw is not None else _read_embedded(str(EMBEDDED_PATH))
        if len(md.index) == 0:
            raise ValueError("LocalProvider needs market data with at least one session")
        self.md = md
        self.api_key = api_key
        self.host, self.port = host, port
        self.partial = False
        self._lock = threading.RLock()
        self._published = published_through
        # A live replay's market clock (`bloasis.clock`): what was published last, and when.
        self.clock_file = clock_file
        self._record_clock()
        self._end = min(end, md.last_date) if end is not None else md.last_date
        self._sessions = np.asarray(md.index.values.astype("datetime64[D]").astype(np.int64))
        opens = pd.DatetimeIndex(md.index) + pd.Timedelta(hours=9, minutes=30)
        self._open_ts = opens.tz_localize(calendar.TZ).as_unit("ns").asi8 // 1_000_000_000
        self._faults: list[Fault] = []
        self._scenario = _Scenario()
        # Bounded: a standalone server runs for days under a 500-symbol ingest.
        self._requests: deque[ServedRequest] = deque(maxlen=REQUEST_LOG_SIZE)
        self._request_count = 0
        m = md.market
        index = {
            "open": m["index_open"],
            "high": m["index_high"],
            "low": m["index_low"],
            "close": m["index_close"],
            "adjclose": m["index_close"],
            "volume": m["index_volume"],
        }
        vix = m["vix"].to_numpy(dtype=np.float64).copy()
        vix[m["vix_is_proxy"].to_numpy(dtype=bool)] = np.nan
        nan = np.full(len(vix), np.nan)
        self._index_bars: dict[str, dict[str, np.ndarray]] = {
            INDEX_SYMBOL: {k: v.to_numpy(dtype=np.float64) for k, v in index.items()},
            VIX_SYMBOL: {
                **{k: nan for k in YAHOO_FIELDS},
                "close": vix,
                "adjclose": vix,
            },
        }
        self._stock_cols = {str(s): j for j, s in enumerate(md.closes.columns)}
        self._closes = md.closes.to_numpy(dtype=np.float64)
        self._ohlcv = (
            {f: md.ohlcv[f].to_numpy(dtype=np.float64) for f in ("open", "high", "low", "volume")
             if f in md.ohlcv}
            if md.ohlcv is not None
            else {}
        )  # fmt: skip
        self._fred = _fred_series(md, raw)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving (in a background thread); returns the base URL."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server((self.host, self.port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="bloasis-local-provider",
                daemon=True,
            )
            self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local provider is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving: no new connection, open ones closed, held responses released."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with server.connections_lock:
            conns = list(server.connections)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by its client
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalProvider:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the clock -------------------------------------------------------------------------------

    @property
    def published_through(self) -> date:
        with self._lock:
            return self._published

    @property
    def end(self) -> date:
        return self._end

    def _next_session(self) -> date | None:
        pos = int(np.searchsorted(self._sessions, _day(self._published), side="right"))
        if pos >= len(self._sessions):
            return None
        nxt = _date(self._sessions[pos])
        return nxt if nxt <= self._end else None

    @property
    def next_session(self) -> date | None:
        """The session `publish_next` would publish (None when holding at the end)."""
        with self._lock:
            return self._next_session()

    def publish_next(self) -> date:
        """Publish the next session of the data (holds at the end); returns published_through."""
        with self._lock:
            nxt = self._next_session()
            if nxt is not None:
                self._published = nxt
                self._record_clock()
            return self._published

    def publish_through(self, d: date) -> None:
        with self._lock:
            self._published = d
            self._record_clock()

    def _record_clock(self) -> None:
        if self.clock_file is not None:
            write_clock_file(self.clock_file, self._published, datetime.now(UTC))

    # -- scenarios -------------------------------------------------------------------------------

    def fail_next(
        self,
        kind: str,
        *,
        match: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        delay_s: float = 1.0,
    ) -> None:
        """Fail the next `times` requests whose path, series_id or symbol contains `match` (all
        requests when None). Kinds: "429" (Retry-After: `retry_after`, default 1), "500",
        "503" (Retry-After when given), "timeout" (the answer held `delay_s`, at most
        `MAX_DELAY_S`), "disconnect" (connection closed, no answer), "malformed" (truncated
        JSON), "empty" (valid JSON, no data), "not_found" (the provider's unknown-series
        answer)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
        if times < 1:
            raise ValueError("times must be >= 1")
        if kind == "429" and retry_after is None:
            retry_after = 1.0
        fault = Fault(kind, match, times, retry_after, min(max(delay_s, 0.0), MAX_DELAY_S))
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _known(self, name: str) -> str:
        if name in self._fred:
            return "fred"
        if name in self._index_bars or name in self._stock_cols:
            return "yahoo"
        raise KeyError(f"{name!r} is neither a served FRED series nor a Yahoo symbol")

    def revise(self, symbol_or_series: str, day: date, **fields: float | None) -> None:
        """Serve `fields` for `day` from now on (a provider revision). FRED: ``value=``
        (None serves "."); Yahoo: any of open/high/low/close/adjclose/volume. Served exactly as
        given (after splits, dividends and offsets)."""
        allowed = ("value",) if self._known(symbol_or_series) == "fred" else YAHOO_FIELDS
        bad = sorted(set(fields) - set(allowed))
        if bad or not fields:
            raise ValueError(f"revise {symbol_or_series}: fields must be among {allowed}")
        with self._lock:
            per = self._scenario.revisions.setdefault(symbol_or_series, {})
            per.setdefault(day, {}).update(fields)

    def offset(self, symbol_or_series: str, factor: float) -> None:
        """Scale every price (Yahoo; volumes unchanged) or value (FRED) served for the series."""
        self._known(symbol_or_series)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"offset factor must be > 0, got {factor}")
        with self._lock:
            self._scenario.offsets[symbol_or_series] = factor

    def _session_index(self, d: date) -> int:
        i = int(np.searchsorted(self._sessions, _day(d)))
        if i >= len(self._sessions) or self._sessions[i] != _day(d):
            raise ValueError(f"{d} is not a session of the served data")
        return i

    def add_split(self, symbol: str, ex_date: date, ratio: float) -> None:
        """A `ratio`:1 split (e.g. 4.0) effective at session `ex_date`. Once `ex_date` is
        published, every served price of the symbol is divided by `ratio` and volume multiplied
        by it (before the ex-date: Yahoo's split adjustment of history; from it on: the
        post-split price level), so the served series stays continuous; the split is listed
        in ``events.splits``. Before that, nothing changes."""
        if self._known(symbol) != "yahoo":
            raise ValueError(f"{symbol} is not a Yahoo symbol")
        if not (math.isfinite(ratio) and ratio > 0 and ratio != 1):
            raise ValueError(f"split ratio must be > 0 and != 1, got {ratio}")
        self._session_index(ex_date)
        with self._lock:
            self._scenario.splits.setdefault(symbol, []).append((ex_date, float(ratio)))

    def add_dividend(self, symbol: str, ex_date: date, amount: float) -> None:
        """A cash dividend with ex-date `ex_date`: once published, adjclose before it is scaled
        by (1 - amount / previous close), close unchanged, listed in ``events.dividends``."""
        if self._known(symbol) != "yahoo":
            raise ValueError(f"{symbol} is not a Yahoo symbol")
        if not (math.isfinite(amount) and amount > 0):
            raise ValueError(f"dividend amount must be > 0, got {amount}")
        if self._session_index(ex_date) == 0:
            raise ValueError(f"{ex_date}: a dividend needs a previous close")
        with self._lock:
            self._scenario.dividends.setdefault(symbol, []).append((ex_date, float(amount)))

    @property
    def requests(self) -> list[ServedRequest]:
        """Requests answered (api_key redacted), oldest first; the last `REQUEST_LOG_SIZE`."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- HTTP ------------------------------------------------------------------------------------

    def _take_fault(self, path: str, name: str | None) -> Fault | None:
        with self._lock:
            for i, f in enumerate(self._faults):
                if f.match is None or f.match in path or (name is not None and f.match in name):
                    f.times -= 1
                    if f.times <= 0:
                        del self._faults[i]
                    return f
        return None

    def _handle(self, h: _Handler, method: str) -> None:
        url = urlsplit(h.path)
        path = unquote(url.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        logged = {k: ("***" if k in _SECRET_PARAMS else v) for k, v in params.items()}
        fault: Fault | None = None
        try:
            length = int(h.headers.get("Content-Length") or 0)
            if length > 0:
                h.rfile.read(min(length, 1 << 20))  # control POSTs carry no body worth reading
            if path.startswith("/control/"):
                status, headers, body = self._control(path, method, params)
            elif method != "GET":
                status, headers, body = 405, {"Allow": "GET"}, b'{"error":"GET only"}'
            else:
                if path == FRED_PATH:
                    kind, name = "fred", params.get("series_id")
                elif path.startswith(YAHOO_PREFIX):
                    kind, name = "yahoo", path[len(YAHOO_PREFIX) :]
                else:
                    kind, name = "other", None
                fault = self._take_fault(path, name) if kind != "other" else None
                if fault is not None and fault.kind == "disconnect":
                    h.close_connection = True
                    self._record(method, path, logged, 0, fault)
                    return
                if fault is not None and fault.kind == "timeout":
                    h.close_connection = True
                    self._stopping.wait(fault.delay_s)
                status, headers, body = self._answer(kind, name, path, params, fault)
        except Exception as exc:  # a server bug must answer 500, not hang the client
            log.exception("local provider failed on %s", path)
            status, headers, body = 500, {}, _json({"error": f"{type(exc).__name__}"})
        self._record(method, path, logged, status, fault)
        try:
            h.send_response(status)
            ctype = headers.pop("Content-Type", "application/json;charset=utf-8")
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            h.close_connection = True  # the client gave up (e.g. its timeout fired)

    def _record(
        self, method: str, path: str, params: dict[str, str], status: int, fault: Fault | None
    ) -> None:
        with self._lock:
            self._requests.append(
                ServedRequest(method, path, params, status, fault.kind if fault else None)
            )
            self._request_count += 1
        log.debug("%s %s %s -> %d", method, path, params, status)

    def _answer(
        self, kind: str, name: str | None, path: str, params: dict[str, str], fault: Fault | None
    ) -> Response:
        fk = fault.kind if fault is not None else None
        if fk in ("429", "500", "503"):
            assert fault is not None
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else f"{ra:g}"
            status = int(str(fk))
            if kind == "fred":
                msg = {
                    429: "Too Many Requests.  Exceeded Rate Limit",
                    500: "Internal Server Error",
                }.get(status, "Service Unavailable")
                return status, headers, _json({"error_code": status, "error_message": msg})
            # Yahoo answers these with a plain-text body.
            headers["Content-Type"] = "text/plain;charset=utf-8"
            return status, headers, b"Too Many Requests" if status == 429 else b"Server Error"
        if kind == "fred":
            status, headers, body = self._fred_answer(params, fk)
        elif kind == "yahoo":
            assert name is not None
            status, headers, body = self._yahoo_answer(name, params, fk)
        else:
            return 404, {}, _json({"error": f"no such path {path}"})
        if fk == "malformed" and status == 200:
            body = body[: max(1, len(body) // 2)]
        return status, headers, body

    def _control(self, path: str, method: str, params: dict[str, str]) -> Response:
        if path == "/control/status" and method == "GET":
            pass
        elif path == "/control/publish-next" and method == "POST":
            self.publish_next()
        elif path == "/control/publish-through" and method == "POST":
            try:
                self.publish_through(date.fromisoformat(params.get("date", "")))
            except ValueError:
                return 400, {}, _json({"error": "expected ?date=YYYY-MM-DD"})
        else:
            return 404, {}, _json({"error": f"no such control {method} {path}"})
        with self._lock:
            nxt = self._next_session()
            doc = {
                "published_through": self._published.isoformat(),
                "next_session": nxt.isoformat() if nxt else None,
                "end": self._end.isoformat(),
                "partial": self.partial,
                "requests": self._request_count,
            }
        return 200, {}, _json(doc)

    # -- FRED ------------------------------------------------------------------------------------

    def _fred_answer(self, params: dict[str, str], fault: str | None) -> Response:
        def error(message: str, status: int = 400) -> Response:
            return status, {}, _json({"error_code": status, "error_message": message})

        key = params.get("api_key")
        if not key:
            return error(_FRED_NO_KEY)
        if key != self.api_key:
            return error(_FRED_BAD_KEY)
        series_id = params.get("series_id")
        if not series_id:
            return error("Bad Request.  Variable series_id is not set.")
        if params.get("file_type") != "json":
            return error("Bad Request.  The local provider serves file_type=json only.")
        try:
            first = date.fromisoformat(params.get("observation_start") or "1776-07-04")
            last = date.fromisoformat(params.get("observation_end") or "9999-12-31")
        except ValueError:
            return error("Bad Request.  Variable observation_start or observation_end is not a "
                         "valid date (YYYY-MM-DD).")  # fmt: skip
        if last < first:
            return error(
                "Bad Request.  Variable observation_start can not be after observation_end."
            )
        try:
            offset = int(params.get("offset") or 0)
            limit = int(params.get("limit") or FRED_LIMIT)
        except ValueError:
            return error("Bad Request.  Variables offset and limit must be integers.")
        if offset < 0 or not 1 <= limit <= FRED_LIMIT:
            return error("Bad Request.  Variable limit is not between 1 and 100000.")
        series = self._fred.get(series_id)
        if series is None or fault == "not_found":
            return error(_FRED_NO_SERIES)
        with self._lock:
            today = self._published
            factor = self._scenario.offsets.get(series_id, 1.0)
            revisions = dict(self._scenario.revisions.get(series_id, {}))
        # FRED publishes a day's value the day after, a month's in a later month.
        visible_before = _day(today.replace(day=1)) if series.monthly else _day(today)
        lo = int(np.searchsorted(series.days, _day(first), side="left"))
        hi = int(np.searchsorted(series.days, min(_day(last) + 1, visible_before), side="left"))
        values: dict[date, float | None] = {}
        for d, v in zip(series.days[lo:hi].tolist(), series.values[lo:hi].tolist(), strict=True):
            values[_date(d)] = v * factor if math.isfinite(v) else None
        for d, fields in revisions.items():
            if first <= d <= last and _day(d) < visible_before:
                values[d] = fields["value"]
        rows = sorted(values.items())
        if fault == "empty":
            rows = []
        if params.get("sort_order") == "desc":
            rows.reverse()
        stamp = today.isoformat()
        page = rows[offset : offset + limit]
        doc = {
            "realtime_start": stamp,
            "realtime_end": stamp,
            "observation_start": first.isoformat(),
            "observation_end": last.isoformat(),
            "units": "lin",
            "output_type": 1,
            "file_type": "json",
            "order_by": "observation_date",
            "sort_order": params.get("sort_order") or "asc",
            "count": len(rows),
            "offset": offset,
            "limit": limit,
            "observations": [
                {
                    "realtime_start": stamp,
                    "realtime_end": stamp,
                    "date": d.isoformat(),
                    "value": "." if v is None else repr(float(v)),
                }
                for d, v in page
            ],
        }
        return 200, {}, _json(doc)

    # -- Yahoo -----------------------------------------------------------------------------------

    def _base_bars(self, symbol: str, n: int) -> dict[str, np.ndarray] | None:
        """Copies of the first `n` rows of the symbol's arrays (None: unknown symbol)."""
        if symbol in self._index_bars:
            return {k: v[:n].copy() for k, v in self._index_bars[symbol].items()}
        j = self._stock_cols.get(symbol)
        if j is None:
            return None
        close = self._closes[:n, j]
        nan = np.full(len(close), np.nan)
        out = {f: self._ohlcv[f][:n, j].copy() if f in self._ohlcv else nan.copy()
               for f in ("open", "high", "low", "volume")}  # fmt: skip
        out["close"] = close.copy()
        out["adjclose"] = close.copy()
        return out

    def _yahoo_answer(self, symbol: str, params: dict[str, str], fault: str | None) -> Response:
        def error(code: str, description: str, status: int = 400) -> Response:
            doc = {"chart": {"result": None, "error": {"code": code, "description": description}}}
            return status, {}, _json(doc)

        try:
            period1, period2 = int(params["period1"]), int(params["period2"])
        except (KeyError, ValueError):
            return error("Bad Request", "period1 and period2 (unix seconds) are required")
        if params.get("interval", "1d") != "1d":
            return error(
                "Unprocessable Entity", "the local provider serves interval=1d only", status=422
            )
        with self._lock:
            published = self._published
            partial = self.partial
            factor = self._scenario.offsets.get(symbol, 1.0)
            revisions = dict(self._scenario.revisions.get(symbol, {}))
            splits = [s for s in self._scenario.splits.get(symbol, []) if s[0] <= published]
            dividends = [d for d in self._scenario.dividends.get(symbol, []) if d[0] <= published]
        p = int(np.searchsorted(self._sessions, _day(published), side="right"))
        n = min(p + 1, len(self._sessions)) if partial else p
        bars = None if fault == "not_found" else self._base_bars(symbol, n)
        if bars is None:
            return 404, {}, _json(_YAHOO_NOT_FOUND)
        ts = self._open_ts[:n].copy()
        for _, ratio in splits:
            for f in PRICE_FIELDS:
                bars[f] /= ratio
            bars["volume"] *= ratio
        for ex, amount in dividends:
            i = self._session_index(ex)
            prev = bars["close"][i - 1]
            if math.isfinite(prev) and prev > amount:
                bars["adjclose"][:i] *= 1.0 - amount / prev
        for f in PRICE_FIELDS:
            bars[f] *= factor
        for d, fields in revisions.items():
            i = int(np.searchsorted(self._sessions, _day(d)))
            if i < n and self._sessions[i] == _day(d):
                for f, v in fields.items():
                    bars[f][i] = np.nan if v is None else v
        if n > p:  # the in-progress bar of the next session
            for f in ("close", "adjclose"):
                bars[f][p] *= 1.0 + PARTIAL_MOVE
            bars["low"][p] = np.fmin(bars["low"][p], bars["close"][p])
            ts[p] += PARTIAL_AFTER_OPEN_S
        keep = np.isfinite(bars["close"]) & (ts >= period1) & (ts < period2)
        if fault == "empty":
            keep[:] = False
        rows = np.flatnonzero(keep)
        meta = self._meta(symbol, bars, ts, rows, period1, period2)
        result: dict[str, Any] = {"meta": meta}
        if len(rows) == 0:
            result["indicators"] = {"quote": [{}], "adjclose": [{}]}
        else:
            result["timestamp"] = [int(t) for t in ts[rows]]
            events = self._events(splits, dividends, period1, period2)
            if events:
                result["events"] = events
            quote = {
                f: _listed(bars[f][rows], integer=f == "volume")
                for f in ("open", "high", "low", "close", "volume")
            }
            result["indicators"] = {
                "quote": [quote],
                "adjclose": [{"adjclose": _listed(bars["adjclose"][rows])}],
            }
        return 200, {}, _json({"chart": {"result": [result], "error": None}})

    def _events(
        self,
        splits: list[tuple[date, float]],
        dividends: list[tuple[date, float]],
        period1: int,
        period2: int,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for ex, amount in dividends:
            t = int(self._open_ts[self._session_index(ex)])
            if period1 <= t < period2:
                out.setdefault("dividends", {})[str(t)] = {"amount": amount, "date": t}
        for ex, ratio in splits:
            t = int(self._open_ts[self._session_index(ex)])
            if period1 <= t < period2:
                frac = Fraction(ratio).limit_denominator(1000)
                out.setdefault("splits", {})[str(t)] = {
                    "date": t,
                    "numerator": float(frac.numerator),
                    "denominator": float(frac.denominator),
                    "splitRatio": f"{frac.numerator}:{frac.denominator}",
                }
        return out

    def _meta(
        self,
        symbol: str,
        bars: dict[str, np.ndarray],
        ts: np.ndarray,
        rows: np.ndarray,
        period1: int,
        period2: int,
    ) -> dict[str, Any]:
        last_t = int(ts[rows[-1]]) if len(rows) else int(time.time())
        local = datetime.fromtimestamp(last_t, UTC).astimezone(calendar.TZ)
        offset = local.utcoffset()
        listed = np.flatnonzero(np.isfinite(bars["close"]))
        index = symbol.startswith("^")
        meta: dict[str, Any] = {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "SNP" if symbol == INDEX_SYMBOL else "CBO" if index else "NYQ",
            "fullExchangeName": "SNP" if index else "NYSE",
            "instrumentType": "INDEX" if index else "EQUITY",
            "firstTradeDate": int(ts[listed[0]]) if len(listed) else None,
            "regularMarketTime": last_t,
            "hasPrePostMarketData": False,
            "gmtoffset": int(offset.total_seconds()) if offset is not None else -18000,
            "timezone": local.tzname(),
            "exchangeTimezoneName": calendar.EXCHANGE_TZ,
            "priceHint": 2,
            "dataGranularity": "1d",
            "range": "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        if len(rows):
            close = float(bars["close"][rows[-1]])
            meta["regularMarketPrice"] = close if math.isfinite(close) else None
        return meta


# ------------------------------------------------------------------------------------------------
# Command line


def _load(spec: str) -> tuple[MarketData, _Embedded | None]:
    if spec == "embedded":
        return EmbeddedSource().load(), _read_embedded(str(EMBEDDED_PATH))
    from bloasis.config import parse_universe
    from bloasis.marketdata.synthetic import SyntheticSource

    kind, n, seed, years = parse_universe(spec)
    if kind != "synthetic":
        raise ValueError(f"--data: expected embedded or synthetic:N[:seed[:years]], got {spec!r}")
    return SyntheticSource(n, years, seed).load(), None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bloasis.marketdata.providers.local",
        description="Serve market data in FRED's and Yahoo's formats on 127.0.0.1, one session "
        "at a time (set BLOASIS_FRED_URL and BLOASIS_YAHOO_URL to the printed URL).",
    )
    parser.add_argument("--data", default="embedded", help="embedded or synthetic:N[:seed[:years]]")
    parser.add_argument("--published-through", required=True, type=date.fromisoformat)
    parser.add_argument("--end", type=date.fromisoformat, help="hold the clock at this session")
    parser.add_argument(
        "--every", type=float, help="publish the next session every SECONDS (default: manual)"
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="local-key", help="the FRED api_key accepted")
    parser.add_argument("--partial", action="store_true", help="serve in-progress Yahoo bars")
    parser.add_argument(
        "--clock-file",
        type=Path,
        help="record the clock here on each publish (a live replay's BLOASIS_MARKET_CLOCK)",
    )
    args = parser.parse_args(argv)
    if args.every is not None and not args.every > 0:
        parser.error("--every must be > 0")
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        )
    try:
        md, raw = _load(args.data)
    except ValueError as exc:
        parser.error(str(exc))

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    provider = LocalProvider(
        md,
        published_through=args.published_through,
        api_key=args.api_key,
        raw=raw,
        end=args.end,
        port=args.port,
        clock_file=args.clock_file,
    )
    provider.partial = args.partial
    with provider:
        print(
            f"serving FRED and Yahoo formats on {provider.base_url} "
            f"({md.source}, published through {provider.published_through}, end {provider.end})",
            flush=True,
        )
        next_at = time.monotonic() + args.every if args.every else math.inf
        # Short waits: a signal handler only runs between bytecodes of the main thread.
        while not stop.wait(min(0.25, max(0.0, next_at - time.monotonic()))):
            if time.monotonic() < next_at:
                continue
            before = provider.published_through
            now = provider.publish_next()
            if now != before:
                log.info("published %s", now)
            else:
                log.info("holding at %s (end %s)", now, provider.end)
            next_at += args.every
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
