"""Read topics back from the real broker (manual assignment: no group-join wait on Tansu)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(frozen=True)
class Consumed:
    topic: str
    partition: int
    offset: int
    key: str
    value: str
    headers: dict[str, str]


async def consume_all(bootstrap: str, topic: str, *, idle_s: float = 1.0) -> list[Consumed]:
    """Every record currently in `topic`, in offset order per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()  # topic created after start
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Consumed] = []
        deadline = asyncio.get_running_loop().time() + 20

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while await behind():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read {topic} to its end offsets {end}")
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            for tp, msgs in batch.items():
                for m in msgs:
                    out.append(
                        Consumed(
                            tp.topic,
                            tp.partition,
                            m.offset,
                            (m.key or b"").decode(),
                            (m.value or b"").decode(),
                            {k: v.decode() for k, v in m.headers},
                        )
                    )
        return out
    finally:
        await consumer.stop()
