"""The answer cache: a method's serialised response reused, without parsing the request or
building the response, while the data it was built from is still what the server serves.

Why it exists (measured, bench/results/*-grpc-serving*.json): at saturation the server's one
event-loop thread is the bottleneck, and a call answered here costs a dict lookup and one
coroutine instead of a parse, a store read (Redis per user), an expansion and a serialisation.

- Keyed by (method, request bytes); each entry remembers the *data version* it was built from:
  a tuple of the snapshot values (compared by identity: a snapshot swaps values, never mutates
  them) and, for per-user answers, the user's write generation on this server. An entry whose
  version is no longer current, or whose method's TTL passed, is a miss.
- Which calls are cached is the servicer's decision (`answer_tag_<Method>(request)` returns the
  tag its version depends on, or None), what a hit appends per call (served_at, served_from) is
  the method's `hit_tail`.
- Bounded: at most `max_entries` answers, the oldest dropped first.
- Switch: BLOASIS_ANSWER_CACHE=false turns it off (every call takes the full path);
  BLOASIS_ANSWER_CACHE_ENTRIES bounds it. Metrics: `bloasis_answer_cache_lookups_total{method,
  result}` and `bloasis_answer_cache_hit_ratio{method}`, `bloasis_answer_cache_entries`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

Version = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a cacheable handler returns: `body` may be kept; `tail` is this call's own fields
    (serialised messages concatenate, a later scalar field wins)."""

    body: bytes
    tail: bytes = b""


@dataclass(frozen=True, slots=True)
class Policy:
    version: Callable[[str], Version | None]  # tag -> the current data version (None: don't)
    hit_tail: Callable[[], bytes]  # appended to a cached body
    ttl: float  # seconds; 0: this method is not cached


@dataclass(slots=True)
class _Entry:
    body: bytes
    tag: str
    version: Version
    expires: float


def _same(a: Version, b: Version) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class AnswerCache:
    def __init__(self, *, enabled: bool = True, max_entries: int = 200_000) -> None:
        self.enabled = enabled
        self.max_entries = max_entries
        self._policies: dict[str, Policy] = {}
        self._entries: dict[tuple[str, bytes], _Entry] = {}
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}
        _COLLECTOR.caches.append(self)

    def register(self, method: str, policy: Policy) -> bool:
        """Cache `method` under `policy`; False when the cache or the method's TTL is off."""
        if not self.enabled or policy.ttl <= 0:
            return False
        self._policies[method] = policy
        self.hits.setdefault(method, 0)
        self.misses.setdefault(method, 0)
        return True

    def get(self, method: str, raw: bytes) -> bytes | None:
        entry = self._entries.get((method, raw))
        policy = self._policies[method]
        if entry is not None and time.monotonic() < entry.expires:
            current = policy.version(entry.tag)
            if current is not None and _same(current, entry.version):
                self.hits[method] += 1
                return entry.body + policy.hit_tail()
        self.misses[method] += 1
        return None

    def version(self, method: str, tag: str) -> Version | None:
        return self._policies[method].version(tag)

    def put(self, method: str, raw: bytes, tag: str, version: Version, body: bytes) -> None:
        entries = self._entries
        key = (method, raw)
        if key not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # the oldest (insertion order)
        entries.pop(key, None)  # re-inserted last: a refreshed entry is the newest
        entries[key] = _Entry(body, tag, version, time.monotonic() + self._policies[method].ttl)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._entries.clear()
        if self in _COLLECTOR.caches:
            _COLLECTOR.caches.remove(self)


class _Collector(Collector):
    """Scrape-time figures of every live cache (the hot path only bumps ints)."""

    def __init__(self) -> None:
        self.caches: list[AnswerCache] = []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        lookups = CounterMetricFamily(
            "bloasis_answer_cache_lookups",
            "Answer cache lookups by method and result (hit | miss)",
            labels=["method", "result"],
        )
        ratio = GaugeMetricFamily(
            "bloasis_answer_cache_hit_ratio",
            "Answer cache hits / lookups since start, by method",
            labels=["method"],
        )
        entries = GaugeMetricFamily("bloasis_answer_cache_entries", "Answers cached now")
        hits: dict[str, int] = {}
        misses: dict[str, int] = {}
        size = 0
        for cache in self.caches:
            size += len(cache)
            for m, n in cache.hits.items():
                hits[m] = hits.get(m, 0) + n
            for m, n in cache.misses.items():
                misses[m] = misses.get(m, 0) + n
        for m in sorted(hits):
            total = hits[m] + misses.get(m, 0)
            lookups.add_metric([m, "hit"], hits[m])
            lookups.add_metric([m, "miss"], misses.get(m, 0))
            ratio.add_metric([m], hits[m] / total if total else 0.0)
        entries.add_metric([], size)
        yield lookups
        yield ratio
        yield entries


_COLLECTOR: Final = _Collector()
REGISTRY.register(_COLLECTOR)
