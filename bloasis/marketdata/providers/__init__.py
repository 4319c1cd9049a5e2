"""Live market-data providers: FRED (macro series) and Yahoo Finance (index and stock bars).

- `http.HttpClient`: the one HTTP client both adapters use (timeouts, retries with backoff and
  Retry-After, a per-provider rate limit, secrets redacted from every message and log record).
- `fred.FredProvider.observations(series_id, start, end) -> list[Observation]`.
- `yahoo.YahooProvider.daily_bars(symbol, start, end) -> DailyBars`.
- `local.LocalProvider`: a loopback server speaking both providers' formats over a `MarketData`,
  one session at a time, with fault injection (offline tests, demos, benchmarks).

Errors: every failure is a `ProviderError` naming the provider, the series and the span asked
for. `ProviderUnavailable` is transient (retries exhausted); `ProviderDataError` is an answer
that cannot be used (retrying will not help); `SymbolNotFound` is the provider saying the series
or symbol does not exist; `ProviderConfigError` is a local configuration problem (no API key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "DailyBars",
    "FloatArray",
    "Observation",
    "ProviderConfigError",
    "ProviderDataError",
    "ProviderError",
    "ProviderUnavailable",
    "SymbolNotFound",
]


class ProviderError(Exception):
    """A provider request failed. `str()` reads ``yahoo ^GSPC 2022-12-01..2022-12-28: <reason>``.

    `reason` and `series` are redacted (`http.redact`): no API key ever reaches a message."""

    def __init__(self, provider: str, series: str, start: date, end: date, reason: str) -> None:
        # Redacted here too (defense in depth): reasons quote provider answers.
        from bloasis.marketdata.providers.http import redact

        reason, series = redact(reason), redact(series)
        self.provider = provider
        self.series = series
        self.start = start
        self.end = end
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        return f"{self.provider} {self.series} {self.start}..{self.end}: {self.reason}"

    def __str__(self) -> str:
        return self._message()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._message()!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable (the ingest may run in worker processes): rebuild from the fields.
        return (type(self), (self.provider, self.series, self.start, self.end, self.reason))


class ProviderUnavailable(ProviderError):
    """Transient failure after every attempt: 5xx, 429, timeouts, connection errors."""


class ProviderDataError(ProviderError):
    """The provider answered, but not with usable data (malformed, empty, missing fields, an
    HTTP 4xx). Retrying the same request will not help."""


class SymbolNotFound(ProviderDataError):
    """The provider says the series or symbol does not exist (or was delisted)."""


class ProviderConfigError(ProviderError):
    """Local configuration prevents the request (e.g. no API key); nothing was sent."""


@dataclass(frozen=True)
class Observation:
    """One FRED observation; `value` is None where FRED publishes "." (no value that day)."""

    date: date
    value: float | None


@dataclass(frozen=True, eq=False)
class DailyBars:
    """Daily bars of one symbol, one row per exchange-local session date (America/New_York).

    Prices are as Yahoo serves them: `close` split-adjusted, `adj_close` split- and
    dividend-adjusted, `open/high/low` split-adjusted; `volume` in shares (split-adjusted).
    NaN = null / unknown. `dividends` are (ex-date, amount per share), `splits` are
    (ex-date, numerator/denominator), e.g. 4.0 for a 4:1 split. eq=False: arrays do not compare
    with ``==``."""

    symbol: str
    sessions: list[date]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    adj_close: FloatArray
    volume: FloatArray
    dividends: list[tuple[date, float]]
    splits: list[tuple[date, float]]

    def __len__(self) -> int:
        return len(self.sessions)
