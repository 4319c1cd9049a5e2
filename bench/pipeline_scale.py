"""Targets 1-3 of issue 7: the whole pipeline on a synthetic universe (full: 5,000 symbols x 10
years) inside the `daily-pipeline` flow against an already-running Prefect server, the same tasks
called as plain functions, peak RSS, the market-data load from the bars store, and the strategy
tier's numbers against a per-symbol pandas + TA-Lib reference (`bench/per_symbol_reference.py`).

Entries: `pipeline_5000x10y`, `pipeline_vs_per_symbol`, `data_load`, `prefect_overhead`,
`pipeline_peak_rss`. Setup: the universe is generated, written as a bars store (`parquet:DIR`,
what `bloasis data import` writes), a private embedded stack is started in a temporary state
dir (PostgreSQL, Redis, the Kafka broker), a few demo users are seeded, and a Prefect server is
started (`prefect server start`, its own PREFECT_HOME, stopped by PID at the end). The runs happen
in one child process (its ru_maxrss is the peak RSS): a warm-up flow and plain run on a tiny
universe (imports, connections), then flow and plain runs alternately, each on emptied result
tables, so every run does the whole work (nothing is "already stored").

    python -m bench.pipeline_scale [--size tiny|quick|full]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import bench_stack, child_env, emit, entry, say, timed
from bloasis import stack

if TYPE_CHECKING:
    from bloasis.config import Settings
    from bloasis.marketdata import MarketData

ROOT = Path(__file__).resolve().parent.parent
SEED = 7
WARM_UP_UNIVERSE = "synthetic:60:1:2"


@dataclass(frozen=True)
class Size:
    symbols: int
    years: int
    runs: int  # flow runs and plain runs each (medians)
    reference_sample: int | None  # symbols timed in the per-symbol reference (None: all)
    compare_symbols: int  # symbols loaded through PostgreSQL COPY and CSV (rows/s compared)
    load_repeat: int


SIZES: dict[str, Size] = {
    "tiny": Size(50, 2, 1, None, 50, 1),
    "quick": Size(1000, 10, 1, 250, 100, 1),
    "full": Size(5000, 10, 5, 1000, 500, 3),
}


# --- Prefect server ------------------------------------------------------------------------------
def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def prefect_server(
    api_url: str | None = None,
) -> Iterator[tuple[dict[str, str], Callable[[], None]]]:
    """(env for clients, wait until healthy) of a Prefect server: `api_url` when given (e.g. the
    tests' harness), else one started here in a temporary PREFECT_HOME (SQLite), stopped by its
    process group id on exit. Started on entry; `wait()` blocks until /api/health answers, so
    the caller can work while it boots."""
    base = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if api_url:
        yield base | {"PREFECT_API_URL": api_url}, lambda: None
        return
    with tempfile.TemporaryDirectory(prefix="bloasis-bench-prefect-") as home:
        port = stack._pick_port(set())
        url = f"http://127.0.0.1:{port}/api"
        env = base | {"PREFECT_HOME": home, "PREFECT_API_URL": url}
        log = open(Path(home) / "server.log", "wb")  # noqa: SIM115 (closed below)
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port), "--no-ui"],
            env=os.environ | env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

        def wait() -> None:
            while not _healthy(url):
                if proc.poll() is not None:
                    log.flush()
                    tail = (Path(home) / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"prefect server exited ({proc.returncode}): {tail}")
                if time.perf_counter() - started > 180:
                    raise RuntimeError("prefect server not healthy 180 s after its start")
                time.sleep(0.25)
            say(f"prefect server {url} healthy {time.perf_counter() - started:.1f}s after start")

        try:
            yield env, wait
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the group started above, by its id
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


# --- the child process: flow and plain runs --------------------------------------------------
def _truncate_results(engine: Any) -> None:
    """Empty every table but the users' preferences, so the next run does the whole work."""
    from sqlalchemy import text

    from bloasis.store.models import Base

    tables = ", ".join(t for t in Base.metadata.tables if t != "user_preferences")
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))


