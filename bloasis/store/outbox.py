"""The transactional outbox: events are inserted with the results, a relay sends and marks them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, cast

from sqlalchemy import Connection, Table, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from bloasis.store.models import OutboxRow

_T = cast(Table, OutboxRow.__table__)
# NOTIFY channel: tells listeners (the gRPC server) that results were committed.
RESULTS_CHANNEL = "bloasis_results"


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    topic: str
    key: str
    payload: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingEvent:
    id: int
    event: OutboxEvent
    attempts: int


def enqueue(conn: Connection, events: Sequence[OutboxEvent]) -> int:
    """Insert events in the caller's transaction; an event id already present is skipped."""
    if not events:
        return 0
    stmt = (
        insert(_T)
        .values(
            [
                {
                    "event_id": e.event_id,
                    "topic": e.topic,
                    "key": e.key,
                    "headers": e.headers,
                    "payload": e.payload,
                }
                for e in events
            ]
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(_T.c.id)
    )
    return len(conn.execute(stmt).all())


# Two-int4 advisory key (apart from the single-bigint keys used for other locks).
RELAY_LOCK: Final = {"c": 0x0B10A5, "k": 1}


def lock_relay(conn: Connection) -> None:
    """Wait for other relays' open batches: held until the caller's transaction ends, so one
    batch is in flight at a time and a key's events reach the broker in id order even when two
    relays run at once (the pipeline's relay step and the outbox-relay flow)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:c, :k)"), RELAY_LOCK)


_CLAIM: Final = (
    "SELECT id, event_id, topic, key, payload, headers, attempts FROM outbox "
    "WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)


def claim_pending(conn: Connection, limit: int) -> list[PendingEvent]:
    """Lock the oldest unpublished events; concurrent relays skip each other's rows."""
    # A backlog just inserted in bulk is not analyzed yet: with its stale estimate the planner
    # sorts every pending row for each claim (~0.5 s per claim at 100k pending) instead of
    # walking ix_outbox_pending in id order (~5 ms). Scoped to this transaction.
    conn.exec_driver_sql("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off")
    # The driver's cursor, in the caller's transaction: thousands of rows per claim, and
    # SQLAlchemy's result layer would double the cost of reading them.
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(_CLAIM, (limit,))
        rows = cur.fetchall()
    return [PendingEvent(r[0], OutboxEvent(r[1], r[2], r[3], r[4], r[5]), r[6]) for r in rows]


_MARK_PUBLISHED: Final = text(
    "UPDATE outbox SET published_at = now(), last_error = NULL WHERE id = ANY(:ids)"
)


def mark_published(conn: Connection, ids: Sequence[int]) -> None:
    # One array parameter: an IN list of thousands of bound values costs more to build and parse.
    if ids:
        conn.execute(_MARK_PUBLISHED, {"ids": list(ids)})


def mark_failed(conn: Connection, ids: Sequence[int], error: str) -> None:
    if ids:
        conn.execute(
            update(_T)
            .where(_T.c.id.in_(ids))
            .values(attempts=_T.c.attempts + 1, last_error=error[:2000])
        )


def backlog(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).where(_T.c.published_at.is_(None))).scalar_one())


def notify_results(conn: Connection, payload: str) -> None:
    """Delivered to listeners only when the caller's transaction commits."""
    conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": RESULTS_CHANNEL, "p": payload})


def copy_enqueue(conn: Connection, events: Sequence[OutboxEvent]) -> int:
    """`enqueue` for many events (a whole user batch): COPY into a staging table, then insert
    the ids not present yet. Same transaction and dedup semantics, far fewer round trips."""
    if not events:
        return 0
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_outbox (event_id text, topic text, key text, "
            "headers jsonb, payload text) ON COMMIT DROP"
        )
        # Called twice in one transaction, the staging table is still there: empty it.
        cur.execute("TRUNCATE stage_outbox")
        with cur.copy("COPY stage_outbox FROM STDIN") as copy:
            for e in events:
                copy.write_row((e.event_id, e.topic, e.key, json.dumps(e.headers), e.payload))
        cur.execute(
            "INSERT INTO outbox (event_id, topic, key, headers, payload) "
            "SELECT event_id, topic, key, headers, payload FROM stage_outbox "
            "ON CONFLICT (event_id) DO NOTHING"
        )
        return int(cur.rowcount)
