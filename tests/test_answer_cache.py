"""The answer cache (bloasis.serve.answer_cache) as pure logic: versions compared by identity,
TTLs, the bounds in entries and bytes (a shared body counted once), per-caller access, the off
switch; hypothesis checks the byte accounting against a recount after any sequence of puts."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bloasis.serve.answer_cache import _OVERHEAD, AnswerCache, Policy


class Data:
    """A stand-in for a snapshot: `value` swapped (never mutated) when data changes."""

    def __init__(self) -> None:
        self.value: object = object()


def _cache(**kw: object) -> tuple[AnswerCache, Data, list[str]]:
    data = Data()
    refused: list[str] = []
    cache = AnswerCache(**kw)  # type: ignore[arg-type]
    cache.register(
        "m",
        Policy(
            version=lambda tag: (data.value,),
            hit_tail=lambda: b"|hit",
            ttl=60.0,
            access=lambda tag: tag not in refused,
        ),
    )
    return cache, data, refused


def test_hit_until_the_data_changes() -> None:
    cache, data, _ = _cache()
    assert cache.get("m", b"req") is None
    cache.put("m", b"req", "u1", cache.version("m", "u1") or (), b"body", b"shared:")
    assert cache.get("m", b"req") == b"shared:body|hit"
    data.value = object()  # a new run: every answer is stale at once
    assert cache.get("m", b"req") is None
    assert (cache.hits["m"], cache.misses["m"]) == (1, 2)


def test_equal_but_not_identical_versions_are_a_miss() -> None:
    cache, data, _ = _cache()
    data.value = [1]
    cache.put("m", b"r", "u", cache.version("m", "u") or (), b"b")
    data.value = [1]  # equal content, another object: another snapshot value
    assert cache.get("m", b"r") is None


def test_ttl_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    cache, _, _ = _cache()
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache.put("m", b"r", "u", cache.version("m", "u") or (), b"b")
    now[0] += 59.9
    assert cache.get("m", b"r") == b"b|hit"
    now[0] += 0.2
    assert cache.get("m", b"r") is None


def test_a_caller_refused_the_tag_gets_a_miss() -> None:
    cache, _, refused = _cache()
    cache.put("m", b"r", "bob", cache.version("m", "bob") or (), b"b")
    refused.append("bob")
    assert cache.get("m", b"r") is None  # the full path then refuses it, with its status
    refused.clear()
    assert cache.get("m", b"r") == b"b|hit"


def test_off_switch_and_zero_ttl_register_nothing() -> None:
    off = AnswerCache(enabled=False)
    policy = Policy(version=lambda tag: (), hit_tail=lambda: b"", ttl=60.0)
    assert off.register("m", policy) is False
    on = AnswerCache()
    assert on.register("m", Policy(version=lambda tag: (), hit_tail=lambda: b"", ttl=0)) is False


def test_bounded_by_entries_oldest_first() -> None:
    cache, _, _ = _cache(max_entries=2)
    for i in range(3):
        cache.put("m", f"r{i}".encode(), "u", cache.version("m", "u") or (), b"b")
    assert len(cache) == 2
    assert cache.get("m", b"r0") is None and cache.get("m", b"r2") == b"b|hit"


def test_a_shared_body_is_counted_once() -> None:
    shared = b"x" * 10_000
    cache, _, _ = _cache()
    for i in range(100):
        cache.put("m", f"r{i}".encode(), f"u{i}", cache.version("m", f"u{i}") or (), b"id", shared)
    per_entry = len(b"r00") + len(b"id") + len("u00") + _OVERHEAD
    assert cache.bytes <= len(shared) + 100 * per_entry
    assert cache.get("m", b"r42") == shared + b"id|hit"


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 3), st.integers(0, 3000)), max_size=120
    ),
    budget=st.integers(2_000, 40_000),
)
def test_byte_accounting_matches_a_recount(ops: list[tuple[int, int, int]], budget: int) -> None:
    """Whatever the puts (replacements, evictions, shared bodies), `bytes` equals a recount of
    what is held and stays within the budget."""
    cache, _, _ = _cache(max_entries=20, max_bytes=budget)
    bodies = [b"", b"s" * 500, b"t" * 5_000, b"u" * 50]
    for req, shared_i, n in ops:
        tag = f"u{req}"
        cache.put("m", f"r{req}".encode(), tag, cache.version("m", tag) or (), b"b" * n,
                  bodies[shared_i])  # fmt: skip
        held = cache._entries
        distinct = {id(e.shared): len(e.shared) for e in held.values() if e.shared}
        recount = sum(len(k[1]) + len(e.body) + len(e.tag) + _OVERHEAD for k, e in held.items())
        assert cache.bytes == recount + sum(distinct.values())
        assert cache.bytes <= budget and len(held) <= 20


def test_long_bodies_are_kept_compressed_and_served_whole() -> None:
    cache, _, _ = _cache()
    body = b"".join(f"pick {i} momentum leaders rationale; ".encode() for i in range(400))
    cache.put("m", b"r", "u", cache.version("m", "u") or (), body)
    held = cache._entries[("m", b"r")]
    assert held.packed and len(held.body) < len(body) / 3
    assert cache.bytes < len(body) / 3 + _OVERHEAD + 10
    assert cache.get("m", b"r") == body + b"|hit"
    # Incompressible bytes are kept as they are.
    rnd = random.Random(7)
    noise = bytes(rnd.getrandbits(8) for _ in range(4096))
    cache.put("m", b"n", "u", cache.version("m", "u") or (), noise)
    assert not cache._entries[("m", b"n")].packed and cache.get("m", b"n") == noise + b"|hit"


def test_a_hot_packed_answer_is_inflated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hot key's compressed answer is kept inflated (decompressing ~8 KB on every call cost a
    fifth of the hot-key throughput); a replaced entry is inflated again."""
    import zlib

    from bloasis.serve import answer_cache

    calls = []
    real = zlib.decompress
    monkeypatch.setattr(answer_cache.zlib, "decompress", lambda b: calls.append(1) or real(b))
    cache, _, _ = _cache()
    body = b"rationale momentum leaders " * 300
    cache.put("m", b"r", "u", cache.version("m", "u") or (), body)
    for _ in range(5):
        assert cache.get("m", b"r") == body + b"|hit"
    assert len(calls) == 1
    cache.put("m", b"r", "u", cache.version("m", "u") or (), body + b"!")
    assert cache.get("m", b"r") == body + b"!|hit" and len(calls) == 2


def test_forgetting_user_generations_never_revives_an_old_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-user write generations are bounded; emptying them used to put a changed user
    back at generation 0, the version of answers cached before the change."""
    from types import SimpleNamespace

    from bloasis.serve import reads
    from bloasis.serve.snapshot import Snapshot

    monkeypatch.setattr(reads, "USER_GENERATIONS", 2)
    strategies: Snapshot[object] = Snapshot("strategies")
    strategies.set({"moderate": object()})
    r = reads.StrategyReads(
        "regime-v2-t", None, strategies, Snapshot("regimes"),  # type: ignore[arg-type]
        Snapshot("users version"), SimpleNamespace(notifications=0),  # type: ignore[arg-type]
    )  # fmt: skip
    cached = r.user_version("alice")  # an answer read before alice changes anything
    assert cached is not None
    r.user_changed("bob")
    r.user_changed("carol")
    r.user_changed("alice")  # the table is full: emptied here
    now = r.user_version("alice")
    assert now is not None and not all(a is b for a, b in zip(cached, now, strict=True))
