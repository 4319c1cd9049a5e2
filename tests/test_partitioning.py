"""The relay's vectorised key partitioning equals aiokafka's default partitioner (what
`producer.send(key=...)` would pick), so batching per partition keeps each key on its partition."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference

from bloasis.publish.partitioning import murmur2, partitions_for_keys


def test_murmur2_and_partitions_equal_aiokafka_for_every_key_length() -> None:
    rnd = random.Random(7)
    keys = [bytes(rnd.getrandbits(8) for _ in range(n)) for n in range(0, 70) for _ in range(20)]
    keys += [b"regime", "user:ü-1:2024-06-03".encode(), b"\xff" * 9]
    assert murmur2(keys) == [reference(k) for k in keys]
    partitioner = DefaultPartitioner()
    for parts in ([0], [0, 1, 2], list(range(6)), [3, 5, 8]):
        assert partitions_for_keys(keys, parts) == [partitioner(k, parts, parts) for k in keys]
    assert murmur2([]) == [] and partitions_for_keys([], [0, 1]) == []