def plain_pipeline(universe: str) -> dict[str, float]:
    """The daily run for the latest session (trigger manual, strategies, relay) through the same
    service the flow calls (`bloasis.app.daily.run_daily`), with the plain steps: no flow or
    task runs, no artifacts. Returns the step timings."""
    from bloasis.app.daily import DailyRequest, run_daily

    req = DailyRequest(trigger="manual", universe=universe)
    summary = asyncio.run(run_daily(req, run_id=uuid.uuid4()))
    return _run_timings(summary["run_id"])


def _run_timings(run_id: str) -> dict[str, float]:
    """The step timings a run recorded in its `pipeline_runs` row."""
    from sqlalchemy import text

    from bloasis.config import load_settings
    from bloasis.store.db import get_engine

    with get_engine(load_settings()).connect() as conn:
        got = conn.execute(
            text("SELECT timings FROM pipeline_runs WHERE id = :r"), {"r": run_id}
        ).scalar_one_or_none()
    return {k: round(float(v), 3) for k, v in (got or {}).items()}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork + exec, so a child of a big bench process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


SETTLE_CPU_PERCENT = 20.0  # machine-wide, over SETTLE_WINDOW_S
SETTLE_WINDOW_S = 0.3
SETTLE_MAX_S = 20.0


def settle() -> float:
    """Wait until the machine is quiet (seconds waited). After a flow run the Prefect server
    goes on digesting its events for a second or two, on the same 2 cores; a daily run starts
    on an idle server, so every measured run (flow and plain alike) starts on a quiet machine."""
    import gc

    import psutil

    t = time.perf_counter()
    gc.collect()  # the previous run's garbage (a worker runs each flow run in a new process)
    while time.perf_counter() - t < SETTLE_MAX_S:
        if psutil.cpu_percent(interval=SETTLE_WINDOW_S) < SETTLE_CPU_PERCENT:
            break
    return time.perf_counter() - t


