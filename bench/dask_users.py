"""The users' derivation on a real Dask cluster, 1 worker against 2 (issue 16, part): a
`dask scheduler` and its `dask worker` processes started separately (`bloasis.dask_cluster`),
the three profile books scattered once, one task per chunk of 10,000 users
(`strategy_run.derive_chunk`, as the daily flow's tasks run it), and the peak RSS of every
process (scheduler, each worker, this driver) sampled while it runs.

Derivation only: storing, caching and publishing a million users (the rest of `users_1m`) are
not in this figure.

    python -m bench users_derive_dask
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psutil

from bench.common import PeakRss, entry, say, size_main

SIZES: Final = {"full": 1_000_000, "quick": 100_000, "tiny": 5_000}
CHUNK: Final = 10_000


def _books() -> tuple[dict[str, Any], str]:
    from bloasis.marketdata.sources import EmbeddedSource
    from bloasis.pipeline import compute_regime
    from bloasis.regime.model import resolve_model
    from bloasis.strategy.session import decide_session

    md = EmbeddedSource().load()
    model = resolve_model("regime-v2")
    regime = compute_regime(md, md.last_date, trigger="manual", run_id=uuid.uuid4(), model=model)
    return decide_session(md, regime, top_n=15).books, model.version


def _one(workers: int, books: dict[str, Any], mv: str, chunks: list[Any]) -> dict[str, Any]:
    from distributed import Client

    from bloasis import dask_cluster, strategy_run

    with tempfile.TemporaryDirectory(prefix="bloasis-dask-bench-") as tmp:
        address, records = dask_cluster.start(Path(tmp), workers)
        try:
            pids = {name: int(rec["pid"]) for name, rec in records.items()} | {
                "driver": psutil.Process().pid
            }
            alone = {"driver"}  # the cluster is its children
            with Client(address, timeout=60) as client, PeakRss(pids, alone=alone) as rss:
                shared = client.scatter(books, broadcast=True)
                at = datetime.now(UTC)
                run_id = uuid.uuid4()
                t = time.perf_counter()
                futures = [
                    client.submit(strategy_run.derive_chunk, shared, c, run_id=run_id,
                                  model_version=mv, computed_at=at, pure=False)
                    for c in chunks
                ]  # fmt: skip
                # Only the counts come back: a million strategies stay on the workers.
                counts = client.gather(
                    [client.submit(lambda u: len(u.records), f, pure=False) for f in futures]
                )
                seconds = time.perf_counter() - t
                per_worker: dict[str, int] = {}
                for holders in client.who_has(futures).values():
                    for w in holders[:1]:
                        per_worker[str(w)] = per_worker.get(str(w), 0) + 1
                del futures
            return {
                "seconds": seconds,
                "users": int(sum(counts)),
                "chunks_per_worker": per_worker,
                "peak_rss_mb": {k: round(v, 1) for k, v in rss.peak.items()},
            }
        finally:
            dask_cluster.stop(records)


def run(size: str = "full") -> list[dict[str, Any]]:
    from bloasis.store.strategies import StoredPreferences
    from bloasis.users import random_population

    n = SIZES[size]
    books, mv = _books()
    now = datetime.now(UTC)
    say(f"users_derive_dask: {n} users in chunks of {CHUNK}")
    prefs = [StoredPreferences(p, 1, now) for p in random_population(n, seed=1)]
    chunks = [prefs[i : i + CHUNK] for i in range(0, len(prefs), CHUNK)]
    runs = {}
    for workers in (1, 2):
        say(f"... on a cluster of {workers} worker(s)")
        runs[workers] = _one(workers, books, mv, chunks)
        say(f"    {runs[workers]['seconds']:.1f}s, {runs[workers]['peak_rss_mb']}")
    one, two = runs[1], runs[2]
    assert one["users"] == two["users"] == n
    return [
        entry(
            "users_derive_dask",
            two["seconds"],
            "s",
            compared_to="the same chunks on a cluster of 1 worker",
            baseline_value=one["seconds"],
            target="reported: 2 workers vs 1, peak RSS of every process <= 2 GB",
            met=max(max(r["peak_rss_mb"].values()) for r in runs.values()) <= 2048,
            users=n,
            chunk=CHUNK,
            users_per_s_2_workers=round(n / two["seconds"]),
            users_per_s_1_worker=round(n / one["seconds"]),
            runs={str(k): v for k, v in runs.items()},
            scope="derivation only (not stored, cached or published)",
        )
    ]


if __name__ == "__main__":
    size_main(__doc__, SIZES, run)
