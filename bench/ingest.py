"""ingest_daily_500 and ingest_catchup_20: live market data from the local provider (the real
FRED and Yahoo adapters over HTTP on loopback) into the PostgreSQL point-in-time store, and a
catch-up of missed sessions computed and published one by one.

Setup (not timed): a private embedded stack; a synthetic universe (full: 500 symbols x 3 years,
OHLCV, `SyntheticSource`) as the live universe (`file:` CSV); the store holds its history up to
24 sessions before its end (a vintage); the daily pipeline has run for that session.

- `ingest_catchup_20`: the provider publishes the next 20 sessions at once (the system was down
  for four weeks); timed: `run_ingest` (all 20 sessions of the index, every symbol and the
  market series) and then `run_daily`, which computes and publishes each missed session in
  order (its own stored run, events, Redis switch) and the newest one. Target 60 s.
- `ingest_daily_500`: then, three times, one more session published and ingested (the daily
  case: a lookback window per symbol, one new bar each); median of the three. Target 5 s.

The provider is not rate-limited, so the clients' politeness delays are set out of the way
(BLOASIS_*_REQUESTS_PER_SECOND=1000): what is timed is this system, not the pacing the real
services ask for (Yahoo at the default 5 requests/s alone would take 100 s for 500 symbols).

    python -m bench.ingest [--size tiny|quick|full]
"""

from __future__ import annotations

import asyncio
import csv
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.common import bench_stack, entry, say, size_main

if TYPE_CHECKING:
    from bloasis.config import Settings

SEED: Final = 11
# size -> (symbols, years, missed sessions, daily rounds)
SIZES: Final = {"tiny": (50, 2, 3, 1), "quick": (200, 3, 10, 2), "full": (500, 3, 20, 3)}


def _universe_file(md: Any, path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["symbol", "name", "sector", "yahoo"])
        for sym in md.symbols:
            w.writerow([sym, f"synthetic {sym}", md.sectors[sym], sym])
    return path


def run(size: str = "full", settings: Settings | None = None) -> list[dict[str, Any]]:
    from pydantic import SecretStr

    from bench.pit_read import load_store
    from bloasis import calendar
    from bloasis.app.daily import DailyRequest, run_daily
    from bloasis.app.ingest import run_ingest
    from bloasis.marketdata import SyntheticSource
    from bloasis.marketdata.providers.local import LocalProvider
    from bloasis.store.db import engine_for

    n_symbols, years, missed, rounds = SIZES[size]
    say(f"ingest: generating {n_symbols} symbols x {years} years...")
    md = SyntheticSource(n_symbols, years, SEED).load()
    sessions = [ts.date() for ts in md.index]
    seeded = sessions[-(missed + rounds + 1)]
    with tempfile.TemporaryDirectory(prefix="bloasis-ingest-") as tmp, bench_stack(settings) as s:
        engine = engine_for(s.require("database_url"))
        say(f"store: synthetic history through {seeded} (vintage)...")
        load_store(engine, md.as_of(seeded), calendar.knowledge_cutoff(seeded) + timedelta(days=3))
        with LocalProvider(md, published_through=seeded, api_key="bench-key") as provider:
            live = s.model_copy(
                update={
                    "universe": "live",
                    "live_universe": f"file:{_universe_file(md, Path(tmp) / 'u.csv')}",
                    "fred_url": provider.base_url,
                    "yahoo_url": provider.base_url,
                    "fred_api_key": SecretStr("bench-key"),
                    "fred_requests_per_second": 1000.0,
                    "yahoo_requests_per_second": 1000.0,
                    "model_version": "regime-v2-bench-ingest",
                }
            )

            def daily() -> dict[str, Any]:
                req = DailyRequest(trigger="baseline", relay=True)
                return asyncio.run(run_daily(req, run_id=uuid.uuid4(), settings=live))

            say(f"pipeline for {seeded} (not timed)...")
            first = daily()
            assert first["as_of"] == seeded.isoformat(), first["as_of"]

            target = sessions[-(rounds + 1)]
            provider.publish_through(target)
            say(f"catch-up: {missed} sessions {sessions[-(missed + rounds)]}..{target}...")
            t0 = time.perf_counter()
            got = run_ingest(live, now=calendar.session_close(target) + timedelta(hours=1))
            ingest_s = time.perf_counter() - t0
            summary = daily()
            catchup_s = time.perf_counter() - t0
            computed = [*summary.get("caught_up", []), summary["as_of"]]
            assert len(got.new_sessions) == missed and len(computed) == missed, computed
            say(f"  {catchup_s:.1f}s (ingest {ingest_s:.1f}s, {missed} runs)")

            times, outs = [], []
            for _ in range(rounds):
                d = provider.publish_next()
                t = time.perf_counter()
                outs.append(run_ingest(live, now=calendar.session_close(d) + timedelta(hours=1)))
                times.append(time.perf_counter() - t)
                assert outs[-1].new_sessions == [d], outs[-1].new_sessions
                say(f"  daily ingest of {d}: {times[-1]:.2f}s {outs[-1].timings}")
            requests = len([r for r in provider.requests if r.path != "/control/status"])
    daily_s = statistics.median(times)
    last = outs[-1]
    return [
        entry(
            "ingest_daily_500",
            daily_s,
            "s",
            compared_to="target 5 s",
            target="<= 5 s: one new session, every symbol and the market series",
            met=daily_s <= 5,
            size=size,
            symbols=n_symbols,
            rounds=times,
            requests=sum(last.fetched.values()),
            bars=last.bars,
            series=last.series,
            steps_s=last.timings,
            note="provider pacing off (local provider); see the module docstring",
        ),
        entry(
            "ingest_catchup_20",
            catchup_s,
            "s",
            compared_to="target 60 s",
            target=f"<= 60 s: {missed} missed sessions ingested, each computed and published",
            met=catchup_s <= 60,
            size=size,
            symbols=n_symbols,
            sessions=missed,
            ingest_s=round(ingest_s, 2),
            pipeline_s=round(catchup_s - ingest_s, 2),
            per_session_s=round((catchup_s - ingest_s) / missed, 2),
            requests_total=requests,
        ),
    ]


if __name__ == "__main__":
    size_main(__doc__, SIZES, run)
