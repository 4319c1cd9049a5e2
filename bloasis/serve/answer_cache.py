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
- Bounded: at most `max_entries` answers and `max_bytes` of answer bytes (the server's memory
  is the bound that matters: a user's strategy answer is ~8-11 KB), the oldest dropped first.
- Per-user answers are only handed to a caller allowed that user (`Policy.access`, the same
  check the full path makes), so a hit never bypasses per-principal access.
- Switch: BLOASIS_ANSWER_CACHE=false turns it off (every call takes the full path);
  BLOASIS_ANSWER_CACHE_ENTRIES and BLOASIS_ANSWER_CACHE_MB bound it.
- Metrics: `bloasis_answer_cache_lookups_total{method,result}`,
  `bloasis_answer_cache_hit_ratio{method}`, `bloasis_answer_cache_entries`,
  `bloasis_answer_cache_bytes`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

Version = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a cacheable handler returns: `shared + body` may be kept; `tail` is this call's
    own fields (serialised messages concatenate: a later scalar field wins, nested messages
    merge). `shared` is a body many answers have in common (many users with the same
    strategy): the cache keeps one copy of it, however many answers use it."""

    body: bytes
    tail: bytes = b""
    shared: bytes = b""


@dataclass(frozen=True, slots=True)
class Policy:
    version: Callable[[str], Version | None]  # tag -> the current data version (None: don't)
    hit_tail: Callable[[], bytes]  # appended to a cached body
    ttl: float  # seconds; 0: this method is not cached
    access: Callable[[str], bool] | None = None  # tag -> whether the caller may see it


@dataclass(slots=True)
class _Entry:
    shared: bytes
    body: bytes  # zlib-compressed when `packed`
    tag: str
    version: Version
    expires: float
    packed: bool = False


# Bodies at least this long are kept compressed (zlib level 1): a user's strategy answer
# (~8 KB of protobuf with repeated names and rationales) shrinks severalfold, so 100,000 users'
# answers fit the byte budget, for a decompression of tens of microseconds per hit.
COMPRESS_MIN: Final = 1024
HOT_ENTRIES: Final = 1024


def _size(key: tuple[str, bytes], entry: _Entry) -> int:
    # The bytes held, plus a fixed estimate of the entry's objects (dict slot, tuple, entry).
    return len(key[1]) + len(entry.body) + len(entry.tag) + _OVERHEAD


_OVERHEAD: Final = 400


def _same(a: Version, b: Version) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class AnswerCache:
    def __init__(
        self, *, enabled: bool = True, max_entries: int = 200_000, max_bytes: int = 512 << 20
    ) -> None:
        self.enabled = enabled
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._policies: dict[str, Policy] = {}
        self._entries: dict[tuple[str, bytes], _Entry] = {}
        # Packed entries recently hit, decompressed (bounded: HOT_ENTRIES).
        self._hot: dict[tuple[str, bytes], tuple[_Entry, bytes]] = {}
        # Shared bodies in use: id -> [the bytes, entries using them] (counted once in `bytes`).
        self._shared: dict[int, list[Any]] = {}
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
        """The cached answer, or None (a miss; also when the caller may not see this tag's
        answer: the full path then refuses it with its status)."""
        key = (method, raw)
        entry = self._entries.get(key)
        policy = self._policies[method]
        if entry is not None and time.monotonic() < entry.expires:
            current = policy.version(entry.tag)
            if current is not None and _same(current, entry.version):
                if policy.access is not None and not policy.access(entry.tag):
                    return None
                self.hits[method] += 1
                body = self._unpacked(key, entry) if entry.packed else entry.body
                return entry.shared + body + policy.hit_tail()
        self.misses[method] += 1
        return None

    def _unpacked(self, key: tuple[str, bytes], entry: _Entry) -> bytes:
        """A packed entry's body. The last HOT_ENTRIES ones hit are kept decompressed:
        inflating ~8 KB on every call of a hot key cost a fifth of its throughput (measured:
        grpc_strategy_vs_floor 0.96 -> 0.77)."""
        hot = self._hot.get(key)
        if hot is not None and hot[0] is entry:
            return hot[1]
        body = zlib.decompress(entry.body)
        if len(self._hot) >= HOT_ENTRIES:
            del self._hot[next(iter(self._hot))]
        self._hot[key] = (entry, body)
        return body

    def version(self, method: str, tag: str) -> Version | None:
        return self._policies[method].version(tag)

    def put(
        self, method: str, raw: bytes, tag: str, version: Version, body: bytes, shared: bytes = b""
    ) -> None:
        entries = self._entries
        key = (method, raw)
        old = entries.pop(key, None)  # re-inserted last: a refreshed entry is the newest
        if old is not None:
            self._drop(key, old)
        packed = False
        if len(body) >= COMPRESS_MIN:
            small = zlib.compress(body, 1)
            if len(small) < len(body) * 0.9:
                body, packed = small, True
        expires = time.monotonic() + self._policies[method].ttl
        entry = _Entry(shared, body, tag, version, expires, packed)

        def cost() -> int:  # a shared body costs nothing more while another entry holds it
            held = bool(shared) and id(shared) in self._shared
            return _size(key, entry) + (len(shared) if not held else 0)

        if _size(key, entry) + len(shared) > self.max_bytes:
            return
        while entries and (
            len(entries) >= self.max_entries or self.bytes + cost() > self.max_bytes
        ):
            oldest = next(iter(entries))  # insertion order
            self._drop(oldest, entries.pop(oldest))
        entries[key] = entry
        self.bytes += _size(key, entry)
        if shared:
            held = self._shared.get(id(shared))
            if held is None:
                self._shared[id(shared)] = [shared, 1]
                self.bytes += len(shared)
            else:
                held[1] += 1

    def _drop(self, key: tuple[str, bytes], entry: _Entry) -> None:
        self.bytes -= _size(key, entry)
        if entry.shared:
            held = self._shared[id(entry.shared)]
            held[1] -= 1
            if not held[1]:
                del self._shared[id(entry.shared)]
                self.bytes -= len(entry.shared)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._entries.clear()
        self._shared.clear()
        self._hot.clear()
        self.bytes = 0
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
        held = GaugeMetricFamily(
            "bloasis_answer_cache_bytes", "Bytes the cached answers hold (estimate)"
        )
        hits: dict[str, int] = {}
        misses: dict[str, int] = {}
        size = 0
        nbytes = 0
        for cache in self.caches:
            size += len(cache)
            nbytes += cache.bytes
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
        held.add_metric([], nbytes)
        yield lookups
        yield ratio
        yield entries
        yield held


_COLLECTOR: Final = _Collector()
REGISTRY.register(_COLLECTOR)