def worker(universe: str, runs: int, load_repeat: int) -> dict[str, Any]:
    """In the child: time the store read, warm up, measure an empty flow run (Prefect's fixed
    cost per run), then `runs` flow runs and `runs` plain runs, alternately."""
    from prefect import flow

    from bloasis.config import load_settings
    from bloasis.marketdata import validate
    from bloasis.marketdata.parquet import ParquetSource
    from bloasis.store.db import get_engine
    from flows.pipeline import daily_pipeline

    engine = get_engine(load_settings())
    rss_imports = peak_rss_mb()
    store = ParquetSource(universe.removeprefix("parquet:"))
    validate(store.read())  # warm: the exchange calendar is built once per process
    reads, checks = [], []
    for _ in range(load_repeat):
        md = None  # one copy in memory at a time: the bench must not inflate the peak RSS
        t = time.perf_counter()
        md = store.read()
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        validate(md)
        checks.append(time.perf_counter() - t)
    md = None
    read_s, validate_s = _med(reads), _med(checks)
    print(f"  store read {read_s:.2f}s, validate {validate_s:.2f}s", file=sys.stderr, flush=True)

    @flow(name="bench-empty-flow")
    async def empty_flow() -> None:  # async, like the product's flows
        return None

    def flow_once(u: str) -> tuple[float, dict[str, Any]]:
        t = time.perf_counter()
        out = asyncio.run(daily_pipeline(trigger="manual", universe=u))
        return time.perf_counter() - t, out

    def plain_once(u: str) -> tuple[float, dict[str, float]]:
        t = time.perf_counter()
        timings = plain_pipeline(u)
        return time.perf_counter() - t, timings

    t = time.perf_counter()
    _truncate_results(engine)
    flow_once(WARM_UP_UNIVERSE)
    _truncate_results(engine)
    plain_once(WARM_UP_UNIVERSE)
    asyncio.run(empty_flow())
    warm_s = time.perf_counter() - t
    print(f"  warm-up runs {warm_s:.1f}s", file=sys.stderr, flush=True)
    empty_s = []
    for _ in range(min(3, runs)):
        t = time.perf_counter()
        asyncio.run(empty_flow())
        empty_s.append(time.perf_counter() - t)
    flows: list[float] = []
    plains: list[float] = []
    flow_steps: list[dict[str, float]] = []
    plain_steps: list[dict[str, float]] = []
    summary: dict[str, Any] = {}
    settles: list[float] = []
    for i in range(runs):
        for kind in ("flow", "plain") if i % 2 == 0 else ("plain", "flow"):
            _truncate_results(engine)
            waited = settle()
            settles.append(waited)
            print(
                f"  run {i + 1}/{runs}: {kind} (quiet after {waited:.1f}s)...",
                file=sys.stderr,
                flush=True,
            )
            if kind == "flow":
                s, summary = flow_once(universe)
                flows.append(s)
                flow_steps.append(_run_timings(summary["run_id"]))
            else:
                s, steps = plain_once(universe)
                plains.append(s)
                plain_steps.append({k: round(v, 3) for k, v in steps.items()})
            print(f"  {kind}: {s:.2f}s", file=sys.stderr, flush=True)
    engine.dispose()
    return {
        "flow_s": flows,
        "plain_s": plains,
        "flow_steps": flow_steps,
        "plain_steps": plain_steps,
        "warm_up_s": round(warm_s, 2),
        "empty_flow_s": [round(x, 3) for x in empty_s],
        "settle_s": [round(x, 2) for x in settles],
        "read_s": read_s,
        "validate_s": validate_s,
        "rss_after_imports_mb": round(rss_imports, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "summary": {
            k: summary.get(k)
            for k in (
                "as_of",
                "regime",
                "sectors_selected",
                "strategies_inserted",
                "users",
                "user_strategies_written",
                "cache",
                "relay",
            )
        },
    }


def _run_worker(
    universe: str, runs: int, load_repeat: int, state_dir: Path, prefect_env: dict[str, str]
) -> Any:
    env = child_env(state_dir, prefect_env)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.pipeline_scale",
            "--worker",
            universe,
            "--runs",
            str(runs),
            "--load-repeat",
            str(load_repeat),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline worker failed with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- data load: Parquet store vs PostgreSQL COPY vs CSV -----------------------------------------
def _columns(md: MarketData, cols: list[str]) -> MarketData:
    """`md` restricted to the symbols `cols`."""
    return dataclasses.replace(
        md,
        closes=md.closes[cols],
        ohlcv=None if md.ohlcv is None else {k: v[cols] for k, v in md.ohlcv.items()},
        sectors=md.sectors[md.sectors.index.isin(cols)],
    )


_PG_FIELDS = ("open", "high", "low", "close", "volume")


def pg_copy_load(md: MarketData, dsn: str) -> tuple[float, int]:
    """Bars of `md` in a PostgreSQL table (symbol, date, OHLCV; primary key (symbol, date)),
    then read back into the (sessions x symbols) matrices with one binary COPY, parsed with a
    numpy record dtype (no per-row Python). Returns (read seconds, rows); checks the values."""
    import numpy as np
    import psycopg

    t_n, n = md.closes.shape
    assert md.ohlcv is not None
    rec = np.dtype(
        [("nf", ">i2"), ("l0", ">i4"), ("symbol", ">i4"), ("l1", ">i4"), ("date", ">i4")]
        + [x for f in _PG_FIELDS for x in ((f"l_{f}", ">i4"), (f, ">f8"))]
    )
    rows = np.zeros(t_n * n, dtype=rec)
    rows["nf"] = 2 + len(_PG_FIELDS)
    rows["l0"] = rows["l1"] = 4
    rows["symbol"] = np.repeat(np.arange(n, dtype=np.int32), t_n)
    pg_epoch = np.datetime64("2000-01-01", "D")
    days = (md.index.values.astype("datetime64[D]") - pg_epoch).astype(np.int32)
    rows["date"] = np.tile(days, n)
    for f in _PG_FIELDS:
        rows[f"l_{f}"] = 8
        rows[f] = md.ohlcv[f].to_numpy().T.ravel()
    header = b"PGCOPY\n\xff\r\n\0" + b"\0" * 8
    payload = header + rows.tobytes() + b"\xff\xff"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_bars")
        conn.execute(
            "CREATE TABLE bench_bars (symbol int4, date date, open float8, high float8,"
            " low float8, close float8, volume float8, PRIMARY KEY (symbol, date))"
        )
        with conn.cursor() as cur, cur.copy("COPY bench_bars FROM STDIN (FORMAT binary)") as cp:
            for i in range(0, len(payload), 1 << 24):
                cp.write(payload[i : i + (1 << 24)])
        conn.execute("VACUUM ANALYZE bench_bars")
        t = time.perf_counter()
        chunks = []
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY (SELECT symbol, date, open, high, low, close, volume FROM bench_bars"
                " ORDER BY symbol, date) TO STDOUT (FORMAT binary)"
            ) as cp,
        ):
            for data in cp:
                chunks.append(bytes(data))
        buf = b"".join(chunks)
        got = np.frombuffer(buf, dtype=rec, offset=len(header), count=t_n * n)
        mats = {f: got[f].astype(np.float64).reshape(n, t_n).T for f in _PG_FIELDS}
        seconds = time.perf_counter() - t
        conn.execute("DROP TABLE bench_bars")
    for f in _PG_FIELDS:
        if not np.array_equal(mats[f], md.ohlcv[f].to_numpy(), equal_nan=True):
            raise AssertionError(f"PostgreSQL COPY round trip changed {f}")
    return seconds, t_n * n


