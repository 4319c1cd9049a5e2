"""100,000 users' strategies on a synthetic universe (default 500 symbols x 10 years):
regime, sectors, three profile books, every user's strategy derived, stored (PostgreSQL COPY),
published (outbox events + relay to the broker, Redis keys in one MULTI/EXEC). Prints where
the time goes. Starts its own embedded stack in a temporary directory.

    python -m bench.users_scale [--users 100000] [--symbols 500] [--years 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.common import emit, entry, say


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=10_000)
    args = ap.parse_args()

    from bloasis import stack, strategy_run
    from bloasis.config import load_settings
    from bloasis.pipeline import compute_regime, load_market_data, persist_regime
    from bloasis.publish.relay import relay_pending
    from bloasis.regime.model import resolve_model
    from bloasis.store import runs
    from bloasis.store.db import get_engine, upgrade
    from bloasis.users import random_population, seed_population

    universe = f"synthetic:{args.symbols}:7:{args.years}"
    with tempfile.TemporaryDirectory(prefix="bloasis-bench-") as tmp:
        state = Path(tmp)
        try:
            stack.up(state)
            settings = load_settings(state_dir=state, universe=universe)
            upgrade(settings.require("database_url"))
            engine = get_engine(settings)
            say(f"seeding {args.users} users...")
            t = time.perf_counter()
            seed_population(engine, random_population(args.users, seed=1))
            seed_s = time.perf_counter() - t
            model = resolve_model(settings.model_version, universe, settings.regime_overrides)
            run_id = uuid.uuid4()
            t = {"start": time.perf_counter()}
            md = load_market_data(None, universe)
            as_of = md.last_date
            t["load"] = time.perf_counter()
            with engine.begin() as conn:
                runs.start_run(
                    conn, run_id=run_id, flow="bench", trigger="manual", as_of=as_of,
                    parameters={}, data_source=md.source, data_snapshot_hash=md.snapshot_hash(),
                    code_version="bench", model_version=model.version,
                )  # fmt: skip
            regime = persist_regime(
                engine, compute_regime(md, as_of, trigger="manual", run_id=run_id, model=model)
            ).stored
            t["regime"] = time.perf_counter()
            tier = strategy_run.compute_and_store_tiers(engine, md, regime, run_id=run_id, top_n=15)
            t["tiers"] = time.perf_counter()
            prefs = strategy_run.load_users(engine)
            t["load_users"] = time.perf_counter()
            at = datetime.now(UTC)
            chunks = [
                strategy_run.derive_chunk(
                    tier.books, c, run_id=run_id, model_version=model.version, computed_at=at
                )
                for c in strategy_run.chunks_of(prefs, args.chunk)
            ]
            t["derive"] = time.perf_counter()
            users = strategy_run.store_user_chunks(engine, chunks)
            t["store"] = time.perf_counter()
            status = strategy_run.publish_run(
                engine, settings, model_version=model.version, as_of=as_of,
                with_strategies=True, users=users,
            )  # fmt: skip
            t["redis"] = time.perf_counter()
            stats = asyncio.run(
                relay_pending(
                    engine,
                    settings.require("kafka_bootstrap_servers"),
                    idempotence=False,
                    batch_size=5000,
                )
            )
            t["relay"] = time.perf_counter()
            engine.dispose()
        finally:
            stack.down(state)
    steps = list(t)
    breakdown = {b: round(t[b] - t[a], 3) for a, b in itertools.pairwise(steps)}
    total = t["relay"] - t["start"]
    say(f"{status}; relay {stats.published} events; breakdown {breakdown}")
    emit(
        [
            entry(
                "users_100k_pipeline",
                total,
                "s",
                compared_to="target 60 s",
                target="<= 60 s",
                met=total <= 60,
                users=users.users,
                written=users.written,
                events_published=stats.published,
                universe=universe,
                breakdown_s=breakdown,
                users_timings_s={k: round(v, 3) for k, v in users.timings.items()},
                seed_users_s=round(seed_s, 3),
            )
        ]
    )


if __name__ == "__main__":
    main()
