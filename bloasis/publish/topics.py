"""Kafka topics and their settings (SPEC §6), created idempotently."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bloasis.publish.events import ALERT_TOPIC, REGIME_TOPIC, STRATEGY_TOPIC

_DAY_MS: Final = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_days: int

    @property
    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_days * _DAY_MS), "cleanup.policy": "delete"}


TOPICS: Final = (
    TopicSpec(REGIME_TOPIC, 3, 7),
    TopicSpec(ALERT_TOPIC, 3, 7),
    TopicSpec(STRATEGY_TOPIC, 6, 30),
)


async def ensure_topics(
    bootstrap: str,
    *,
    replication: int = 1,
    timeout_ms: int = 10_000,
    options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create missing topics and grow partition counts that are too small; returns created names.

    `options`: security arguments (`bloasis.publish.kafka_options.client_options`)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **(options or {})
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in TOPICS if t.name not in existing]
        created = []
        for t in missing:
            try:
                await admin.create_topics(
                    [NewTopic(t.name, t.partitions, replication, topic_configs=t.config)]
                )
                created.append(t.name)
            except TopicAlreadyExistsError:  # another relay won the race
                pass
        present = [t for t in TOPICS if t.name in existing]
        if present:
            meta = await admin.describe_topics([t.name for t in present])
            counts = {m["topic"]: len(m["partitions"]) for m in meta}
            grow = {
                t.name: NewPartitions(t.partitions)
                for t in present
                if 0 < counts.get(t.name, t.partitions) < t.partitions
            }
            if grow:
                await admin.create_partitions(grow)
        return created
    finally:
        await admin.close()


async def list_topics(
    bootstrap: str, *, options: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Topic name -> partition count, as the broker reports it."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=10_000, **(options or {})
    )
    await admin.start()
    try:
        names = await admin.list_topics()
        meta = await admin.describe_topics(sorted(names))
        return {m["topic"]: len(m["partitions"]) for m in meta}
    finally:
        await admin.close()
