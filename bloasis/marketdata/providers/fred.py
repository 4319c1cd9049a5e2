"""FRED (Federal Reserve Bank of St. Louis) series observations.

``GET {base}/fred/series/observations?series_id=&api_key=&file_type=json&observation_start=
&observation_end=`` answers::

    {"realtime_start": "2024-01-02", "realtime_end": "2024-01-02",
     "observation_start": "2023-12-01", "observation_end": "2023-12-31", "units": "lin",
     "output_type": 1, "file_type": "json", "order_by": "observation_date", "sort_order": "asc",
     "count": 21, "offset": 0, "limit": 100000,
     "observations": [{"realtime_start": "2024-01-02", "realtime_end": "2024-01-02",
                       "date": "2023-12-29", "value": "12.45"}, ...]}

Values are strings; "." means no value that day (a holiday of that series' market). Errors are
HTTP 400 with ``{"error_code": 400, "error_message": "Bad Request.  The series does not
exist."}``. Series used here: VIXCLS (VIX close), DGS10 / DGS2 (Treasury constant-maturity
yields, %), BAA / AAA (Moody's seasoned corporate yields, monthly, dated the first of the month
measured), SP500 (S&P 500 close).
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import TYPE_CHECKING, Any, Final

from pydantic import SecretStr

from bloasis.marketdata.providers import (
    Observation,
    ProviderConfigError,
    ProviderDataError,
)
from bloasis.marketdata.providers.http import HttpClient

if TYPE_CHECKING:
    from bloasis.config import Settings

PROVIDER: Final = "fred"
API_KEY_SETTING: Final = "BLOASIS_FRED_API_KEY"
OBSERVATIONS_PATH: Final = "/fred/series/observations"
# FRED's maximum page size; longer answers are paged with `offset`.
PAGE_LIMIT: Final = 100_000
_MAX_PAGES: Final = 50
MISSING: Final = "."
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
# A plain decimal number as FRED writes it (no "nan", "inf", "1_000" or padding, which float()
# would accept).
_NUMBER: Final = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def parse_date(text: object) -> date:
    """A strict ``YYYY-MM-DD`` date (ValueError otherwise)."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise ValueError(f"bad date {text!r} (expected YYYY-MM-DD)")
    return date.fromisoformat(text)


def parse_value(raw: object) -> float | None:
    """An observation value: "." is None, else a finite number (ValueError otherwise)."""
    if raw == MISSING:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError(f"bad value {raw!r} (expected a number or '.')")
    if isinstance(raw, str) and not _NUMBER.fullmatch(raw):
        raise ValueError(f"bad value {raw!r} (expected a number or '.')")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"non-finite value {raw!r}")
    return value


def parse_observations(
    payload: Any, series_id: str, start: date, end: date
) -> tuple[list[Observation], int | None]:
    """Observations of one page, validated (strict dates, finite values or None, strictly
    increasing dates inside [start, end]), and FRED's total `count` when it gave one.

    Raises ProviderDataError naming the series and, where there is one, the date."""

    def bad(reason: str) -> ProviderDataError:
        return ProviderDataError(PROVIDER, series_id, start, end, reason)

    if not isinstance(payload, dict):
        raise bad(f"expected a JSON object, got {type(payload).__name__}")
    rows = payload.get("observations")
    if not isinstance(rows, list):
        if isinstance(payload.get("error_message"), str):
            raise bad(f"error: {payload['error_message']}")
        raise bad("answer has no 'observations' list")
    count = payload.get("count")
    total = count if isinstance(count, int) and not isinstance(count, bool) else None
    out: list[Observation] = []
    previous: date | None = None
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "date" not in row or "value" not in row:
            raise bad(f"observation #{i} lacks 'date' or 'value': {str(row)[:80]}")
        try:
            day = parse_date(row["date"])
        except ValueError as exc:
            raise bad(f"observation #{i}: {exc}") from None
        try:
            value = parse_value(row["value"])
        except ValueError as exc:
            raise bad(f"{day}: {exc}") from None
        if previous is not None and day <= previous:
            raise bad(f"{day}: dates not strictly increasing (after {previous})")
        if not start <= day <= end:
            raise bad(f"{day}: observation outside the requested span")
        out.append(Observation(day, value))
        previous = day
    return out, total


class FredProvider:
    """FRED observations over one `HttpClient` (which enforces FRED's rate limit)."""

    name: Final = PROVIDER

    def __init__(self, base_url: str, api_key: str | SecretStr | None, http: HttpClient) -> None:
        self.base_url = base_url.rstrip("/")
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        # Kept as a SecretStr so no repr, vars() dump or traceback local shows it.
        self._api_key = SecretStr(key) if key else None
        self.http = http

    @classmethod
    def from_settings(cls, settings: Settings) -> FredProvider:
        return cls(
            settings.fred_url, settings.fred_api_key, HttpClient.from_settings(settings, PROVIDER)
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key is not None else "missing"
        return f"FredProvider(base_url={self.base_url!r}, api_key={key})"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FredProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def observations(
        self, series_id: str, start: date, end: date, *, allow_empty: bool = False
    ) -> list[Observation]:
        """Observations of `series_id` dated in [start, end], ascending ("." = None).

        An answer without any observation is a ProviderDataError unless `allow_empty` (use it
        for spans that may legitimately be unpublished yet, e.g. the current month of a monthly
        series). Raises ProviderConfigError without calling the network when no API key is set."""
        if not series_id or not re.fullmatch(r"[A-Za-z0-9_.-]+", series_id):
            raise ValueError(f"bad FRED series id {series_id!r}")
        if end < start:
            raise ValueError(f"end {end} is before start {start}")
        if self._api_key is None:
            raise ProviderConfigError(
                PROVIDER,
                series_id,
                start,
                end,
                f"no FRED API key: set {API_KEY_SETTING} "
                "(free at https://fred.stlouisfed.org/docs/api/api_key.html)",
            )
        params: dict[str, str | int | float] = {
            "series_id": series_id,
            "api_key": self._api_key.get_secret_value(),
            "file_type": "json",
            "observation_start": start.isoformat(),
            "observation_end": end.isoformat(),
        }
        out: list[Observation] = []
        for _ in range(_MAX_PAGES):
            payload = self.http.get_json(
                self.base_url + OBSERVATIONS_PATH, params, series=series_id, start=start, end=end
            )
            page, total = parse_observations(payload, series_id, start, end)
            if out and page and page[0].date <= out[-1].date:
                raise ProviderDataError(
                    PROVIDER, series_id, start, end, f"{page[0].date}: pages overlap"
                )
            out.extend(page)
            # FRED pages at `limit` (100000 by default): ask for the rest while it says more.
            if total is None or len(out) >= total or not page:
                break
            params["offset"] = len(out)
        if total is not None and len(out) < total:
            raise ProviderDataError(
                PROVIDER, series_id, start, end, f"truncated: {len(out)} of {total} observations"
            )
        if not out and not allow_empty:
            raise ProviderDataError(PROVIDER, series_id, start, end, "no observations")
        return out
