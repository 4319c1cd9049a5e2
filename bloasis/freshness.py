"""The freshness SLA of the served regime, measured on the exchange calendar.

A regime for session D describes the market at D's close (16:00 America/New_York). Its age is
the time since that close *counting NYSE trading days only*: weekends and holidays pause the
clock, because no newer session can exist then. With the daily run after each close, the age
stays under ~26 h on any schedule (Friday's regime on Monday at 17:30 is 25.5 h old), so the
default SLA of 36 h alerts when one daily run is missed, never on a weekend or a holiday.
Early closes (13:00) are treated as 16:00: the age reads 3 h low on those few days.

`FreshnessMonitor` turns ages into breaches: one breach per served as-of, so the caller alerts
once per breach; when a newer regime is served in time the breach ends and a later one alerts
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

from bloasis.pipeline import EXCHANGE_TZ

SESSION_CLOSE: Final = time(16, 0)
_TZ: Final = ZoneInfo(EXCHANGE_TZ)


def session_close(d: date) -> datetime:
    """The (regular) close of session `d`, in UTC."""
    return datetime.combine(d, SESSION_CLOSE, _TZ).astimezone(UTC)


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), _TZ).astimezone(UTC)


@lru_cache(maxsize=64)
def _closed_days(after: date, before: date) -> tuple[date, ...]:
    """Calendar days strictly between `after` and `before` that are not NYSE sessions."""
    from bloasis.marketdata.validate import nyse_sessions

    first, last = after + timedelta(days=1), before - timedelta(days=1)
    if last < first:
        return ()
    sessions = {ts.date() for ts in nyse_sessions(first, last)}
    return tuple(
        d
        for d in (first + timedelta(days=i) for i in range((last - first).days + 1))
        if d not in sessions
    )


@lru_cache(maxsize=64)
def _is_session(d: date) -> bool:
    from bloasis.pipeline import is_trading_day

    return is_trading_day(d)


def trading_age_seconds(as_of: date, now: datetime) -> float:
    """Seconds from the close of `as_of` to `now`, not counting the hours of non-trading days
    (exchange-local calendar days; DST-exact). 0 before that close."""
    close = session_close(as_of)
    if now <= close:
        return 0.0
    today = now.astimezone(_TZ).date()
    age = (now - close).total_seconds()
    if today <= as_of:
        return age
    for d in _closed_days(as_of, today):
        age -= (_midnight(d + timedelta(days=1)) - _midnight(d)).total_seconds()
    if not _is_session(today):
        age -= (now - _midnight(today)).total_seconds()
    return max(age, 0.0)


@dataclass(frozen=True)
class Freshness:
    as_of: date
    age_seconds: float
    sla_seconds: int
    breach: bool  # older than the SLA now
    new_breach: bool  # ...and not reported yet: alert


class FreshnessMonitor:
    """Remembers which served as-of was already reported, so a breach alerts once."""

    def __init__(self, sla_seconds: int) -> None:
        if sla_seconds <= 0:
            raise ValueError("sla_seconds must be > 0")
        self.sla_seconds = sla_seconds
        self.reported: date | None = None  # the as-of of the breach already alerted

    def assess(self, as_of: date, now: datetime) -> Freshness:
        age = trading_age_seconds(as_of, now)
        breach = age > self.sla_seconds
        if not breach:
            self.reported = None  # fresh (again): the next breach is a new one
        return Freshness(as_of, age, self.sla_seconds, breach, breach and self.reported != as_of)

    def reported_breach(self, as_of: date) -> None:
        """The alert of this breach is safely queued."""
        self.reported = as_of
