"""The freshness SLA of the served regime, measured on the exchange calendar.

A regime for session D describes the market at D's close (`bloasis.calendar.session_close`:
16:00 America/New_York, 13:00 on early-close days). Its age is
the time since that close *counting NYSE trading days only*: weekends and holidays pause the
clock, because no newer session can exist then. With the daily run after each close, the age
stays under ~26 h on any schedule (Friday's regime on Monday at 17:30 is 25.5 h old), so the
default SLA of 36 h alerts when one daily run is missed, never on a weekend or a holiday.

`FreshnessMonitor` turns ages into breaches: one breach per served as-of, so the caller alerts
once per breach; when a newer regime is served in time the breach ends and a later one alerts
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from bloasis import calendar
from bloasis.calendar import session_close


def _midnight(d: date) -> datetime:
    # In UTC: subtracting two datetimes of one tzinfo ignores the DST change between them.
    return datetime.combine(d, time(0), calendar.TZ).astimezone(UTC)


def trading_age_seconds(as_of: date, now: datetime) -> float:
    """Seconds from the close of `as_of` to `now`, not counting the hours of non-trading days
    (exchange-local calendar days; DST-exact). 0 before that close."""
    close = session_close(as_of)
    if now <= close:
        return 0.0
    today = calendar.exchange_today(now)
    age = (now - close).total_seconds()
    if today <= as_of:
        return age
    for d in calendar.closed_days_between(as_of, today):
        age -= (_midnight(d + timedelta(days=1)) - _midnight(d)).total_seconds()
    if not calendar.is_session(today):
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
