"""Outbox relay throughput: N user-strategy events in the outbox (as a 100,000-user run leaves
them), published by `bloasis.publish.relay.relay_pending` with the production settings (batch
size, idempotence, security options), then checked on both ends: every row marked published, and
the broker holding each event id exactly once (read back from the offsets before the relay).

    python -m bench.relay_throughput [--size tiny|quick|full]

The value is events/s over the relay's own wall time (topic check and producer start included);
the target is 20,000 events/s. Seeding the outbox (COPY) is not timed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

from bench.common import bench_stack, entry, say, size_main

if TYPE_CHECKING:
    from bloasis.config import Settings
    from bloasis.store.outbox import OutboxEvent

SIZES: Final = {"tiny": 300, "quick": 20_000, "full": 100_000}
TARGET: Final = 20_000.0


def make_events(n: int, tag: str) -> list[OutboxEvent]:
    """`n` compact strategy-signal events shaped like `user_strategy_event`'s (15 signals)."""
    from bloasis.publish.events import CONTENT_TYPE, STRATEGY_TOPIC
    from bloasis.store.outbox import OutboxEvent

    signals = json.dumps(
        [
            {"symbol": f"S{i:03d}", "sector": "Energy", "action": "buy", "weight": "0.0500"}
            for i in range(15)
        ],
        separators=(",", ":"),
    )
    out = []
    for i in range(n):
        sid = f"user:{tag}-u{i:06d}:2024-06-03:bench"
        eid = f"strategy_signal:{sid}:v1"
        payload = (
            json.dumps(
                {
                    "event_id": eid,
                    "event_type": "strategy_signal",
                    "occurred_at": "2024-06-03T21:00:00Z",
                    "strategy_id": sid,
                    "as_of": "2024-06-03",
                    "risk_profile": "moderate",
                    "user_id": f"{tag}-u{i:06d}",
                    "regime": "bull",
                    "risk_level": "low",
                    "cash_weight": "0.2500",
                    "profile_strategy_id": "moderate:2024-06-03:bench",
                },
                sort_keys=True,
                separators=(",", ":"),
            )[:-1]
            + f',"signals":{signals}}}'
        )
        out.append(
            OutboxEvent(
                event_id=eid,
                topic=STRATEGY_TOPIC,
                key=sid,
                payload=payload,
                headers={
                    "event_type": "strategy_signal",
                    "content-type": CONTENT_TYPE,
                    "event_id": eid,
                },
            )
        )
    return out


async def _offsets(bootstrap: str, topic: str, options: dict[str, Any]) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        end = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in end.items()}
    finally:
        await consumer.stop()


async def consume_ids(
    bootstrap: str, topic: str, start: dict[int, int], options: dict[str, Any], prefix: str
) -> Counter[str]:
    """How many times each event id starting with `prefix` is in `topic` after `start`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    end = await _offsets(bootstrap, topic, options)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
        **options,
    )  # fmt: skip
    await consumer.start()
    seen: Counter[str] = Counter()
    try:
        tps = {p: TopicPartition(topic, p) for p in end if end[p] > start.get(p, 0)}
        if not tps:
            return seen
        consumer.assign(list(tps.values()))
        for p, tp in tps.items():
            consumer.seek(tp, start.get(p, 0))
        deadline = time.monotonic() + 120
        left = set(tps)
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {end}")
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            for msgs in batch.values():
                for m in msgs:
                    eid = dict(m.headers).get("event_id", b"").decode()
                    if eid.startswith(prefix):
                        seen[eid] += 1
            for p in list(left):
                if await consumer.position(tps[p]) >= end[p]:
                    left.discard(p)
        return seen
    finally:
        await consumer.stop()


def run(size: str = "full", settings: Settings | None = None) -> list[dict[str, Any]]:
    from sqlalchemy import text

    from bloasis.publish.events import STRATEGY_TOPIC
    from bloasis.publish.kafka_options import client_options
    from bloasis.publish.relay import relay_pending
    from bloasis.publish.topics import ensure_topics
    from bloasis.store.db import engine_for
    from bloasis.store.outbox import copy_enqueue

    n = SIZES[size]
    tag = f"relay-{uuid.uuid4().hex[:8]}"
    with bench_stack(settings) as s:
        bootstrap = s.require("kafka_bootstrap_servers")
        options = client_options(s)
        engine = engine_for(s.require("database_url"))
        events = make_events(n, tag)
        say(f"relay: seeding {n} events in the outbox...")
        with engine.begin() as conn:
            inserted = copy_enqueue(conn, events)
        asyncio.run(ensure_topics(bootstrap, options=options))
        before = asyncio.run(_offsets(bootstrap, STRATEGY_TOPIC, options))
        say(f"relay: publishing (batch size {s.relay_batch_size}, idem {s.kafka_idempotence})...")
        stats = asyncio.run(
            relay_pending(
                engine,
                bootstrap,
                idempotence=s.kafka_idempotence,
                batch_size=s.relay_batch_size,
                options=options,
                own_process=True,  # as `bloasis relay` runs it
            )
        )
        with engine.connect() as conn:
            published_rows = conn.execute(
                text(
                    "SELECT count(*) FROM outbox "
                    "WHERE event_id LIKE :p AND published_at IS NOT NULL"
                ),
                {"p": f"strategy_signal:user:{tag}-%"},
            ).scalar_one()
        say("relay: reading the events back from the broker...")
        seen = asyncio.run(
            consume_ids(bootstrap, STRATEGY_TOPIC, before, options, f"strategy_signal:user:{tag}-")
        )
    rate = stats.published / stats.seconds if stats.seconds else 0.0
    unique, dups = len(seen), sum(c - 1 for c in seen.values())
    equal = inserted == n and published_rows == n and unique == n and dups == 0
    return [
        entry(
            "relay_throughput",
            rate,
            "events/s",
            compared_to=f"target {TARGET:,.0f} events/s",
            baseline_value=TARGET,
            target=f">= {TARGET:,.0f} events/s",
            met=rate >= TARGET and equal,
            higher_is_better=True,
            events=n,
            published=stats.published,
            batches=stats.batches,
            seconds=round(stats.seconds, 3),
            marked_published=int(published_rows),
            consumed_unique=unique,
            duplicates=dups,
            pending_after=stats.pending,
            checks_ok=equal,
            batch_size=s.relay_batch_size,
            size=size,
        )
    ]


if __name__ == "__main__":
    size_main(__doc__, SIZES, run)
