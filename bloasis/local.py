"""`bloasis up` / `bloasis down`: the whole system on one machine, in the background.

The embedded stack, a Prefect server (UI and API; its database on the stack's PostgreSQL through
asyncpg), the `bloasis-process` work pool with every deployment of prefect.yaml, one process
worker, and the gRPC server. Each process is recorded (pid, start time, command, log) in
`<state>/local.json`, so `down` stops exactly those and nothing else. Also the background gRPC
server of `bloasis serve --background` (`<state>/serve.pid`), which `up` reuses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil

from bloasis import dask_cluster, stack
from bloasis.config import Settings
from bloasis.logs import PREFECT_JSON_LOGGING

POOL = "bloasis-process"
PREFECT_DATABASE = "prefect"
REPLAY_DEPLOYMENT = "daily-pipeline/replay"
INGEST_DEPLOYMENT = "market-data-ingest/market-data-ingest"
PROVIDER_API_KEY = "local-replay-key"  # the local provider's, not a secret of anyone's
# Deployments whose "latest session" runs would jump the served regime to the end of the data
# while a replay walks through history: paused in replay mode.
PAUSED_IN_REPLAY = ("daily-pipeline/daily-pipeline", "daily-pipeline/regime-baseline")
START_TIMEOUT = 120.0
HOST = stack.HOST

Progress = Callable[[str], None]


class LocalError(RuntimeError):
    """The local deployment could not be started or stopped; the message says what to do."""


# --- records -------------------------------------------------------------------------------


def _record_path(settings: Settings) -> Path:
    return settings.state_dir / "local.json"


def _records(settings: Settings) -> dict[str, dict[str, Any]]:
    path = _record_path(settings)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _save_records(settings: Settings, records: dict[str, dict[str, Any]]) -> None:
    path = _record_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2))
    os.replace(tmp, path)


def _start_process(
    settings: Settings, name: str, cmd: list[str], env: dict[str, str], cwd: Path
) -> dict[str, Any]:
    try:
        return stack.spawn_recorded(cmd, settings.state_dir / f"{name}.log", cwd, env)
    except stack.StackError as exc:
        raise LocalError(str(exc)) from exc


# --- the background gRPC server ----------------------------------------------------------------


def _pid_file(settings: Settings) -> Path:
    return settings.state_dir / "serve.pid"


def serving_pid(settings: Settings) -> int | None:
    pf = _pid_file(settings)
    if not pf.is_file():
        return None
    try:
        pid = int(pf.read_text().split()[0])
        cmdline = psutil.Process(pid).cmdline()
    except (ValueError, IndexError, psutil.Error):
        return None
    # Only a live process running `bloasis serve` counts: pids are reused.
    return pid if "serve" in cmdline else None


def grpc_healthy(settings: Settings) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from bloasis.serve.client import ClientAuth, open_channel

    # Health needs no token, but a TLS server needs a TLS channel (BLOASIS_GRPC_TLS_CA).
    try:
        with open_channel(settings.grpc_address, ClientAuth.from_settings(settings)) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def serve_background(settings: Settings) -> tuple[int, bool]:
    """Start `bloasis serve` detached (log `<state>/serve.log`); (pid, started now)."""
    existing = serving_pid(settings)
    if existing:
        return existing, False
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.state_dir / "serve.log"
    cmd = [sys.executable, "-m", "bloasis.cli", "serve", "--address", settings.grpc_address,
           "--processes", str(settings.grpc_processes)]  # fmt: skip
    proc = stack._spawn(cmd, log_path, Path.cwd(), None)
    _pid_file(settings).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise LocalError("gRPC server exited at start:\n  " + "\n  ".join(tail))
        if grpc_healthy(settings):
            return proc.pid, True
        time.sleep(0.2)
    raise LocalError(f"gRPC server did not become healthy in 30 s; see {log_path}")


def stop_server(settings: Settings) -> bool:
    pid = serving_pid(settings)
    _pid_file(settings).unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        rec = {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except psutil.NoSuchProcess:
        return False
    return stack.stop_recorded(rec)


# --- Prefect ---------------------------------------------------------------------------------


def project_root() -> Path:
    """The checkout holding prefect.yaml (flows run from there: the yaml has no pull step)."""
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        for d in (base, *base.parents):
            if (d / "prefect.yaml").is_file() and (d / "flows").is_dir():
                return d
    raise LocalError("prefect.yaml not found: run `bloasis up` from the BLOASIS checkout")


def prefect_url(settings: Settings) -> str:
    return f"http://{HOST}:{settings.prefect_port}"


def prefect_env(settings: Settings) -> dict[str, str]:
    """What every Prefect process of the local deployment (and a sourcing shell) needs."""
    env = {
        "PREFECT_HOME": str((settings.state_dir / "prefect").resolve()),
        "PREFECT_API_URL": f"{prefect_url(settings)}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The domain's own log lines (bloasis.*) in the runs' logs in the UI, not only the
        # flow's; outside a run they stay local.
        "PREFECT_LOGGING_EXTRA_LOGGERS": "bloasis",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    if settings.log_format == "json":  # the worker's and its flow runs' lines too
        env |= PREFECT_JSON_LOGGING
    return env


def prefect_database_url(settings: Settings) -> str:
    """`postgresql+asyncpg://` on the app's PostgreSQL server, database `prefect` (created when
    missing): Prefect's server fails on psycopg, the app itself keeps psycopg 3."""
    import psycopg
    from psycopg import sql

    base = settings.require("database_url")
    parts = urlsplit(base)
    plain = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PREFECT_DATABASE,))
        if found.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PREFECT_DATABASE)))
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg", path=f"/{PREFECT_DATABASE}"))


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait(what: str, ok: Callable[[], bool], rec: dict[str, Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        if stack.recorded_process(rec) is None:
            tail = stack._tail(Path(rec["log"]))
            raise LocalError(f"{what} exited at start; see {rec['log']}:\n{tail}")
        time.sleep(0.5)
    raise LocalError(f"{what} not ready after {timeout:.0f} s; see {rec['log']}")


def _prefect_bin() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def _run_prefect(settings: Settings, args: list[str], cwd: Path, timeout: float = 180) -> str:
    env = {**os.environ, **prefect_env(settings)}
    try:
        done = subprocess.run(
            [_prefect_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise LocalError(f"`prefect {' '.join(args)}` did not finish in {timeout:.0f} s") from exc
    if done.returncode != 0:
        out = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise LocalError(f"`prefect {' '.join(args)}` failed:\n  " + "\n  ".join(out))
    return done.stdout


@contextlib.contextmanager
def prefect_client(settings: Settings) -> Iterator[Any]:
    """A sync Prefect client on this deployment's server, whatever the process' own settings."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per API request

    with (
        temporary_settings(updates={PREFECT_API_URL: f"{prefect_url(settings)}/api"}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _ensure_pool(settings: Settings) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with prefect_client(settings) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))


def _worker_online(settings: Settings) -> bool:
    try:
        with prefect_client(settings) as client:
            workers = client.read_workers_for_work_pool(POOL)
    except Exception:
        return False
    return any(str(getattr(w, "status", "")).upper().endswith("ONLINE") for w in workers)


def configure_replay(settings: Settings, say: Progress) -> None:
    """Replay: its schedule on (every BLOASIS_REPLAY_INTERVAL_SECONDS), the latest-session
    schedules paused; otherwise the replay schedule off."""
    from prefect.client.schemas.schedules import IntervalSchedule

    with prefect_client(settings) as client:
        replay = client.read_deployment_by_name(REPLAY_DEPLOYMENT)
        on = settings.replay_start is not None
        interval = IntervalSchedule(interval=timedelta(seconds=settings.replay_interval_seconds))
        for sched in client.read_deployment_schedules(replay.id):
            client.update_deployment_schedule(replay.id, sched.id, active=on, schedule=interval)
        for name in PAUSED_IN_REPLAY:
            dep = client.read_deployment_by_name(name)
            for sched in client.read_deployment_schedules(dep.id):
                client.update_deployment_schedule(dep.id, sched.id, active=not on)
    if on:
        say(
            f"replay: {settings.replay_start} → {settings.replay_end or 'end of data'}, one"
            f" trading day every {settings.replay_interval_seconds} s; daily schedules paused"
        )


# --- live replay: the local provider as the market ---------------------------------------------


@dataclass(frozen=True)
class LiveReplay:
    """`bloasis up --live replay`: the local provider serves the embedded history from `start`
    to `end`, publishing one session every `every` seconds; the ingest schedule polls it."""

    start: date
    end: date | None
    every: int
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def clock_file(self, settings: Settings) -> Path:
        return (settings.state_dir / "provider-clock.json").resolve()

    def ingest_every(self) -> int:
        # Often enough that a published session is served well within half a minute, rarely
        # enough that flow-run processes do not pile up on two CPUs (runs that would overlap
        # are cancelled: the deployment's CANCEL_NEW).
        return max(5, self.every // 3)

    def env(self, settings: Settings) -> dict[str, str]:
        """Settings of every process of the deployment (written to `<state>/env`)."""
        return {
            "BLOASIS_MARKET_DATA": "live",
            "BLOASIS_LIVE_UNIVERSE": "current20",
            "BLOASIS_FRED_URL": self.url,
            "BLOASIS_YAHOO_URL": self.url,
            "BLOASIS_FRED_API_KEY": PROVIDER_API_KEY,
            "BLOASIS_MARKET_CLOCK": f"file:{self.clock_file(settings)}",
            # The real services' request rates are theirs to set; a local one needs no pacing.
            "BLOASIS_FRED_REQUESTS_PER_SECOND": "200",
            "BLOASIS_YAHOO_REQUESTS_PER_SECOND": "200",
        }


def prepare_live_replay(settings: Settings, replay: LiveReplay, say: Progress) -> None:
    """The store holds the embedded history up to the session before `start` (nothing after:
    the provider delivers the rest), and nothing computed after it."""
    from bloasis import calendar
    from bloasis.store.db import get_engine
    from bloasis.store.marketdata import last_dates, load_embedded_vintage

    engine = get_engine(settings)
    through = calendar.previous_session(replay.start)
    with engine.connect() as conn:
        last = {r.key: r.last_date for r in last_dates(conn)}
    if last.get("^SPX", through) > through:
        raise LocalError(
            f"--live replay from {replay.start}: the market-data store already holds sessions "
            f"up to {last['^SPX']}; replay on a fresh state dir (`make down && rm -rf "
            f"{settings.state_dir}`, or set BLOASIS_STATE_DIR)"
        )
    check_replay_state(settings, replay.start)
    out = load_embedded_vintage(engine, through=through)
    say(
        f"market-data store: embedded history through {through} ({out.bars.inserted} bars,"
        f" {out.series.inserted} series values stored in {out.seconds:.1f} s)"
    )


def start_provider(settings: Settings, replay: LiveReplay, records: dict[str, Any],
                   say: Progress) -> None:  # fmt: skip
    """The local provider process (recorded as `provider`), publishing from `start`."""
    from bloasis import calendar

    rec = records.get("provider")
    if rec is not None and stack.recorded_process(rec) is not None:
        return
    through = calendar.previous_session(replay.start)
    cmd = [sys.executable, "-m", "bloasis.marketdata.providers.local", "--data", "embedded",
           "--published-through", through.isoformat(), "--every", str(replay.every),
           "--port", str(replay.port), "--api-key", PROVIDER_API_KEY,
           "--clock-file", str(replay.clock_file(settings))]  # fmt: skip
    if replay.end is not None:
        cmd += ["--end", replay.end.isoformat()]
    rec = _start_process(settings, "provider", cmd, {}, project_root())
    records["provider"] = rec
    _save_records(settings, records)
    _wait("local provider", lambda: _http_ok(f"{replay.url}/control/status"), rec, 60)
    say(
        f"local provider: {replay.url}, publishing one session every {replay.every} s from "
        f"{replay.start} to {replay.end or 'the end of the data'}"
    )


def configure_live_replay(settings: Settings, replay: LiveReplay | None, say: Progress) -> None:
    """Live replay: the ingest polls the local provider (its interval schedule on, its
    after-the-close crons and the latest-session schedules paused); otherwise the interval
    schedule off."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    with prefect_client(settings) as client:
        dep = client.read_deployment_by_name(INGEST_DEPLOYMENT)
        for sched in client.read_deployment_schedules(dep.id):
            if isinstance(sched.schedule, IntervalSchedule):
                every = timedelta(seconds=replay.ingest_every() if replay else 15)
                client.update_deployment_schedule(
                    dep.id, sched.id, active=replay is not None,
                    schedule=IntervalSchedule(interval=every),
                )  # fmt: skip
            elif isinstance(sched.schedule, CronSchedule):
                client.update_deployment_schedule(dep.id, sched.id, active=replay is None)
        if replay is not None:
            for name in PAUSED_IN_REPLAY:
                other = client.read_deployment_by_name(name)
                for sched in client.read_deployment_schedules(other.id):
                    client.update_deployment_schedule(other.id, sched.id, active=False)
    if replay is not None:
        say(
            f"live replay: market-data-ingest every {replay.ingest_every()} s against the local "
            "provider, each new session computed as it arrives; daily schedules paused"
        )


# --- up / down -------------------------------------------------------------------------------


def check_replay_state(settings: Settings, start: date | None = None) -> None:
    """Replay needs nothing stored after its start: "current" is the latest as-of stored."""
    start = start or settings.replay_start
    if start is None:
        return
    from bloasis.regime.model import resolve_model
    from bloasis.store.db import get_engine
    from bloasis.store.regimes import latest_regime

    mv = resolve_model(settings.model_version, settings.universe, settings.regime_overrides).version
    with get_engine(settings).connect() as conn:
        latest = latest_regime(conn, mv)
    if latest is not None and latest.as_of > start:
        what = (
            f"BLOASIS_REPLAY_START={start}"
            if start == settings.replay_start
            else (f"replay from {start}")
        )
        raise LocalError(
            f"{what}: regimes up to {latest.as_of} are "
            f"already stored, which would stay current; replay on a fresh state dir "
            f"(`make down && rm -rf {settings.state_dir}`, or set BLOASIS_STATE_DIR)"
        )


def _dask(settings: Settings, workers: int, records: dict[str, Any], say: Progress) -> str:
    """The local Dask cluster's address (started unless its scheduler still runs with as many
    workers); flows then fan users out to it."""

    sched = records.get(dask_cluster.SCHEDULER)
    names = dask_cluster.worker_names(workers)
    if (
        sched is not None
        and stack.recorded_process(sched)
        and all(n in records and stack.recorded_process(records[n]) for n in names)
    ):
        address = str(sched["address"])
        say(f"dask cluster: running on {address} ({workers} workers)")
        return address
    dask_cluster.stop(records)
    try:
        address, started = dask_cluster.start(settings.state_dir, workers, say)
    except dask_cluster.ClusterError as exc:
        raise LocalError(str(exc)) from exc
    started[dask_cluster.SCHEDULER]["address"] = address
    records.update(started)
    _save_records(settings, records)
    return address


def up(
    settings: Settings, say: Progress, live: LiveReplay | None = None, workers: int = 0
) -> dict[str, str]:
    """Start what is not running; idempotent. Returns the URLs to print. `live`: the local
    provider plays the market (`bloasis up --live replay`); `workers`: a Dask cluster of that
    many worker processes takes the user fan-out (BLOASIS_DASK_ADDRESS for the flows)."""
    records = _records(settings)
    root = project_root()
    penv = prefect_env(settings)
    state = str(settings.state_dir.resolve())
    if live is not None:
        start_provider(settings, live, records, say)

    rec = records.get("prefect-server")
    health = f"{prefect_url(settings)}/api/health"
    if rec is None or stack.recorded_process(rec) is None:
        if _http_ok(health):
            raise LocalError(
                f"port {settings.prefect_port} already answers as a Prefect server not started "
                "by this state dir; stop it or set BLOASIS_PREFECT_PORT"
            )
        if not stack._port_free(settings.prefect_port):
            raise LocalError(
                f"port {HOST}:{settings.prefect_port} is in use"
                f"{stack._port_owner(settings.prefect_port)}; set BLOASIS_PREFECT_PORT"
            )
        db = prefect_database_url(settings)
        say(f"prefect server: starting on {prefect_url(settings)} (database on PostgreSQL)")
        env = {**penv, "PREFECT_API_DATABASE_CONNECTION_URL": db}
        cmd = [_prefect_bin(), "server", "start", "--host", HOST,
               "--port", str(settings.prefect_port)]  # fmt: skip
        rec = _start_process(settings, "prefect-server", cmd, env, root)
        records["prefect-server"] = rec
        _save_records(settings, records)
    _wait("prefect server", lambda: _http_ok(health), rec, START_TIMEOUT)
    say("prefect server: ready")

    _ensure_pool(settings)
    say(f"deploying prefect.yaml to work pool {POOL}")
    _run_prefect(settings, ["deploy", "--all", "--no-prompt"], root)
    configure_replay(settings, say)
    configure_live_replay(settings, live, say)

    dask_env: dict[str, str] = {}
    if workers:
        address = _dask(settings, workers, records, say)
        dask_env = {"BLOASIS_TASK_RUNNER": "dask", "BLOASIS_DASK_ADDRESS": address}
    rec = records.get("worker")
    running = rec is not None and stack.recorded_process(rec) is not None
    if rec is not None and running and rec.get("dask_env", {}) != dask_env:
        # Started for another cluster: its flows must use this one.
        stack.stop_recorded(rec, signals=2)
        rec = None
    if rec is None or stack.recorded_process(rec) is None:
        env = {**penv, "BLOASIS_STATE_DIR": state, **dask_env}
        if live is not None:  # pick up each scheduled ingest promptly (default: every 10 s)
            env["PREFECT_WORKER_QUERY_SECONDS"] = "2"
        cmd = [_prefect_bin(), "worker", "start", "--pool", POOL, "--type", "process"]
        rec = _start_process(settings, "worker", cmd, env, root)
        rec["dask_env"] = dask_env
        records["worker"] = rec
        _save_records(settings, records)
        say(f"worker: started (pid {rec['pid']})")
    _wait("prefect worker", lambda: _worker_online(settings), rec, START_TIMEOUT)

    pid, started = serve_background(settings)
    say(f"gRPC server: {'started' if started else 'already running'} (pid {pid})")
    urls = {
        "Prefect UI": prefect_url(settings),
        "Prefect API": penv["PREFECT_API_URL"],
        "gRPC": settings.grpc_address,
        "logs": str(settings.state_dir),
    }
    urls |= {"Dask scheduler": dask_env["BLOASIS_DASK_ADDRESS"]} if dask_env else {}
    return urls | ({"provider": live.url} if live is not None else {})


def down(settings: Settings) -> list[str]:
    """Stop what `up` started (worker first, so no new flow run starts), then the stack."""
    records = _records(settings)
    stopped: list[str] = []
    if stop_server(settings):
        stopped.append("grpc")
    for name, signals in (("worker", 2), ("prefect-server", 1), ("provider", 1)):
        rec = records.pop(name, None)
        if rec is not None and stack.stop_recorded(rec, signals=signals):
            stopped.append(name)
    stopped += dask_cluster.stop(records)
    if _record_path(settings).is_file():
        _save_records(settings, records)
    stopped += stack.down(settings.state_dir)
    return stopped


def status(settings: Settings) -> list[dict[str, Any]]:
    out = []
    for name, rec in _records(settings).items():
        proc = stack.recorded_process(rec)
        out.append({"name": name, "running": proc is not None, "pid": rec.get("pid"),
                    "log": rec.get("log")})  # fmt: skip
    return out


def last_deployment_runs(settings: Settings) -> list[dict[str, Any]]:
    """The latest flow run of each deployment on this deployment's Prefect server."""
    from prefect.client.schemas.sorting import FlowRunSort

    out: list[dict[str, Any]] = []
    with prefect_client(settings) as client:
        for dep in client.read_deployments():
            runs = client.read_flow_runs(
                deployment_filter=_deployment_filter(dep.id), flow_run_filter=_started(),
                sort=FlowRunSort.START_TIME_DESC, limit=1,
            )  # fmt: skip
            run = runs[0] if runs else None
            out.append({
                "deployment": dep.name,
                "run": run.name if run else None,
                "state": run.state_name if run else None,
                "start": run.start_time.isoformat() if run and run.start_time else None,
            })  # fmt: skip
    return out


def _deployment_filter(dep_id: Any) -> Any:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return DeploymentFilter(id=DeploymentFilterId(any_=[dep_id]))


def _started() -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    # Scheduled runs that have not started yet are not "the last run".
    return FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False))
