"""The market clock: what time it is for the market the system follows.

Normally the wall clock. In a live replay (`bloasis up --live replay`), the local provider
publishes one past session every few seconds and records its clock in a file
(BLOASIS_MARKET_CLOCK=file:PATH); the market's "now" is then the close of the session it last
published, plus the settle delay, plus the wall time elapsed since it published it. The session
guard, the ingest, freshness and the holiday skip all read `market_now`, so a replay behaves as
the live system does on those days (a stalled pipeline goes STALE exactly as it would live).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bloasis import calendar

if TYPE_CHECKING:
    from bloasis.config import Settings


class ClockError(RuntimeError):
    """The market clock file cannot be read; the message names BLOASIS_MARKET_CLOCK."""


def write_clock_file(path: Path, published_through: date, published_at: datetime) -> None:
    """Record the provider's clock atomically (readers never see a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "published_through": published_through.isoformat(),
                "published_at": published_at.astimezone(UTC).isoformat(),
            }
        )
    )
    tmp.replace(path)


def read_clock_file(path: Path) -> tuple[date, datetime]:
    try:
        got = json.loads(path.read_text())
        return (
            date.fromisoformat(got["published_through"]),
            datetime.fromisoformat(got["published_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClockError(
            f"BLOASIS_MARKET_CLOCK=file:{path}: cannot read the market clock ({exc}); is the"
            " local provider running (`bloasis up --live replay`)?"
        ) from None


def market_now(settings: Settings, wall: datetime | None = None) -> datetime:
    """The market's current time (see the module docstring), in UTC."""
    wall = wall or datetime.now(UTC)
    spec = settings.market_clock
    if spec == "wall":
        return wall
    through, published_at = read_clock_file(Path(spec.removeprefix("file:")))
    settle = timedelta(seconds=settings.session_settle_seconds)
    return calendar.session_close(through) + settle + max(wall - published_at, timedelta(0))
