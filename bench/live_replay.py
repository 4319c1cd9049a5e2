"""End to end in `make up LIVE=replay`: from a session's data appearing at the (local) provider
to its regime served over gRPC.

Starts the whole local deployment in a temporary state dir on free ports (`bloasis up --live
replay`: embedded stack, Prefect server, deployments, a process worker, gRPC, the local
provider publishing one session every `--every` seconds), then for `--sessions` sessions reads
the provider's clock file (when it published each session) and polls `GetCurrentRegime` every
0.2 s (when a regime at least that new was first served). Stops everything it started
(`bloasis down`) and prints the bench JSON.

    python -m bench.live_replay [--sessions 12] [--every 15] [--start 2022-11-01]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

from bench.common import emit, entry, say

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 30.0


def _env(state: Path) -> dict[str, str]:
    from bloasis import stack

    taken: set[int] = set()

    def port() -> int:
        p = stack._pick_port(taken)
        taken.add(p)
        return p

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOASIS_", "PREFECT_"))}
    return env | {
        "BLOASIS_STATE_DIR": str(state),
        "BLOASIS_PREFECT_PORT": str(port()),
        "BLOASIS_GRPC_ADDRESS": f"127.0.0.1:{port()}",
        "BLOASIS_METRICS_PORT": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def run(sessions: int = 12, every: int = 15, start: date = date(2022, 11, 1)) -> dict[str, Any]:
    from bloasis.clock import read_clock_file
    from bloasis.serve import client

    bloasis = str(Path(sys.executable).with_name("bloasis"))
    with tempfile.TemporaryDirectory(prefix="bloasis-live-e2e-") as tmp:
        state = Path(tmp) / "state"
        env = _env(state)
        address = env["BLOASIS_GRPC_ADDRESS"]
        t0 = time.perf_counter()
        say(f"bloasis up --live replay --replay {start}: ... (state {state})")
        up = subprocess.run(
            [bloasis, "up", "--live", "replay", "--replay", start.isoformat(),
             "--replay-every", str(every)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        try:
            if up.returncode != 0:
                raise RuntimeError(f"bloasis up failed:\n{up.stdout[-2000:]}{up.stderr[-2000:]}")
            up_s = time.perf_counter() - t0
            say(f"up in {up_s:.1f}s; watching {sessions} sessions")
            clock = state / "provider-clock.json"
            published: dict[date, datetime] = {}
            served: dict[date, datetime] = {}
            deadline = time.monotonic() + every * (sessions + 4) + 120
            first: date | None = None
            while time.monotonic() < deadline:
                d, at = read_clock_file(clock)
                if first is None:
                    first = d  # published before we looked: not measured
                elif d not in published and d > first:
                    published[d] = at
                try:
                    got = client.get_regime(address, timeout=2)
                    cur = date.fromisoformat(str(got["as_of"]))
                except Exception:
                    cur = None
                now = datetime.now().astimezone()
                if cur is not None:
                    for p in published:
                        if p <= cur and p not in served:
                            served[p] = now
                            say(f"  {p}: served {(now - published[p]).total_seconds():.1f}s"
                                " after it was published")  # fmt: skip
                if len(served) >= sessions:
                    break
                time.sleep(0.2)
            latencies = {
                d.isoformat(): round((served[d] - published[d]).total_seconds(), 2)
                for d in sorted(served)
            }
            # Not served within the target: a session published moments ago is still on its way.
            end = datetime.now().astimezone()
            missing = [
                d.isoformat()
                for d in sorted(published)
                if d not in served and (end - published[d]).total_seconds() > TARGET_S
            ]
            # What an operator sees at that moment: `bloasis status` and `bloasis data status`.
            shown = {}
            for what in (["status", "--json"], ["data", "status", "--json"]):
                got = subprocess.run([bloasis, *what], env=env, cwd=ROOT, capture_output=True,
                                     text=True, timeout=120, check=False)  # fmt: skip
                shown[what[0] if len(what) == 2 else "data"] = (
                    json.loads(got.stdout) if got.returncode == 0 else {"error": got.stderr}
                )
            freshness = shown["status"].get("store", {}).get("freshness", {})
            sources = {r["key"]: r["source"] for r in shown["data"].get("series", [])}
        finally:
            down = subprocess.run([bloasis, "down"], env=env, cwd=ROOT, capture_output=True,
                                  text=True, timeout=180, check=False)  # fmt: skip
            say(down.stdout.strip())
    values = list(latencies.values())
    p50 = statistics.median(values) if values else float("nan")
    worst = max(values) if values else float("nan")
    return entry(
        "live_replay_e2e",
        worst,
        "s",
        compared_to="target 30 s (worst session)",
        target="<= 30 s from a session's publication to its regime served over gRPC",
        met=bool(values) and worst <= TARGET_S and not missing,
        sessions=len(values),
        every_s=every,
        p50_s=round(p50, 2),
        max_s=round(worst, 2),
        latencies_s=latencies,
        not_served=missing,
        up_s=round(up_s, 1),
        status_freshness=freshness,
        data_status_sources=sources,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--every", type=int, default=15)
    ap.add_argument("--start", type=date.fromisoformat, default=date(2022, 11, 1))
    args = ap.parse_args()
    emit([run(args.sessions, args.every, args.start)])


if __name__ == "__main__":
    main()
