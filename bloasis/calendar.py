"""The exchange calendar: NYSE (XNYS) sessions, their opens and closes (early closes included),
and "now" in exchange time. One module over `exchange_calendars`, used by market-data validation,
the session-complete guard, the schedule's holiday skip, freshness and replay.

Dates are exchange-local session dates (`datetime.date`, or tz-naive midnight Timestamps in
indexes); instants are timezone-aware `datetime`s in UTC.
"""

from __future__ import annotations

import functools
import warnings
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import pandas as pd

EXCHANGE: Final = "XNYS"
EXCHANGE_TZ: Final = "America/New_York"
TZ: Final = ZoneInfo(EXCHANGE_TZ)
# Calendars are built per decade (cached), so a lookup never rebuilds one.
_DECADE = 10


@functools.lru_cache(maxsize=16)
def _decade_schedule(first_year: int) -> pd.DataFrame:
    """Sessions of the decade starting `first_year`: index tz-naive session dates (name
    ``date``), columns ``open`` and ``close`` as tz-aware UTC Timestamps."""
    # Imported lazily: exchange_calendars costs ~0.4 s to import, and loading the embedded data
    # must not pay for it.
    import exchange_calendars as xcals

    with warnings.catch_warnings():
        # exchange_calendars trips a pandas 3.1 deprecation (Series.values on tz-aware data)
        # while building the calendar; it is theirs to fix, not a data problem.
        warnings.filterwarnings("ignore", message=".*Series.values.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*Series.values.*", category=DeprecationWarning)
        cal = xcals.get_calendar(
            EXCHANGE, start=f"{first_year}-01-01", end=f"{first_year + _DECADE - 1}-12-31"
        )
        sched = cal.schedule[["open", "close"]].copy()
    idx = pd.DatetimeIndex(sched.index)
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    # Plain index (no business-day `freq`), like every other index in MarketData.
    sched.index = pd.DatetimeIndex(idx.values, name="date").as_unit("ns")
    return sched


def _schedule(first_year: int, last_year: int) -> pd.DataFrame:
    lo = first_year - first_year % _DECADE
    frames = [_decade_schedule(y) for y in range(lo, last_year + 1, _DECADE)]
    return frames[0] if len(frames) == 1 else pd.concat(frames)


def _ts(d: date | datetime | pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(d)
    if ts.tzinfo is not None:
        raise ValueError(f"expected a tz-naive date, got {d!r}")
    return ts.normalize()


def sessions(first: date | pd.Timestamp | str, last: date | pd.Timestamp | str) -> pd.DatetimeIndex:
    """NYSE sessions in [first, last], tz-naive, normalized, named ``date``."""
    lo, hi = _ts(first), _ts(last)
    if hi < lo:
        return pd.DatetimeIndex([], dtype="datetime64[ns]", name="date")
    idx = pd.DatetimeIndex(_schedule(lo.year, hi.year).index)
    return idx[idx.slice_indexer(lo, hi)].rename("date")


def session_dates(first: date, last: date) -> list[date]:
    """`sessions` as a list of `date`s."""
    return [ts.date() for ts in sessions(first, last)]


def _row(d: date) -> pd.Series | None:
    sched = _schedule(d.year, d.year)
    ts = _ts(d)
    if ts not in sched.index:
        return None
    row = sched.loc[ts]
    assert isinstance(row, pd.Series)
    return row


def is_session(d: date) -> bool:
    return _row(d) is not None


def _require(d: date) -> pd.Series:
    row = _row(d)
    if row is None:
        raise ValueError(f"{d.isoformat()} is not a NYSE session")
    return row


def session_open(d: date) -> datetime:
    """The open of session `d`, in UTC (ValueError when `d` is not a session)."""
    return pd.Timestamp(_require(d)["open"]).to_pydatetime().astimezone(UTC)


def session_close(d: date) -> datetime:
    """The close of session `d`, in UTC: 16:00 New York, 13:00 on early-close days."""
    return pd.Timestamp(_require(d)["close"]).to_pydatetime().astimezone(UTC)


def previous_session(d: date) -> date:
    """The last session strictly before `d` (`d` need not be a session)."""
    back = sessions(d - timedelta(days=15), d - timedelta(days=1))
    if len(back) == 0:  # never: no NYSE closure has lasted two weeks since 1933
        raise ValueError(f"no NYSE session in the 15 days before {d}")
    return back[-1].date()


def next_session(d: date) -> date:
    """The first session strictly after `d` (`d` need not be a session)."""
    ahead = sessions(d + timedelta(days=1), d + timedelta(days=15))
    if len(ahead) == 0:
        raise ValueError(f"no NYSE session in the 15 days after {d}")
    return ahead[0].date()


def session_on_or_before(d: date) -> date:
    return d if is_session(d) else previous_session(d)


def exchange_now(now: datetime | None = None) -> datetime:
    """`now` (default: the clock) in exchange time."""
    return (now or datetime.now(UTC)).astimezone(TZ)


def exchange_today(now: datetime | None = None) -> date:
    """Today on the exchange's clock (schedules are in exchange time)."""
    return exchange_now(now).date()


def is_complete(d: date, now: datetime, settle: timedelta = timedelta(0)) -> bool:
    """Session `d` closed at least `settle` before `now` (its bars are final)."""
    return is_session(d) and session_close(d) + settle <= now


def latest_complete_session(now: datetime, settle: timedelta = timedelta(0)) -> date:
    """The newest session whose close plus `settle` is at or before `now`: during trading hours
    (or before the settle delay has passed) that is the previous session."""
    d = session_on_or_before(exchange_today(now))
    while not is_complete(d, now, settle):
        d = previous_session(d)
    return d


def knowledge_cutoff(d: date) -> datetime:
    """When what is known "as of session `d`" is fixed: the open of the next session (UTC).
    Values first seen after it belong to later as-of dates (point-in-time store reads)."""
    return session_open(next_session(d))


def closed_days_between(after: date, before: date) -> tuple[date, ...]:
    """Calendar days strictly between `after` and `before` that are not NYSE sessions."""
    return _closed_days(after, before)


@functools.lru_cache(maxsize=64)
def _closed_days(after: date, before: date) -> tuple[date, ...]:
    first, last = after + timedelta(days=1), before - timedelta(days=1)
    if last < first:
        return ()
    open_days = set(session_dates(first, last))
    return tuple(
        d
        for d in (first + timedelta(days=i) for i in range((last - first).days + 1))
        if d not in open_days
    )
