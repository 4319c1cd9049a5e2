"""One HTTP client for the market-data providers.

`HttpClient.get_json` adds what every provider call needs: connect/read timeouts, retries with
exponential backoff and jitter on 429, 5xx, timeouts and connection errors, `Retry-After`
honoured on 429/503 (and a too-long one failing at once), a thread-safe per-client rate limit,
counters, and secrets kept out of every message and log record.

Secrets: the FRED API key travels as a query parameter, so every URL that httpx logs (INFO
``HTTP Request: GET <url>`` on logger "httpx") carries it. `install_log_redaction` puts a filter
on the httpx and httpcore loggers that rewrites ``api_key=<value>`` to ``api_key=***`` (and any
registered secret value to ``***``) before any handler sees the record; the client installs it
on construction. Error messages are built from redacted text only.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final

import httpx

from bloasis.marketdata.providers import (
    ProviderDataError,
    ProviderError,
    ProviderUnavailable,
    SymbolNotFound,
)

if TYPE_CHECKING:
    from bloasis.config import Settings

log = logging.getLogger("bloasis.providers")

MAX_RETRY_AFTER_SETTING: Final = "BLOASIS_PROVIDER_MAX_RETRY_AFTER_SECONDS"
DEFAULT_SECRET_PARAMS: Final = ("api_key",)
# Loggers that see request URLs. Filters on a logger only apply to records created on that very
# logger (not its children), so httpcore's child loggers are listed one by one.
REDACTED_LOGGERS: Final = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
REDACTED: Final = "***"
# Secret values shorter than this are not redacted as bare text (a 1-char "secret" would blank
# every log line); they are still redacted where they appear as ``name=value``.
_MIN_SECRET_LEN: Final = 6
_RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_RETRY_AFTER_STATUS: Final = frozenset({429, 503})
# 4xx bodies that mean "no such series/symbol" (FRED 400, Yahoo 404).
_NOT_FOUND_TEXT: Final = re.compile(r"does not exist|no data found|may be delisted", re.I)
_MAX_BODY_IN_MESSAGE: Final = 200


# ------------------------------------------------------------------------------------------------
# Redaction

_secrets_lock = threading.Lock()
_secret_names: set[str] = set(DEFAULT_SECRET_PARAMS)
# Replaced (never mutated) under the lock, so `redact` can read it from any thread unlocked.
_secret_values: tuple[str, ...] = ()
_name_pattern: re.Pattern[str] = re.compile("(?!)")


def _rebuild_pattern() -> None:
    global _name_pattern
    names = "|".join(re.escape(n) for n in sorted(_secret_names))
    # name=value in a query string, a log line or a repr'd URL; the value ends at a separator.
    _name_pattern = re.compile(rf"(?i)\b({names})=[^&\s'\"#;,)>\]]*")


_rebuild_pattern()


def register_secret(names: Iterable[str] = (), values: Iterable[str] = ()) -> None:
    """Parameter names whose values, and literal values, to redact everywhere from now on."""
    global _secret_values
    with _secrets_lock:
        _secret_names.update(n for n in names if n)
        new = {v for v in values if len(v) >= _MIN_SECRET_LEN} - set(_secret_values)
        if new:
            # Longest first, so a secret that contains another is replaced whole.
            _secret_values = tuple(sorted({*_secret_values, *new}, key=len, reverse=True))
        _rebuild_pattern()


def redact(text: str) -> str:
    """`text` with ``name=value`` of every secret parameter, and every registered secret value,
    replaced by ``***``."""
    out = _name_pattern.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    for v in _secret_values:
        if v in out:
            out = out.replace(v, REDACTED)
    return out


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets redacted (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem; never hide it here
            return True
        clean = redact(message)
        if clean != message or record.args:
            # Formatted once and frozen: args (e.g. an httpx.URL) must not be re-rendered later.
            record.msg, record.args = clean, None
        return True


_FILTER: Final = RedactingFilter("bloasis.providers.redact")
_install_lock = threading.Lock()


def install_log_redaction() -> None:
    """Put the redacting filter on the httpx and httpcore loggers (idempotent)."""
    with _install_lock:
        for name in REDACTED_LOGGERS:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)


# ------------------------------------------------------------------------------------------------
# Retry-After


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP-date), or None when
    absent or unparseable. Never negative; never raises."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110: HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    try:
        delta = (when - (now or datetime.now(UTC))).total_seconds()
    except OverflowError:
        return None
    return max(0.0, delta)


# ------------------------------------------------------------------------------------------------
# Rate limit


class RateLimiter:
    """Minimum spacing between request starts (1/rate), shared by all threads of a client.

    Each caller reserves the next free slot under the lock and sleeps outside it, so threads are
    spaced evenly without one sleeping thread blocking the others' reservations."""

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not per_second > 0:
            raise ValueError(f"requests per second must be > 0, got {per_second}")
        self.interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = -math.inf

    def acquire(self) -> float:
        """Wait for this caller's slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait


# ------------------------------------------------------------------------------------------------
# Client


def _error_message(body: bytes) -> str:
    """The provider's own error message from a JSON error body (FRED, Yahoo), else the start of
    the body text."""
    text = body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("error_message"), str):  # FRED
            return str(doc["error_message"])
        chart = doc.get("chart") or doc.get("finance")  # Yahoo
        if isinstance(chart, dict) and isinstance(chart.get("error"), dict):
            err = chart["error"]
            desc, code = err.get("description"), err.get("code")
            return ": ".join(str(x) for x in (code, desc) if x)
        for key in ("message", "error", "detail"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    text = " ".join(text.split())
    return text[:_MAX_BODY_IN_MESSAGE] + ("..." if len(text) > _MAX_BODY_IN_MESSAGE else "")


class HttpClient:
    """JSON GETs for one provider ("fred", "yahoo"): retries, rate limit, redaction, counters.

    Thread-safe: one client is shared by the ingest's thread pool (httpx.Client pools
    connections across threads). `sleep` and `clock` are injectable so tests never wait."""

    def __init__(
        self,
        provider: str,
        *,
        timeout_s: float,
        attempts: int,
        max_retry_after_s: float,
        requests_per_second: float,
        secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 16,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.provider = provider
        self.timeout_s = float(timeout_s)
        self.attempts = int(attempts)
        self.max_retry_after_s = float(max_retry_after_s)
        self.secret_params = tuple(secret_params)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_cap_s = float(backoff_cap_s)
        self._sleep = sleep
        self._limiter = RateLimiter(requests_per_second, clock=clock, sleep=sleep)
        self._random = random.Random()
        self._lock = threading.Lock()
        self._stats = {"requests": 0, "retries": 0, "bytes": 0, "failures": 0}
        register_secret(names=self.secret_params)
        install_log_redaction()
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout_s),
            headers=dict(headers or {}),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=max_connections),
            # Environment proxies apply to the real providers, never to a loopback stand-in
            # (the local provider server): None = the direct transport.
            mounts={"all://127.0.0.1": None, "all://localhost": None, "all://[::1]": None},
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, provider: str, *, headers: Mapping[str, str] | None = None
    ) -> HttpClient:
        rps = {
            "fred": settings.fred_requests_per_second,
            "yahoo": settings.yahoo_requests_per_second,
        }
        if provider not in rps:
            raise ValueError(f"unknown provider {provider!r} (expected fred or yahoo)")
        return cls(
            provider,
            timeout_s=settings.provider_timeout_seconds,
            attempts=settings.provider_attempts,
            max_retry_after_s=settings.provider_max_retry_after_seconds,
            requests_per_second=rps[provider],
            headers=headers,
            max_connections=max(settings.provider_concurrency, 1),
        )

    def __repr__(self) -> str:
        return (
            f"HttpClient(provider={self.provider!r}, timeout_s={self.timeout_s}, "
            f"attempts={self.attempts}, interval_s={self._limiter.interval:.3f})"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Counters since construction: requests sent, retries, response bytes, failed calls."""
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": at least half the exponential step, so retries never bunch at zero.
        step = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        return step / 2 + self._random.uniform(0, step / 2)

    def get_json(
        self,
        url: str,
        params: Mapping[str, str | int | float] | None,
        *,
        series: str,
        start: date,
        end: date,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET `url` and decode its JSON body, retrying transient failures.

        Raises ProviderUnavailable (retries exhausted, or a Retry-After above the maximum),
        SymbolNotFound (4xx saying the series/symbol does not exist), ProviderDataError (other
        4xx, unexpected status, malformed JSON)."""
        params = dict(params or {})
        secrets = [str(params[n]) for n in self.secret_params if n in params]
        if secrets:
            register_secret(values=secrets)

        def error(cls: type[ProviderError], reason: str) -> ProviderError:
            return cls(self.provider, series, start, end, redact(reason))

        for attempt in range(1, self.attempts + 1):
            self._limiter.acquire()
            self._count("requests")
            retry_after: float | None = None
            try:
                resp = self._client.get(url, params=params, headers=headers)
                body = resp.content
            except httpx.TimeoutException as exc:
                reason = f"timeout ({type(exc).__name__}, {self.timeout_s:g} s)"
            except httpx.TransportError as exc:
                # str(exc) is the OS/protocol message ("[Errno 111] Connection refused"); it
                # holds no URL, and is redacted anyway.
                reason = f"connection error ({type(exc).__name__}: {exc})"
            else:
                self._count("bytes", len(body))
                status = resp.status_code
                if status == 200:
                    try:
                        return json.loads(body)
                    except (ValueError, UnicodeDecodeError) as exc:
                        self._count("failures")
                        raise error(
                            ProviderDataError, f"malformed JSON: {exc} ({len(body)} bytes)"
                        ) from None
                if status not in _RETRY_STATUS:
                    self._count("failures")
                    message = _error_message(body)
                    reason = f"HTTP {status}" + (f": {message}" if message else "")
                    if status in (400, 404) and _NOT_FOUND_TEXT.search(message):
                        raise error(SymbolNotFound, reason) from None
                    raise error(ProviderDataError, reason) from None
                reason = f"HTTP {status}"
                if status in _RETRY_AFTER_STATUS:
                    header = resp.headers.get("Retry-After")
                    retry_after = parse_retry_after(header)
                    if retry_after is not None and retry_after > self.max_retry_after_s:
                        self._count("failures")
                        raise error(
                            ProviderUnavailable,
                            f"{reason}: the provider asked to retry after {retry_after:g} s "
                            f"(Retry-After: {header}), more than the {self.max_retry_after_s:g} s "
                            f"allowed by {MAX_RETRY_AFTER_SETTING}",
                        ) from None
            if attempt == self.attempts:
                self._count("failures")
                raise error(ProviderUnavailable, f"{reason} after {self.attempts} attempts")
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            self._count("retries")
            log.info(
                "%s %s %s..%s: %s; retry %d of %d in %.2f s%s",
                self.provider,
                series,
                start,
                end,
                redact(reason),
                attempt,
                self.attempts - 1,
                wait,
                " (Retry-After)" if retry_after is not None else "",
            )
            self._sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises
