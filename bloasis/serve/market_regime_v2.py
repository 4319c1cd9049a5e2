"""bloasis.market_regime.v2.MarketRegimeService: the current regime (through the answer cache,
then `RegimeReads`), its history (PostgreSQL, paged) and a live stream of changes (capped by
BLOASIS_WATCH_MAX_STREAMS)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bloasis import metrics
from bloasis.pb.v2 import market_regime_pb2 as mr_pb
from bloasis.regime.types import RegimeResult
from bloasis.serve.answer_cache import Answer, Policy, Version
from bloasis.serve.reads import RegimeReads
from bloasis.serve.snapshot import Snapshot
from bloasis.serve.validation import RequestError, check_user_id, invalid, parse_date_field, show
from bloasis.store.regimes import latest_regime, regime_history
from bloasis.wire import regime_to_pb

log = logging.getLogger(__name__)

SERVICE: Final = mr_pb.DESCRIPTOR.services_by_name["MarketRegimeService"]
DEFAULT_HISTORY_DAYS: Final = 365
PAGE_TOKEN_MAX_LEN: Final = 1024


def _now_ts() -> Timestamp:
    # From the integer clock: Timestamp.FromDatetime is pure Python and showed in the profile
    # of the GetCurrentRegime hot path (~25% of the handler).
    ns = time.time_ns()
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


class _ServedAt:
    """GetCurrentRegimeResponse's `served_at`, encoded, to the millisecond: built once per
    millisecond rather than per call (a Timestamp, a message and a serialisation per call
    showed at saturation, where calls arrive in batches within one millisecond)."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: tuple[int, bytes] = (-1, b"")  # (ms since the epoch, the field encoded)

    def field(self) -> bytes:
        ms = time.time_ns() // 1_000_000
        current = self.current
        if current[0] != ms:
            ts = Timestamp(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)
            encoded = mr_pb.GetCurrentRegimeResponse(served_at=ts).SerializeToString()
            # One tuple swapped at once: a reader never pairs one millisecond with another's bytes.
            current = self.current = (ms, encoded)
        return current[1]


SERVED_AT: Final = _ServedAt()


def default_start(end: date, max_days: int) -> date:
    try:
        return end - timedelta(days=min(DEFAULT_HISTORY_DAYS, max_days))
    except OverflowError:
        return date.min


def check_span(start: date, end: date, max_days: int) -> None:
    span = (end - start).days
    if span > max_days:
        raise invalid(
            f"start_date {start.isoformat()} .. end_date {end.isoformat()} spans {span} days; "
            f"at most {max_days} days per request"
        )


@dataclass(frozen=True)
class PageToken:
    """Where the previous page stopped, and the query it belongs to (raw request strings)."""

    start_date: str
    end_date: str
    end: date  # the resolved end (the latest as-of when end_date was empty)
    after: date  # the last as-of already returned

    def encode(self) -> str:
        body = {
            "v": 1,
            "s": self.start_date,
            "e": self.end_date,
            "end": self.end.isoformat(),
            "after": self.after.isoformat(),
        }
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> PageToken:
        bad = invalid("page_token is not a token returned by GetRegimeHistory")
        if len(token) > PAGE_TOKEN_MAX_LEN or not token.isascii():
            raise bad
        try:
            body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if not isinstance(body, dict) or body.get("v") != 1:
                raise bad
            s, e, end, after = body["s"], body["e"], body["end"], body["after"]
            if not all(isinstance(x, str) for x in (s, e, end, after)):
                raise bad
            return cls(s, e, date.fromisoformat(end), date.fromisoformat(after))
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise bad from None


@dataclass(frozen=True)
class HistoryQuery:
    raw_start: str
    raw_end: str
    start: date | None  # None: default from the resolved end
    end: date | None  # None: the latest as-of stored
    after: date | None
    page_size: int


def parse_history_request(
    start_date: str,
    end_date: str,
    req_page_size: int = 0,
    page_token: str = "",
    *,
    max_days: int,
    page_cap: int,
    prefix: str = "",
) -> HistoryQuery:
    """Everything that can be checked without the store, so bad input never needs PostgreSQL.
    `prefix` names the fields as the request does (v1: "time_range.")."""
    if req_page_size < 0:
        raise invalid(f"page_size must be >= 0 (0 = server default), got {req_page_size}")
    page_size = min(req_page_size or page_cap, page_cap)
    start = parse_date_field(f"{prefix}start_date", start_date)
    end = parse_date_field(f"{prefix}end_date", end_date)
    if start is not None and end is not None:
        if start > end:
            raise invalid(f"start_date {start.isoformat()} is after end_date {end.isoformat()}")
        check_span(start, end, max_days)
    after: date | None = None
    if page_token:
        tok = PageToken.decode(page_token)
        if (tok.start_date, tok.end_date) != (start_date, end_date):
            raise invalid(
                "page_token was issued for a different query: repeat the same start_date and "
                f"end_date (token has start_date={show(tok.start_date)}, "
                f"end_date={show(tok.end_date)})"
            )
        if end is not None and tok.end != end:
            raise invalid("page_token does not match end_date")
        end, after = tok.end, tok.after
        if start is not None:
            check_span(start, end, max_days)
    return HistoryQuery(start_date, end_date, start, end, after, page_size)


def current_regime_tag(user_id: str, force_refresh: bool) -> str | None:
    """GetCurrentRegime's answer-cache tag (v1 and v2): one answer for every user; none for a
    forced read."""
    check_user_id(user_id)
    return None if force_refresh else ""


def current_regime_policy(
    snapshot: Snapshot[RegimeResult], hit_tail: Callable[[], bytes]
) -> Policy:
    """The current regime's answers are valid while the snapshot holds the value they were
    read from (no TTL: every change swaps the value)."""

    def version(_tag: str) -> Version | None:
        value = snapshot.value
        return None if value is None else (value,)

    return Policy(version=version, hit_tail=hit_tail, ttl=float("inf"))


class WatchLimit:
    """At most `limit` WatchRegime streams at once on this server (0: no limit), v1 and v2
    alike: each open stream holds a subscription and a slot of the event loop's attention."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def acquire(self) -> None:
        if self.limit and self.open >= self.limit:
            metrics.WATCH_REFUSED.inc()
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server already serves {self.open} WatchRegime streams, its limit "
                "(BLOASIS_WATCH_MAX_STREAMS); retry later or against another server",
            )
        self.open += 1

    def release(self) -> None:
        self.open -= 1


class MarketRegimeServicer:
    """Current regime (answer cache, then snapshot / Redis / PostgreSQL); history from
    PostgreSQL; WatchRegime from the snapshot's change fan-out."""

    def __init__(
        self,
        reads: RegimeReads,
        *,
        history_max_days: int,
        history_page_size: int,
        watch_limit: WatchLimit,
    ) -> None:
        self.reads = reads
        self.model_version = reads.model_version
        self.snapshot = reads.snapshot
        self.history_max_days = history_max_days
        self.history_page_size = history_page_size
        self.watch_limit = watch_limit

    # --- GetCurrentRegime --------------------------------------------------------------------

    def answer_tag_GetCurrentRegime(self, request: mr_pb.GetCurrentRegimeRequest) -> str | None:
        return current_regime_tag(request.user_id, request.force_refresh)

    def answer_policy_GetCurrentRegime(self) -> Policy:
        return current_regime_policy(self.snapshot, SERVED_AT.field)

    async def GetCurrentRegime(
        self, request: mr_pb.GetCurrentRegimeRequest, context: Any
    ) -> Answer:
        check_user_id(request.user_id)
        value, source = await self.reads.current(context, force_refresh=request.force_refresh)
        if value is None:
            raise self.reads.not_found()
        # Serialised messages concatenate (a later field wins / merges): the regime is encoded
        # without served_at, which every call appends (once per millisecond, `_ServedAt`).
        body = mr_pb.GetCurrentRegimeResponse(regime=regime_to_pb(value), served_from=source)
        return Answer(body.SerializeToString(), SERVED_AT.field())

    # --- GetRegimeHistory --------------------------------------------------------------------

    def read_history(self, q: HistoryQuery) -> tuple[date | None, list[RegimeResult]]:
        """Blocking: (resolved end, up to page_size + 1 rows) — the extra row says "more"."""
        max_days = self.history_max_days
        with self.reads.store.engine.connect() as conn:
            end = q.end
            if end is None:
                latest = latest_regime(conn, self.model_version)
                if latest is None:
                    return None, []
                end = latest.as_of
            if q.start is None:
                start = default_start(end, max_days)
            else:
                start = q.start
                if start > end:
                    return end, []  # only possible with a defaulted end: nothing that late yet
                check_span(start, end, max_days)
            rows = regime_history(
                conn, self.model_version, start, end, after=q.after, limit=q.page_size + 1
            )
            return end, rows

    async def history_page(self, q: HistoryQuery, context: Any) -> tuple[list[RegimeResult], str]:
        end, rows = await self.reads.store.call(
            lambda: self.read_history(q), context, "reading regime history"
        )
        token = ""
        if end is not None and len(rows) > q.page_size:
            rows = rows[: q.page_size]
            token = PageToken(q.raw_start, q.raw_end, end, rows[-1].as_of).encode()
        return rows, token

    async def GetRegimeHistory(
        self, request: mr_pb.GetRegimeHistoryRequest, context: Any
    ) -> mr_pb.GetRegimeHistoryResponse:
        q = parse_history_request(
            request.start_date,
            request.end_date,
            request.page_size,
            request.page_token,
            max_days=self.history_max_days,
            page_cap=self.history_page_size,
        )
        rows, token = await self.history_page(q, context)
        return mr_pb.GetRegimeHistoryResponse(
            regimes=[regime_to_pb(r) for r in rows], next_page_token=token, served_at=_now_ts()
        )

    # --- WatchRegime -------------------------------------------------------------------------

    async def WatchRegime(
        self, request: mr_pb.WatchRegimeRequest, context: Any
    ) -> AsyncIterator[mr_pb.RegimeUpdate]:
        self.watch_limit.acquire()
        try:
            # Subscribe before reading the current value, so no change can slip in between.
            with self.snapshot.subscribe() as sub, metrics.WATCH_SUBSCRIBERS.track_inprogress():
                last: RegimeResult | None
                if request.skip_current:
                    last = self.snapshot.value
                else:
                    try:
                        last, _ = await self.reads.current(context)
                    except RequestError as exc:
                        if exc.code != grpc.StatusCode.UNAVAILABLE:
                            raise
                        last = None  # store down and nothing cached: wait for the first regime
                    if last is not None:
                        yield mr_pb.RegimeUpdate(regime=regime_to_pb(last), previous_regime="")
                # Compared as messages: a value read from Redis and the same row read from
                # PostgreSQL can differ as Python objects (e.g. absent vs None indicators).
                last_pb = regime_to_pb(last) if last is not None else None
                reported_drops = 0
                while True:
                    change = await sub.get()
                    if change is None:
                        raise RequestError(
                            grpc.StatusCode.UNAVAILABLE, "server is shutting down; reconnect"
                        )
                    if sub.dropped > reported_drops:
                        log.warning("slow WatchRegime client: %d changes dropped", sub.dropped)
                        reported_drops = sub.dropped
                    pb = regime_to_pb(change.value)
                    if pb == last_pb:
                        continue  # already sent (e.g. read from Redis before the snapshot)
                    previous = change.previous if change.previous is not None else last
                    yield mr_pb.RegimeUpdate(
                        regime=pb, previous_regime=previous.regime if previous is not None else ""
                    )
                    last, last_pb = change.value, pb
        finally:
            self.watch_limit.release()
