"""`bench.grpc_users` runs end to end on its tiny size (500 users, its own private embedded stack)
and prints the bench shape with its equal-work checks holding; its request streams are what they
say. No timing is asserted here: the figures are `make bench`'s job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import grpc_users

SHAPE = {"name", "value", "unit", "compared_to", "baseline_value", "ratio", "target", "met"}


def test_request_streams_are_uniform_zipf_and_hot(tmp_path: Path) -> None:
    n = 1000
    choices = grpc_users.user_choices(n, 20_000)
    assert sorted(choices["warm"]) == list(range(n))  # every user once
    uniform, zipf = (grpc_users._sequence_facts(choices[d]) for d in ("uniform", "zipf"))
    assert uniform["distinct_users"] > 0.99 * n and uniform["top_user_share"] < 0.01
    assert zipf["top_user_share"] > 0.1 and zipf["distinct_users"] < uniform["distinct_users"]
    assert grpc_users._sequence_facts(choices["hot"])["distinct_users"] == 1
    # The hot user is Zipf's rank 1; the same seed gives the same streams.
    assert choices["hot"][0] == np.bincount(choices["zipf"]).argmax()
    assert (grpc_users.user_choices(n, 20_000)["zipf"] == choices["zipf"]).all()
    # Both request messages carry the user id in field 1; frames read back as written.
    from bloasis.pb.v1 import strategy_pb2 as st1
    from bloasis.pb.v2 import strategy_pb2 as st2

    v2, v1 = grpc_users.encode_request("v2", "bu042"), grpc_users.encode_request("v1", "bu042")
    assert st2.GetStrategyRequest.FromString(v2).user_id == "bu042"
    assert st1.StrategyRequest.FromString(v1).user_id == "bu042"
    assert v1 == b"\x0a\x05bu042"
    grpc_users.write_frames(tmp_path / "f", [v2, v1, b""])
    assert grpc_users.read_frames(tmp_path / "f") == [v2, v1, b""]


def test_grpc_users_tiny_compares_equal_answers_over_many_users() -> None:
    entries = grpc_users.run("tiny")
    size = grpc_users.SIZES["tiny"]
    assert [e["name"] for e in entries] == [
        f"{prefix}_{dist}"
        for prefix in ("grpc_users", "grpc_users_v1")
        for dist in grpc_users.DISTRIBUTIONS
    ]
    for e in entries:
        assert e.keys() >= SHAPE, e
        assert e["value"] > 0 and e["baseline_value"] > 0 and e["unit"] == "calls/s"
        assert isinstance(e["met"], bool) and e["target"]
        assert set(e["targets"].values()) <= {True, False} and len(e["targets"]) == 3
        assert e["responses_equal"] is True
        assert e["seeding"]["users_in_redis"] == size.users
        assert all(w == {"calls": size.users, "seconds": w["seconds"], "errors": 0}
                   for w in e["warmup_calls"].values())  # fmt: skip
        servers = e["servers"]
        assert set(servers) == set(grpc_users.SERVERS)
        for figures in servers.values():
            assert figures["errors"] == 0 and figures["calls_per_s"] > 0
            assert 0 < figures["p50_ms"] <= figures["p99_ms"]
            assert 0 < figures["rss_mb"] <= figures["peak_rss_mb"]
        # The product's answer cache answered the measured calls; the cache-aside server's is
        # off (it counts no lookups); the floor has no /metrics.
        assert servers["product"]["answer_cache_lookups"] >= size.calls * size.rounds
        assert 0 <= servers["product"]["hit_ratio"] <= 1
        assert servers["cache_aside"]["answer_cache_lookups"] == 0
        assert servers["floor"]["answer_cache_lookups"] is None
        # The floor returns a real answer: the size of what the product returns.
        product_bytes = servers["product"]["mean_response_bytes"]
        assert abs(e["floor_response_bytes"] - product_bytes) < 0.5 * product_bytes
        json.dumps(e)
    hot = [e for e in entries if e["distribution"] == "hot"]
    assert all(e["sequence"]["distinct_users"] == 1 for e in hot)