def csv_load(md: MarketData, tmp: Path) -> tuple[float, int]:
    """The product's `file:` source over the long CSV format (parse + validation)."""
    import numpy as np

    from bloasis.marketdata import FileSource, write_csv

    path = write_csv(md, tmp / "bars.csv")
    t = time.perf_counter()
    got = FileSource(path).load()
    seconds = time.perf_counter() - t
    if not np.allclose(got.closes.to_numpy(), md.closes.to_numpy(), equal_nan=True, rtol=1e-12):
        raise AssertionError("CSV round trip changed the closes")
    return seconds, int(md.closes.shape[0] * md.closes.shape[1])


# --- compute: the pipeline's compute steps, the batch numbers, the floor -----------------------
def pipeline_compute(md: MarketData) -> None:
    """The pipeline's compute steps for the last session, no I/O: regime, screen, sectors,
    the three profile books and their strategies."""
    from bloasis.pipeline import compute_regime
    from bloasis.regime.model import resolve_model
    from bloasis.strategy.engine import build_profile_book
    from bloasis.strategy.sectors import analyze_sectors
    from bloasis.strategy.session import screen_universe
    from bloasis.strategy.types import PROFILES

    as_of = md.last_date
    model = resolve_model("regime-v2", "synthetic:bench")
    r = compute_regime(md, as_of, trigger="manual", run_id=uuid.uuid4(), model=model)
    view, _ = screen_universe(md.as_of(as_of), as_of, min_history=21, quarantine=False)
    a = analyze_sectors(view, as_of, r.regime)
    for p in PROFILES:
        _ = build_profile_book(view, as_of, r, a, p, top_n=15, model_version=model.version).strategy


def _med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def run(
    size: str = "quick", *, settings: Settings | None = None, prefect_api_url: str | None = None
) -> list[dict[str, Any]]:
    """The five entries at `size`. `settings`: an already-running stack to use (tests);
    `prefect_api_url`: an already-running Prefect server to use instead of starting one."""
    import numpy as np

    from bench import per_symbol_reference as ref
    from bloasis.marketdata import SyntheticSource
    from bloasis.marketdata.parquet import ParquetSource, write_parquet

    sz = SIZES[size]
    full = size == "full"
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        say(f"[{time.perf_counter() - t0:5.1f}s] {msg}")

    universe_label = f"synthetic:{sz.symbols}:{SEED}:{sz.years}"
    out: list[dict[str, Any]] = []
    with contextlib.ExitStack() as ctx:
        tmp = Path(ctx.enter_context(tempfile.TemporaryDirectory(prefix="bloasis-bench-pipe-")))
        server = None
        if not full:
            # Small sizes boot the Prefect server while measuring (time budget); the full size
            # keeps the machine quiet for its measurements and boots it afterwards.
            server = ctx.enter_context(prefect_server(prefect_api_url))
        progress(f"pipeline_scale ({size}): generating {universe_label}...")
        t = time.perf_counter()
        md = SyntheticSource(sz.symbols, sz.years, SEED).load()
        gen_s = time.perf_counter() - t
        t_n, n = md.closes.shape
        rows = t_n * n
        store = tmp / "store"
        t = time.perf_counter()
        write_parquet(md, store)
        write_s = time.perf_counter() - t
        store_mb = sum(p.stat().st_size for p in store.iterdir()) / 1e6

        loaded = ParquetSource(store).read()  # timed in the child; checked equal here
        for name, frame in (md.ohlcv or {}).items():
            if not np.array_equal(frame.to_numpy(), loaded.ohlcv[name].to_numpy(), equal_nan=True):  # type: ignore[index]
                raise AssertionError(f"the bars store round trip changed {name}")
        loaded = None

        progress("per-symbol reference vs the product's batch code...")
        product_s, prod = timed(functools.partial(ref.product, md), repeat=3 if full else 1)
        if sz.reference_sample is None or sz.reference_sample >= n:
            sample = md
        else:
            step = n // sz.reference_sample
            sample = _columns(md, md.symbols[::step][: sz.reference_sample])
        t = time.perf_counter()
        reference = ref.reference(sample)
        ref_sample_s = time.perf_counter() - t
        checked = ref.check_same(ref.product(sample) if sample is not md else prod, reference)
        ref_s = ref_sample_s * len(md.symbols) / len(sample.symbols)
        prod = reference = sample = None
        pipeline_compute(md)  # warm: lazy imports (TA-Lib, skfolio/cvxpy) are not compute
        compute_s, _ = timed(functools.partial(pipeline_compute, md), repeat=3 if full else 1)
        floor_s, _ = timed(functools.partial(np.add.reduce, md.closes.to_numpy(), 0), repeat=5)

        st = ctx.enter_context(bench_stack(settings))
        progress("data load: PostgreSQL binary COPY and CSV on a subset...")
        cmp_md = _columns(md, md.symbols[: sz.compare_symbols])
        pg_s, pg_rows = pg_copy_load(cmp_md, st.require("database_url"))
        csv_s, csv_rows = csv_load(cmp_md, tmp)
        cmp_md = md = None  # the child process loads its own copy from the store

        from bloasis.store.db import get_engine
        from bloasis.strategy.types import UserPreferences
        from bloasis.users import ensure_user, random_population, seed_population

        engine = get_engine(st)
        ensure_user(engine, UserPreferences(st.demo_user or "test", "moderate"))
        seed_population(engine, random_population(4, seed=1, prefix="demo"))
        engine.dispose()
        penv, wait_ready = server or ctx.enter_context(prefect_server(prefect_api_url))
        wait_ready()
        progress(f"pipeline runs in a child process ({sz.runs} flow + {sz.runs} plain)...")
        w = _run_worker(f"parquet:{store}", sz.runs, sz.load_repeat, st.state_dir, penv)

    progress("done")
    flow_s, plain_s = _med(w["flow_s"]), _med(w["plain_s"])
    read_s, validate_s = float(w["read_s"]), float(w["validate_s"])
    size_fields = {"size": size, "symbols": n, "sessions": t_n, "universe": universe_label}
    out.append(
        entry(
            "pipeline_5000x10y",
            flow_s,
            "s",
            compared_to="target 15 s (the daily-pipeline flow against a running Prefect server)",
            target="<= 15 s",
            met=(flow_s <= 15) if full else None,
            runs_s=[round(x, 3) for x in w["flow_s"]],
            steps_s=w["flow_steps"][-1],
            steps_by_run_s=w["flow_steps"],
            result=w["summary"],
            **size_fields,
        )
    )
    ratio = ref_s / product_s
    extrapolated = sz.reference_sample is not None and sz.reference_sample < n
    out.append(
        entry(
            "pipeline_vs_per_symbol",
            product_s,
            "s",
            compared_to="per-symbol pandas + TA-Lib loop (bench/per_symbol_reference.py): the"
            " same factors, scores, sector returns and indicators for every symbol",
            baseline_value=ref_s,
            target=">= 10x",
            met=ratio >= 10,
            reference_extrapolated=extrapolated,
            reference_sample_symbols=sz.reference_sample if extrapolated else n,
            reference_sample_s=round(ref_sample_s, 3),
            values_checked_equal=checked,
            floor_seconds=round(floor_s, 5),
            floor="one numpy pass (a column sum) over the sessions x symbols close matrix",
            compute_only_s=round(compute_s, 4),
            compute_only="the pipeline's compute steps as it runs them (regime, screen, sectors,"
            " 3 profile books on the candidates), no I/O",
            compute_only_vs_floor=round(compute_s / floor_s, 1),
            batch_vs_floor=round(product_s / floor_s, 1),
            **size_fields,
        )
    )
    alt = {
        "parquet_store": round(rows / read_s),
        "postgresql_binary_copy": round(pg_rows / pg_s),
        "csv_file_source": round(csv_rows / csv_s),
    }
    out.append(
        entry(
            "data_load",
            read_s,
            "s",
            compared_to=f"PostgreSQL binary COPY into numpy, measured on {sz.compare_symbols}"
            " symbols and extrapolated at its rows/s (CSV via the file: source likewise)",
            baseline_value=rows / alt["postgresql_binary_copy"],
            target="<= 3 s",
            met=(read_s <= 3) if full else None,
            rows=rows,
            measured="ParquetSource.read in the pipeline's (child) process, median of"
            f" {sz.load_repeat}; validation (the same rules as every source) reported apart",
            rows_per_s=alt["parquet_store"],
            rows_per_s_by_store=alt,
            csv_extrapolated_s=round(rows / alt["csv_file_source"], 2),
            validate_s=round(validate_s, 3),
            load_and_validate_s=round(read_s + validate_s, 3),
            store_mb=round(store_mb, 1),
            write_store_s=round(write_s, 2),
            generate_s=round(gen_s, 2),
            **size_fields,
        )
    )
    overhead = flow_s / plain_s
    body_s = _med([float(x.get("total_s", 0.0)) for x in w["flow_steps"]])
    out.append(
        entry(
            "prefect_overhead",
            flow_s,
            "s",
            compared_to="the same task functions called as plain functions (.fn), same order",
            baseline_value=plain_s,
            target="overhead (flow / plain) <= 1.3",
            met=overhead <= 1.3,
            overhead=round(overhead, 3),
            overhead_s=round(flow_s - plain_s, 3),
            flow_body_s=round(body_s, 3),
            flow_body="the flow function's own wall time (its total_s timing): the rest of the"
            " flow's wall time is the flow run's setup and teardown",
            empty_flow_run_s=round(_med(w["empty_flow_s"]), 3),
            empty_flow="a flow run with no tasks on the same server: Prefect's fixed cost per run",
            flow_runs_s=[round(x, 3) for x in w["flow_s"]],
            plain_runs_s=[round(x, 3) for x in w["plain_s"]],
            plain_steps_s=w["plain_steps"][-1],
            plain_steps_by_run_s=w["plain_steps"],
            runs_start="each measured run (flow and plain) starts once machine-wide CPU is"
            f" below {SETTLE_CPU_PERCENT:.0f}% over {SETTLE_WINDOW_S}s, as a daily run finds"
            " an idle server",
            settle_s=w["settle_s"],
            **size_fields,
        )
    )
    rss = float(w["peak_rss_mb"])
    out.append(
        entry(
            "pipeline_peak_rss",
            rss,
            "MB",
            compared_to="peak RSS (VmHWM) of the child process that ran the flow and plain runs",
            target="<= 2048 MB",
            met=(rss <= 2048) if full else None,
            rss_after_imports_mb=w["rss_after_imports_mb"],
            matrices_mb=round(rows * 8 * 5 / 2**20, 1),
            **size_fields,
        )
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    ap.add_argument("--worker", metavar="UNIVERSE", help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--load-repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.runs, args.load_repeat)))
        return
    emit(run(args.size))


if __name__ == "__main__":
    main()
