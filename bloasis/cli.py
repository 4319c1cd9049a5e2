"""`bloasis` command line: the embedded stack, migrations, runs, the relay, the server, reads."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from bloasis.config import Settings, SettingsError, default_state_dir, load_settings

# The stack forks server processes; gRPC's fork handlers can crash such a child (set before
# grpc is imported anywhere in this process).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


class CliError(RuntimeError):
    """An error the user can act on: printed without a traceback, exit status 1."""


def _err(msg: str) -> None:
    print(f"bloasis: {msg}", file=sys.stderr)


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def prefect_env(state_dir: Path) -> None:
    """Prefect reads its settings at import: keep its home in the project, no analytics."""
    os.environ.setdefault("PREFECT_HOME", str((state_dir / "prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # The domain's own log lines (bloasis.*) in the runs' logs too; outside a run, local only.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "bloasis")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


# --- stack -----------------------------------------------------------------------------------
def cmd_stack(args: argparse.Namespace) -> int:
    from bloasis import stack

    state_dir = default_state_dir()
    if args.action == "up":
        stack.up(state_dir, progress=lambda m: print(m, file=sys.stderr))
        settings = load_settings()
        _migrate(settings)
        _ensure_demo_user(settings)
        print(f"stack up; `source {state_dir}/env` to use it from a shell")
        print(stack.format_status(stack.status(state_dir)))
    elif args.action == "down":
        stopped = stack.down(state_dir)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    elif args.action == "status":
        print(stack.format_status(stack.status(state_dir)))
    elif args.action == "stop":
        stack.stop_service(args.service, state_dir)
        print(f"stopped {args.service}")
    elif args.action == "start":
        stack.start_service(args.service, state_dir)
        print(f"started {args.service}")
    return 0


def _ensure_demo_user(settings: Settings) -> None:
    """The embedded setup has a user to try GetStrategy with (BLOASIS_DEMO_USER, "" for none)."""
    if not settings.demo_user:
        return
    from bloasis.store.db import get_engine
    from bloasis.strategy.types import UserPreferences
    from bloasis.users import ensure_user

    if ensure_user(get_engine(settings), UserPreferences(settings.demo_user, "moderate")):
        print(f"created demo user {settings.demo_user!r} (moderate profile)", file=sys.stderr)


def _migrate(settings: Settings) -> None:
    from bloasis.store.db import upgrade

    upgrade(settings.require("database_url"))


def cmd_db(args: argparse.Namespace) -> int:
    from bloasis.store.db import current_revision

    settings = load_settings()
    if args.action == "upgrade":
        _migrate(settings)
    print(f"schema revision: {current_revision(settings.require('database_url'))}")
    return 0


# --- run / relay -----------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.universe is not None:
        from bloasis.config import parse_universe

        try:
            parse_universe(args.universe)
        except ValueError as exc:
            raise CliError(f"--universe {args.universe}: {exc}") from None
    if args.as_of is not None and (args.universe or settings.universe) == "embedded":
        from bloasis import pipeline

        # Fail fast on a non-session date, before paying for Prefect's start-up.
        pipeline.resolve_as_of(pipeline.load_market_data(), args.as_of)
    if args.history_days < 0:
        raise CliError(f"--history-days must be >= 0, got {args.history_days}")
    prefect_env(settings.state_dir)
    _migrate(settings)
    from flows.pipeline import daily_pipeline

    summary = asyncio.run(
        daily_pipeline(
            as_of=args.as_of,
            trigger=args.trigger,
            relay=not args.no_relay,
            history_days=args.history_days,
            strategies=not args.regime_only,
            users=args.users,
            universe=args.universe,
        )
    )
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(
            f"{summary['as_of']}  {summary['regime']}  confidence {summary['confidence']:.2f}"
            f"  risk {summary['risk_level']}  trigger {summary['trigger']}"
        )
        print(summary["reasoning"])
        if "strategies" in summary:
            print(
                f"sectors {', '.join(summary['sectors_selected'])}; strategies "
                f"{', '.join(summary['strategies'].values())}; {summary['users']} users "
                f"({summary['user_strategies_written']} written)"
            )
        print(f"run {summary['run_id']}: cache {summary['cache']}; relay {summary['relay']}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from bloasis import pipeline, progress

    settings = load_settings()
    md = pipeline.load_market_data_with_issues(None, settings.universe, settings=settings)[0]
    start = args.start or md.market.index[0].date()
    end = args.end or md.last_date
    if start > end:
        raise CliError(f"--start {start} is after --end {end}")
    if args.chunk_size <= 0:
        raise CliError(f"--chunk-size must be positive, got {args.chunk_size}")
    if args.out is not None and not args.out.parent.is_dir():
        raise CliError(f"--out {args.out}: directory {args.out.parent} does not exist")
    models = _backfill_models(args.model, settings)
    if len(models) > 1 and (args.json or args.out is not None):
        raise CliError("--json and --out take one model: run one --model at a time")
    prefect_env(settings.state_dir)
    _migrate(settings)
    from flows.backfill import regime_backfill

    for i, model in enumerate(models):
        with progress.listen(progress.TerminalBar()):
            summary = asyncio.run(
                regime_backfill(
                    start=start, end=end, chunk_size=args.chunk_size, model_version=model
                )
            )
        if i:
            print()
        _print_backfill(args, summary)
    return 0


def _backfill_models(spec: str | None, settings: Settings) -> list[str | None]:
    """`--model regime-v3`, `--model regime-v2,regime-v3` or `--model all`; None: the served
    one. Each name is checked before anything runs."""
    from bloasis.regime.params import ALGORITHMS, algorithm_of

    if spec is None:
        return [None]
    names = list(ALGORITHMS) if spec == "all" else [n.strip() for n in spec.split(",") if n]
    if not names:
        raise CliError("--model: give a model version (regime-v2, regime-v3) or `all`")
    for n in names:
        try:
            algorithm_of(n)
        except SettingsError:
            raise CliError(
                f"--model {n!r}: not a regime model (known: {', '.join(ALGORITHMS)}, all)"
            ) from None
    return [None if n == settings.model_version else n for n in names]


def _print_backfill(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    from bloasis.regime.validation import ValidationReport, format_report

    days = summary.pop("days")
    text = format_report(ValidationReport(**_report_fields(summary["validation"])))
    head = (
        f"Backfill {summary['model_version']} {summary['start']}..{summary['end']}: "
        f"{summary['sessions']} sessions, "
        f"{summary['inserted']} inserted, {summary['existing']} already stored, "
        f"{summary['events_queued']} events queued ({summary['timings'].get('total_s', 0):.1f}s)"
    )
    if summary["note"]:
        head += f"\nnote: {summary['note']}"
    if str(summary.get("cache", "")).startswith("not published"):
        head += f"\n{summary['cache']} (stored under its own version, no events)"
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    # With --json, stdout is the per-day array and nothing else; the report goes to stderr.
    report_stream = sys.stderr if args.json else sys.stdout
    print(head, text, sep="\n\n", file=report_stream)
    if args.out is not None:
        print(f"report written to {args.out}", file=report_stream)
    if args.json:
        json.dump(days, sys.stdout)
        sys.stdout.write("\n")


def cmd_regime(args: argparse.Namespace) -> int:
    """`bloasis regime compare`: regime-v2, regime-v3, the jump model and the filtered HMM
    scored side by side (bloasis.app.regime_compare)."""
    from bloasis import pipeline

    try:
        from bloasis.app.regime_compare import CompareRequest, format_report, run_comparison
    except ImportError as exc:  # jumpmodels / matplotlib: the `eval` extra
        raise CliError(f"{exc}: install the evaluation extra: pip install -e '.[eval]'") from None
    for name in ("out", "chart"):
        path = getattr(args, name)
        if path is not None and not path.parent.is_dir():
            raise CliError(f"--{name} {path}: directory {path.parent} does not exist")
    if args.jump_penalty <= 0:
        raise CliError(f"--jump-penalty must be positive, got {args.jump_penalty}")
    if args.cost_bp < 0:
        raise CliError(f"--cost-bp must be >= 0, got {args.cost_bp}")
    settings = load_settings()
    md = pipeline.load_market_data_with_issues(None, settings.universe, settings=settings)[0]
    chart = None if args.no_chart else args.chart or settings.state_dir / "regime-comparison.png"
    if chart is not None:
        chart.parent.mkdir(parents=True, exist_ok=True)
    req = CompareRequest(
        start=args.start,
        end=args.end,
        jump_penalty=args.jump_penalty,
        cost_bp=args.cost_bp,
        chart=chart,
        walk_forward=args.walk_forward,
    )
    out = run_comparison(md, req, progress=lambda m: print(f"... {m}", file=sys.stderr))
    doc = out.document
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(format_report(doc))
    if args.out is not None:
        print(f"\nJSON written to {args.out}")
    return 0


def _report_fields(d: dict[str, Any]) -> dict[str, Any]:
    from bloasis.regime.validation import WindowScore

    return d | {"windows": [WindowScore(**w) for w in d["windows"]]}


def cmd_users(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from bloasis import users
    from bloasis.store import strategies as store
    from bloasis.store.db import get_engine
    from bloasis.strategy.types import UserPreferences
    from bloasis.strategy.users import validate_preferences

    settings = load_settings()
    engine = get_engine(settings)
    if args.action == "add":
        try:
            cap = Decimal(args.max_position)
        except InvalidOperation:
            raise CliError(
                f"--max-position: expected a decimal, got {args.max_position!r}"
            ) from None
        prefs = UserPreferences(
            user_id=args.user_id,
            risk_profile=args.profile,
            preferred_sectors=tuple(args.prefer or ()),
            excluded_sectors=tuple(args.exclude or ()),
            max_single_position=cap,
        )
        problems = validate_preferences(prefs)
        if problems:
            raise CliError("invalid preferences: " + "; ".join(problems))
        with engine.begin() as conn:
            stored = store.upsert_preferences(conn, prefs)
        print(f"user {args.user_id}: version {stored.version}; recomputed by the next run")
    elif args.action == "list":
        with engine.connect() as conn:
            rows = store.list_preferences(conn)
        for r in rows[: args.limit]:
            p = r.prefs
            print(
                f"{p.user_id}\t{p.risk_profile}\tmax {p.max_single_position}\t"
                f"prefer {','.join(p.preferred_sectors) or '-'}\t"
                f"exclude {','.join(p.excluded_sectors) or '-'}\tv{r.version}"
            )
        print(f"{len(rows)} users")
    elif args.action == "seed":
        created = users.seed_population(
            engine, users.random_population(args.count, seed=args.seed, prefix=args.prefix)
        )
        print(f"created {created} users ({args.count - created} existed)")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from bloasis.app.steps import run_relay

    settings = load_settings()
    if not args.once:
        return _relay_loop(settings, args.interval, args.max_events)
    stats = run_relay(settings, max_events=args.max_events, own_process=True)
    print(
        f"published {stats.published} events in {stats.batches} batches "
        f"({stats.seconds:.2f}s); {stats.pending} pending"
    )
    return 0


def _relay_loop(settings: Settings, interval: float, max_events: int | None) -> int:
    """Relay every `interval` seconds until SIGTERM/SIGINT, with /metrics on
    BLOASIS_METRICS_HOST:BLOASIS_RELAY_METRICS_PORT (0: off). A broker or store outage is
    logged and retried on the next pass: the events wait in the outbox."""
    import logging
    import signal
    import threading

    from bloasis import metrics
    from bloasis.app.steps import run_relay
    from bloasis.publish.relay import RelayError

    if interval <= 0:
        raise CliError(f"--interval must be positive, got {interval:g}")
    log = logging.getLogger("bloasis.relay")
    endpoint = None
    if settings.relay_metrics_port:
        host, port = settings.metrics_host, settings.relay_metrics_port
        try:
            endpoint = metrics.start_metrics_endpoint(host, port)
            log.info("relay metrics on %s", endpoint.url)
        except OSError as exc:  # relaying matters more than its metrics
            log.error("relay metrics not served: cannot listen on %s:%d (%s)", host, port, exc)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("relaying every %gs", interval)
    try:
        while not stop.is_set():
            try:
                stats = run_relay(settings, max_events=max_events, own_process=True)
                if stats.published:
                    log.info("published %d events, %d pending", stats.published, stats.pending)
            except RelayError as exc:
                log.warning("%s", exc)
            except Exception as exc:  # the store down: retry on the next pass
                log.warning("relay pass failed: %s", str(exc).splitlines()[0][:300])
            stop.wait(interval)
    finally:
        if endpoint is not None:
            endpoint.close()
    return 0


# --- data ------------------------------------------------------------------------------------
def cmd_data(args: argparse.Namespace) -> int:
    return {
        "import": _data_import,
        "ingest": _data_ingest,
        "status": _data_status,
        "universe": _data_universe,
        "seed": _data_seed,
    }[args.action](args)


def _data_import(args: argparse.Namespace) -> int:
    """Write a universe (any BLOASIS_MARKET_DATA spec) as a bars store for `parquet:DIR`."""
    import time

    from bloasis.config import parse_universe
    from bloasis.marketdata.parquet import write_parquet
    from bloasis.pipeline import load_market_data_with_issues

    universe = args.universe or load_settings().universe
    try:
        parse_universe(universe)
    except ValueError as exc:
        raise CliError(f"--universe {universe}: {exc}") from None
    t0 = time.perf_counter()
    md, issues = load_market_data_with_issues(None, universe, quarantine=args.quarantine)
    out = write_parquet(md, args.out)
    rows, symbols = md.closes.shape
    print(
        f"wrote {symbols} symbols x {rows} sessions from {md.source} to {out} "
        f"({time.perf_counter() - t0:.1f}s); use BLOASIS_MARKET_DATA=parquet:{out}"
        + (f"; {len(issues)} bad rows quarantined" if issues else "")
    )
    return 0


def _data_ingest(args: argparse.Namespace) -> int:
    """Fetch what the live providers published into the point-in-time store."""
    from bloasis import progress
    from bloasis.app.ingest import IngestRequest, format_outcome, run_ingest

    settings = load_settings()
    _migrate(settings)
    req = IngestRequest(since=args.since, providers=(args.provider,) if args.provider else None)
    with progress.listen(progress.TerminalBar()):
        out = run_ingest(settings, req)
    if args.json:
        print(json.dumps(out.summary(), indent=2))
    else:
        print(format_outcome(out))
        if out.new_sessions and settings.universe not in ("live", "database"):
            print("note: BLOASIS_MARKET_DATA is not live: the pipeline does not read this store")
    return 0


def _data_status(args: argparse.Namespace) -> int:
    """Per series: last session, source, first seen, lag."""
    from bloasis.app.ingest import data_status, format_data_status

    settings = load_settings()
    report = data_status(settings)
    print(json.dumps(report, indent=2) if args.json else format_data_status(report, args.all))
    return 0


def _data_universe(args: argparse.Namespace) -> int:
    from bloasis.marketdata.universe import format_universe, load_universe

    spec = args.universe or load_settings().live_universe
    print(format_universe(load_universe(spec)))
    return 0


def _data_seed(args: argparse.Namespace) -> int:
    """The embedded history as the store's first vintage (what the first ingest does)."""
    from bloasis.store.db import get_engine
    from bloasis.store.marketdata import load_embedded_vintage

    settings = load_settings()
    _migrate(settings)
    out = load_embedded_vintage(get_engine(settings), through=args.through)
    print(
        f"embedded history through {out.through}: {out.bars.inserted} bars and"
        f" {out.series.inserted} series values stored ({out.seconds:.1f} s)"
        + ("" if out.ingest_id else "; it was already stored")
    )
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from bloasis.publish.kafka_options import client_options
    from bloasis.publish.topics import ensure_topics, list_topics

    settings = load_settings()
    bootstrap = settings.require("kafka_bootstrap_servers")
    options = client_options(settings)
    if args.ensure:
        created = asyncio.run(ensure_topics(bootstrap, options=options))
        print(f"created: {', '.join(created) or 'none (all exist)'}")
    for name, parts in sorted(asyncio.run(list_topics(bootstrap, options=options)).items()):
        print(f"{name}\t{parts} partitions")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from bloasis.publish.cache import make_redis

    client = make_redis(load_settings().require("redis_url"))
    try:
        for key in sorted(k.decode() for k in client.scan_iter(match=args.pattern, count=1000)):
            raw = client.get(key)
            value = raw.decode() if isinstance(raw, bytes) else str(raw or "")
            print(f"{key}\tttl={client.ttl(key)}s\t{len(value)} bytes")
            if args.show:
                print(value)
    finally:
        client.close()
    return 0


# --- serve -----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {"grpc_address": args.address} if args.address else {}
    if args.processes is not None:
        overrides["grpc_processes"] = args.processes
    settings = load_settings(**overrides)
    if args.background:
        from bloasis import local

        pid, started = local.serve_background(settings)
        log = settings.state_dir / "serve.log"
        state = f"pid {pid}, log {log}" if started else f"already running, pid {pid}"
        print(f"serving gRPC on {settings.grpc_address} ({state})")
        return 0
    from bloasis.serve.server import serve

    def ready(addr: str) -> None:
        n = settings.grpc_processes
        group = f" ({n} processes sharing the port)" if n > 1 else ""
        print(f"serving gRPC on {addr}{group}", file=sys.stderr, flush=True)

    if settings.grpc_processes > 1:
        from bloasis.serve.group import serve_group

        return serve_group(settings, ready)
    asyncio.run(serve(settings, ready=ready))
    return 0


# --- up / down: the local deployment ------------------------------------------------------------
def _replay_span(value: str) -> tuple[date, date | None]:
    start, _, end = value.partition(":")
    return _iso_date(start), (_iso_date(end) if end else None)


def cmd_up(args: argparse.Namespace) -> int:
    from bloasis import local, stack

    overrides: dict[str, Any] = {}
    live: local.LiveReplay | None = None
    state_dir = default_state_dir()
    if args.live == "replay":
        if not args.replay:
            raise CliError("--live replay needs --replay START[:END] (e.g. 2022-11-01:2022-12-28)")
        start, end = args.replay
        live = local.LiveReplay(start, end, args.replay_every or 15, stack._pick_port(set()))
        overrides = {k.removeprefix("BLOASIS_").lower(): v
                     for k, v in live.env(load_settings()).items()}  # fmt: skip
        overrides["universe"] = overrides.pop("market_data")
    else:
        if args.replay:
            overrides["replay_start"], overrides["replay_end"] = args.replay
        if args.replay_every:
            overrides["replay_interval_seconds"] = args.replay_every
    env = stack.up(state_dir, progress=lambda m: print(m, file=sys.stderr))
    settings = load_settings(**overrides)
    _migrate(settings)
    _ensure_demo_user(settings)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    extras = local.prefect_env(settings)
    if live is not None:
        local.prepare_live_replay(settings, live, say)
        extras |= live.env(settings)
    else:
        local.check_replay_state(settings)
    if settings.replay_start is not None:
        extras["BLOASIS_REPLAY_START"] = settings.replay_start.isoformat()
        if settings.replay_end is not None:
            extras["BLOASIS_REPLAY_END"] = settings.replay_end.isoformat()
    # Flow runs read these from the env file (the worker points them at this state dir).
    stack.write_env(state_dir, env | extras)
    if args.workers < 0:
        raise CliError(f"--workers must be >= 0, got {args.workers}")
    urls = local.up(settings, say, live, workers=args.workers)
    print()
    for name, url in urls.items():
        print(f"  {name:<12} {url}")
    print(f"\nUse it from a shell with: source {state_dir}/env   (then e.g. `bloasis status`)")
    if live is not None:
        print("Watch it: bloasis get watch   (and bloasis status, bloasis data status)")
    else:
        print("Run the pipeline now: prefect deployment run daily-pipeline/daily-pipeline")
    print("Stop everything with: make down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from bloasis import local

    stopped = local.down(load_settings())
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    return cmd_down(args)  # `make stop` after `make run`, or `make down` after `make up`


# --- status --------------------------------------------------------------------------------
def collect_status(settings: Settings) -> dict[str, Any]:
    """What runs, what is stored, what is served: each part answered separately, so one
    component down still leaves the rest of the report."""
    from bloasis import stack

    out: dict[str, Any] = {
        "services": [
            {
                "name": st.name,
                "running": st.running,
                "pid": st.pid,
                "url": st.url,
                "managed": st.managed,
            }
            for st in stack.status(settings.state_dir)
        ]
    }
    from bloasis import local

    out["local"] = local.status(settings)
    out["grpc"] = {"address": settings.grpc_address, "pid": local.serving_pid(settings)}
    if any(c["name"] == "prefect-server" and c["running"] for c in out["local"]):
        try:
            out["deployments"] = local.last_deployment_runs(settings)
        except Exception as exc:
            out["deployments"] = [{"error": str(exc).splitlines()[0][:200]}]
    try:
        from bloasis.serve import client

        reg = client.get_regime(settings.grpc_address, timeout=2)
        out["grpc"] |= {
            "serving": True,
            "served_as_of": reg.get("as_of"),
            "served_from": reg.get("served_from"),
        }
    except Exception as exc:
        first = str(exc).splitlines()[0][:200]
        # NOT_FOUND is an answer: the server is up, nothing is stored yet.
        out["grpc"] |= {"serving": "NOT_FOUND" in first, "served_as_of": None, "error": first}
    try:
        from sqlalchemy import text

        from bloasis.regime.model import resolve_model
        from bloasis.store import outbox
        from bloasis.store.db import get_engine
        from bloasis.store.regimes import latest_regime
        from bloasis.store.strategies import latest_strategy_as_of

        mv = resolve_model(
            settings.model_version, settings.universe, settings.regime_overrides
        ).version
        with get_engine(settings).connect() as conn:
            reg_row = latest_regime(conn, mv)
            runs = conn.execute(
                text(
                    "SELECT DISTINCT ON (flow) flow, status, as_of, started_at, finished_at, "
                    "result -> 'optimiser_fallbacks' AS fallbacks, "
                    "result -> 'user_keys_missing' AS keys_missing "
                    "FROM pipeline_runs ORDER BY flow, started_at DESC"
                )
            ).all()
            fresh: dict[str, Any] = {}
            if reg_row is not None:
                from bloasis.clock import market_now
                from bloasis.freshness import trading_age_seconds

                # The market's clock: the wall clock, or a live replay's provider's.
                age = trading_age_seconds(reg_row.as_of, market_now(settings))
                sla = settings.freshness_sla_seconds
                fresh = {"age_hours": round(age / 3600, 1), "sla_hours": round(sla / 3600, 1),
                         "breach": bool(sla) and age > sla}  # fmt: skip
            out["store"] = {
                "model_version": mv,
                "freshness": fresh,
                "latest_regime_as_of": reg_row.as_of.isoformat() if reg_row else None,
                "latest_regime_computed_at": reg_row.computed_at.isoformat() if reg_row else None,
                "latest_strategy_as_of": str(latest_strategy_as_of(conn, mv) or "") or None,
                "outbox_backlog": outbox.backlog(conn),
                "last_runs": [
                    {
                        "flow": r.flow,
                        "status": r.status,
                        "as_of": r.as_of.isoformat() if r.as_of else None,
                        "started_at": r.started_at.isoformat(),
                        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                        "optimiser_fallbacks": r.fallbacks or {},
                        "user_keys_missing": r.keys_missing or 0,
                    }
                    for r in runs
                ],
            }
    except Exception as exc:
        out["store"] = {"error": str(exc).splitlines()[0][:200]}
    if settings.universe in ("live", "database"):
        try:
            from bloasis.app.ingest import data_status

            report = data_status(settings)
            index = next((r for r in report["series"] if r["key"] == "^SPX"), None)
            out["market_data"] = {
                "source": settings.universe,
                "newest_complete_session": report["newest_complete_session"],
                "index_last": index["last"] if index else None,
                "index_source": index["source"] if index else None,
                "behind": index.get("behind") if index else None,
                "last_ingest": report["ingests"][0] if report["ingests"] else None,
            }
        except Exception as exc:
            out["market_data"] = {"error": str(exc).splitlines()[0][:200]}
    return out


def cmd_status(args: argparse.Namespace) -> int:
    report = collect_status(load_settings())
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for svc in report["services"]:
        state = "running" if svc["running"] else "DOWN"
        print(f"{svc['name']:<9} {state:<8} {svc['url'] or '-'}")
    for comp in report["local"]:
        state = "running" if comp["running"] else "DOWN"
        print(f"{comp['name']:<9} {state:<8} pid {comp['pid']}, log {comp['log']}")
    for d in report.get("deployments", []):
        if "error" in d:
            print(f"prefect   DOWN     {d['error']}")
            continue
        last = f"{d['run']} {d['state']} at {d['start']}" if d["run"] else "no run yet"
        print(f"deployment {d['deployment']:<16} last run: {last}")
    g = report["grpc"]
    if g.get("serving") and g.get("served_as_of") is None:
        print(f"grpc      serving  {g['address']} (nothing stored yet: run the pipeline)")
    elif g.get("serving"):
        print(f"grpc      serving  {g['address']} (as-of {g['served_as_of']}, {g['served_from']})")
    else:
        print(f"grpc      DOWN     {g['address']}: {g.get('error', '')}")
    st = report["store"]
    if "error" in st:
        print(f"store     DOWN     {st['error']}")
        return 0
    print(
        f"stored    regime {st['latest_regime_as_of']}"
        f" (computed {st['latest_regime_computed_at']}),"
        f" strategies {st['latest_strategy_as_of']}, outbox backlog {st['outbox_backlog']}"
    )
    if md := report.get("market_data"):
        if "error" in md:
            print(f"market    DOWN     {md['error']}")
        else:
            ing = md["last_ingest"] or {}
            print(
                f"market    {md['source']}: newest stored session {md['index_last']}"
                f" ({md['index_source']}), {md['behind']} behind the newest complete session"
                f" {md['newest_complete_session']}; last ingest {ing.get('status', 'none')}"
                + (f" ({str(ing.get('error'))[:120]})" if ing.get("error") else "")
            )
    if f := st.get("freshness"):
        verdict = "STALE (over the SLA)" if f["breach"] else "FRESH"
        print(
            f"freshness {verdict}: {f['age_hours']} trading hours since that session's close"
            f" (SLA {f['sla_hours'] or 'off'} h)"
        )
    for r in st["last_runs"]:
        print(
            f"last run  {r['flow']:<16} {r['status']:<10} as-of {r['as_of']} at {r['started_at']}"
        )
        for profile, why in r.get("optimiser_fallbacks", {}).items():
            print(
                f"  WARNING {profile}: volatility-targeted weights only, the optimiser fell "
                f"back ({why.get('kind')}): {why.get('note')}"
            )
        if missing := r.get("user_keys_missing"):
            print(
                f"  WARNING {missing} users' Redis keys were not written (Redis unavailable for "
                "their chunks): their reads use PostgreSQL until the next run"
            )
    return 0


# --- get -------------------------------------------------------------------------------------
def cmd_get(args: argparse.Namespace) -> int:
    from bloasis.serve import client

    settings = load_settings()
    address = args.address or settings.grpc_address
    auth = client.ClientAuth.from_settings(settings)  # BLOASIS_GRPC_TLS_CA, BLOASIS_GRPC_TOKEN
    if args.what == "regime":
        reg = client.get_regime(address, force_refresh=args.force_refresh, auth=auth)
        print(json.dumps(reg, indent=2, sort_keys=True) if args.json else client.format_regime(reg))
    elif args.what == "history":
        # No dates: the server's default, the year up to the current as-of.
        hist = client.get_history(address, args.start, args.end, auth=auth)
        print(json.dumps(hist, indent=2) if args.json else client.format_history(hist))
    elif args.what == "strategy":
        if bool(args.user) == bool(args.profile):
            raise CliError(
                "give exactly one of --user ID or --profile conservative|moderate|aggressive"
            )
        strat = client.get_strategy(
            address,
            user_id=args.user,
            risk_profile=args.profile,
            as_of=args.as_of,
            symbols=tuple(args.symbol or ()),
            auth=auth,
        )
        print(
            json.dumps(strat, indent=2, sort_keys=True)
            if args.json
            else client.format_strategy(strat)
        )
    elif args.what == "sectors":
        sec = client.get_sectors(address, as_of=args.as_of, auth=auth)
        print(
            json.dumps(sec, indent=2, sort_keys=True) if args.json else client.format_sectors(sec)
        )
    elif args.what == "watch":
        for update in client.watch(address, auth=auth):
            if args.json:
                print(json.dumps(update, sort_keys=True), flush=True)
            else:
                print(client.format_regime(update), "\n", flush=True)
    return 0


# --- bench -----------------------------------------------------------------------------------
def cmd_backtest(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from bloasis.app import backtest as app
    from bloasis.backtest import report

    settings = load_settings()
    try:
        cash = Decimal(args.initial_cash)
    except InvalidOperation:
        raise CliError(f"--initial-cash: not a number: {args.initial_cash!r}") from None
    req = app.BacktestRequest(
        start=args.start,
        end=args.end,
        profiles=tuple(args.profile or ()),
        user_ids=tuple(args.user or ()),
        rebalance=args.rebalance,
        commission=args.commission,
        slippage=args.slippage,
        initial_cash=cash,
        symbols=tuple(s.upper() for s in (args.symbols or ())),
    )
    _migrate(settings)

    def progress(label: str, done: int, total: int) -> None:
        if not args.json:
            print(f"\r{label}: {done}/{total} sessions", end="", file=sys.stderr, flush=True)

    out = app.run_backtest(req, settings=settings, progress=progress)
    if not args.json:
        print(file=sys.stderr)
    stored = out.stored
    if args.html or args.png:
        images, page = app.pictures(settings, stored)
        if args.html:
            Path(args.html).write_text(page)
        if args.png:
            base = Path(args.png)
            base.mkdir(parents=True, exist_ok=True)
            for name, data in images.items():
                (base / f"{name}.png").write_bytes(data)
    if args.json:
        doc = {
            "backtest_id": str(stored.id),
            "found": out.found,
            "model_version": stored.model_version,
            "data_snapshot_hash": stored.data_snapshot_hash,
            "spec": stored.spec,
            "summary": stored.summary,
            "report": {k: v for k, v in stored.report.items() if k != "regimes"},
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    names = stored.names
    found = " (found: same inputs as an earlier run, not recomputed)" if out.found else ""
    print(f"backtest {stored.id}{found}")
    print(
        f"{stored.report.get('start')} to {stored.report.get('end')}, "
        f"{stored.spec.get('rebalance')} rebalancing, model {stored.model_version}"
    )
    print(stored.report.get("execution", ""))
    print(report.markdown_table(stored.summary, names))
    for title, rows in report.sample_sections(stored.report, names):
        print(f"\n{title}")
        print(report.markdown_table(rows, names))
    for note in stored.report.get("notes", []):
        print(f"- {note}")
    if args.html:
        print(f"report: {args.html}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    # The suite lives next to the package (a source checkout), not inside it.
    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "suite.py").is_file():
        raise CliError(f"no benchmark suite at {root / 'bench'}: run from a source checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.common import emit
    from bench.suite import REGISTRY, run

    if args.list:
        print("\n".join(REGISTRY))
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        raise CliError(f"unknown benchmark {', '.join(unknown)}; see bloasis bench --list")
    entries = run(args.names, args.size)
    if args.json:
        emit(entries)
    else:
        for e in entries:
            ratio = "" if e.get("ratio") is None else f"  ratio {e['ratio']}"
            met = {True: "met", False: "MISSED", None: ""}[e.get("met")]
            print(f"{e['name']:32} {e['value']} {e['unit']}{ratio}  {e['target']}  {met}".rstrip())
    return 0 if all(e.get("met") is not False for e in entries) else 1


# --- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bloasis",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--verbose", action="store_true", help="print tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stack", help="embedded PostgreSQL, Redis and Kafka broker")
    ss = s.add_subparsers(dest="action", required=True)
    ss.add_parser("up", help="start what is not configured; idempotent")
    ss.add_parser("down", help="stop what `up` started")
    ss.add_parser("status", help="what runs where")
    for action in ("stop", "start"):
        one = ss.add_parser(action, help=f"{action} one embedded service")
        one.add_argument("service", choices=("postgres", "redis", "kafka"))
    s.set_defaults(func=cmd_stack)

    d = sub.add_parser("db", help="schema migrations")
    d.add_argument("action", choices=("upgrade", "current"))
    d.set_defaults(func=cmd_db)

    r = sub.add_parser("run", help="run the pipeline once (Prefect flow)")
    r.add_argument("--as-of", type=_iso_date, default=None, help="YYYY-MM-DD (default: latest)")
    r.add_argument("--trigger", default="manual", choices=("baseline", "manual"))
    r.add_argument("--no-relay", action="store_true", help="leave events in the outbox")
    r.add_argument(
        "--history-days",
        type=int,
        default=0,
        help="first store missing sessions of this many days before the as-of date",
    )
    r.add_argument("--json", action="store_true", help="print the result as one JSON object")
    r.add_argument("--regime-only", action="store_true", help="skip sectors and strategies")
    r.add_argument("--users", nargs="+", default=None, help="recompute only these users now")
    r.add_argument(
        "--universe",
        default=None,
        help="embedded (default), file:PATH, parquet:DIR or synthetic:N[:seed[:years]]",
    )
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("backfill", help="regime for every session in a range, with validation")
    b.add_argument("--start", type=_iso_date, default=None, help="default: first session")
    b.add_argument("--end", type=_iso_date, default=None, help="default: last session")
    b.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    b.add_argument("--json", action="store_true", help="print the per-day results as JSON")
    b.add_argument("--chunk-size", type=int, default=1000, help="sessions per transaction")
    b.add_argument(
        "--model",
        default=None,
        help="regime-v2, regime-v3, both comma-separated, or `all` (default: the served model,"
        " BLOASIS_MODEL_VERSION); another model is stored under its own version only",
    )
    b.set_defaults(func=cmd_backfill)

    rg = sub.add_parser("regime", help="regime model evaluation")
    rgs = rg.add_subparsers(dest="action", required=True)
    rgc = rgs.add_parser(
        "compare",
        help="regime-v2, regime-v3, a statistical jump model and a filtered HMM against the"
        " ex-post bull/bear dating (in and out of sample), with a chart",
    )
    rgc.add_argument("--start", type=_iso_date, default=None, help="default: first common session")
    rgc.add_argument("--end", type=_iso_date, default=None, help="default: last session")
    rgc.add_argument("--jump-penalty", type=float, default=50.0, help="the jump model's lambda")
    rgc.add_argument("--cost-bp", type=float, default=10.0, help="cost of a stock/cash switch")
    rgc.add_argument("--chart", type=Path, default=None, help="PNG path (default: state dir)")
    rgc.add_argument("--no-chart", action="store_true", help="skip the chart")
    rgc.add_argument(
        "--walk-forward",
        action="store_true",
        help="also re-select regime-v3's thresholds every January on the years before (~1 min)",
    )
    rgc.add_argument("--out", type=Path, default=None, help="write the JSON document here")
    rgc.add_argument("--json", action="store_true", help="print the JSON document")
    rg.set_defaults(func=cmd_regime)

    u = sub.add_parser("users", help="user preferences")
    us = u.add_subparsers(dest="action", required=True)
    ua = us.add_parser("add", help="create or update a user's preferences")
    ua.add_argument("user_id")
    ua.add_argument("--profile", default="moderate")
    ua.add_argument("--prefer", action="append", help="preferred GICS sector (repeatable)")
    ua.add_argument("--exclude", action="append", help="excluded GICS sector (repeatable)")
    ua.add_argument("--max-position", default="0.10", help="largest single position, (0, 1]")
    ul = us.add_parser("list", help="list users")
    ul.add_argument("--limit", type=int, default=50)
    use = us.add_parser("seed", help="create a seeded random population (scale runs)")
    use.add_argument("count", type=int)
    use.add_argument("--seed", type=int, default=0)
    use.add_argument("--prefix", default="u")
    u.set_defaults(func=cmd_users)

    rl = sub.add_parser("relay", help="publish pending outbox events to Kafka (loops; --once)")
    rl.add_argument("--once", action="store_true", help="publish what is pending and exit")
    rl.add_argument("--max-events", type=int, default=None, help="at most this many per pass")
    rl.add_argument(
        "--interval", type=float, default=5.0, help="seconds between passes (without --once)"
    )
    rl.set_defaults(func=cmd_relay)

    da = sub.add_parser(
        "data", help="market data: live ingest, its store's status, universes, bars stores"
    )
    das = da.add_subparsers(dest="action", required=True)
    dai = das.add_parser("import", help="write a universe as a Parquet bars store")
    dai.add_argument(
        "--universe",
        default=None,
        help="what to import: embedded, file:PATH or synthetic:N[:seed[:years]] "
        "(default BLOASIS_MARKET_DATA)",
    )
    dai.add_argument("--out", type=Path, required=True, help="store directory (created)")
    dai.add_argument("--quarantine", action="store_true", help="drop bad rows with a warning")
    dig = das.add_parser("ingest", help="fetch new sessions from the live providers (FRED, Yahoo)")
    dig.add_argument(
        "--since", type=_iso_date, default=None, help="fetch from this date (default: incremental)"
    )
    dig.add_argument("--provider", choices=("fred", "yahoo"), default=None, help="only this one")
    dig.add_argument("--json", action="store_true", help="the ingest summary as JSON")
    dst = das.add_parser("status", help="per series: last session, source, first seen, lag")
    dst.add_argument("--all", action="store_true", help="every stock, not only a summary")
    dst.add_argument("--json", action="store_true")
    dun = das.add_parser("universe", help="the live universe in force (BLOASIS_LIVE_UNIVERSE)")
    dun.add_argument("--universe", default=None, help="sp500, current20 or file:PATH instead")
    dse = das.add_parser("seed", help="load the embedded history into the store (first vintage)")
    dse.add_argument("--through", type=_iso_date, default=None, help="only up to this date")
    da.set_defaults(func=cmd_data)

    t = sub.add_parser("topics", help="list (and create) the Kafka topics")
    t.add_argument("--ensure", action="store_true", help="create missing topics first")
    t.set_defaults(func=cmd_topics)

    c = sub.add_parser("cache", help="list the Redis keys with their TTLs")
    c.add_argument("pattern", nargs="?", default="*")
    c.add_argument("--show", action="store_true", help="print the values too")
    c.set_defaults(func=cmd_cache)

    sv = sub.add_parser("serve", help="run the gRPC server")
    sv.add_argument("--address", default=None, help="host:port (default BLOASIS_GRPC_ADDRESS)")
    sv.add_argument("--background", action="store_true", help="start detached, wait until ready")
    sv.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="N server processes sharing the port, SO_REUSEPORT (BLOASIS_GRPC_PROCESSES, 1)",
    )
    sv.set_defaults(func=cmd_serve)

    up = sub.add_parser(
        "up", help="local deployment: stack, Prefect server + UI, deployments, worker, gRPC"
    )
    up.add_argument(
        "--replay",
        type=_replay_span,
        default=None,
        metavar="START[:END]",
        help="walk history one trading day per scheduled run (BLOASIS_REPLAY_START/END)",
    )
    up.add_argument(
        "--replay-every",
        type=int,
        default=None,
        metavar="SECONDS",
        help="seconds between replay runs (BLOASIS_REPLAY_INTERVAL_SECONDS, default 30); with"
        " --live replay, between sessions the provider publishes (default 15)",
    )
    up.add_argument(
        "--live",
        choices=("replay",),
        default=None,
        help="replay: live market data from a local provider (FRED and Yahoo formats) that"
        " publishes the --replay span one session at a time; ingest and pipeline pick it up",
    )
    up.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="a Dask cluster (one scheduler, N worker processes) takes the flows' user fan-out"
        " (BLOASIS_TASK_RUNNER=dask, BLOASIS_DASK_ADDRESS)",
    )
    up.set_defaults(func=cmd_up)
    dn = sub.add_parser("down", help="stop everything `up` started (worker, Prefect, gRPC, stack)")
    dn.set_defaults(func=cmd_down)

    st = sub.add_parser("stop", help="stop the background gRPC server and the embedded stack")
    st.set_defaults(func=cmd_stop)

    stt = sub.add_parser("status", help="components, last runs, freshness, backlog, served as-of")
    stt.add_argument("--json", action="store_true")
    stt.set_defaults(func=cmd_status)

    g = sub.add_parser("get", help="read over gRPC")
    g.add_argument("what", choices=("regime", "history", "watch", "strategy", "sectors"))
    g.add_argument("--profile", choices=("conservative", "moderate", "aggressive"), default=None)
    g.add_argument("--user", default=None, help="user id (strategy)")
    g.add_argument("--as-of", type=_iso_date, default=None, help="default: the latest stored")
    g.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    g.add_argument("--address", default=None)
    g.add_argument("--start", type=_iso_date, default=None)
    g.add_argument("--end", type=_iso_date, default=None)
    g.add_argument("--force-refresh", action="store_true")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_get)

    bt = sub.add_parser("backtest", help="replay the strategies over a date range, with costs")
    bt.add_argument(
        "--profile",
        action="append",
        default=None,
        choices=("conservative", "moderate", "aggressive"),
        help="a risk profile (repeat for several; default: all three)",
    )
    bt.add_argument("--user", action="append", default=None, help="a user's id (repeatable)")
    bt.add_argument("--start", type=_iso_date, required=True)
    bt.add_argument("--end", type=_iso_date, required=True)
    bt.add_argument("--rebalance", choices=("daily", "weekly", "monthly"), default="weekly")
    bt.add_argument(
        "--commission",
        type=float,
        default=0.0005,
        help="fraction of the traded value (default 0.0005 = 5 bp)",
    )
    bt.add_argument("--slippage", type=float, default=0.0005, help="fraction (default 5 bp)")
    bt.add_argument("--initial-cash", default="100000")
    bt.add_argument("--symbols", nargs="*", default=None, help="a subset of the universe")
    bt.add_argument("--json", action="store_true")
    bt.add_argument("--html", default=None, help="write the report (charts inlined) here")
    bt.add_argument("--png", default=None, help="write the charts as PNG files in this folder")
    bt.set_defaults(func=cmd_backtest)  # fmt: skip

    bn = sub.add_parser("bench", help="issue 7's benchmarks (private embedded stacks), as JSON")
    bn.add_argument("names", nargs="*", help="default: all (see --list)")
    bn_size = bn.add_mutually_exclusive_group()
    bn_size.add_argument("--quick", dest="size", action="store_const", const="quick")
    bn_size.add_argument("--tiny", dest="size", action="store_const", const="tiny")
    bn.set_defaults(size="full")
    bn.add_argument("--list", action="store_true", help="print the benchmark names")
    bn.add_argument("--json", action="store_true", help="the bench JSON document on stdout")
    bn.set_defaults(func=cmd_bench)
    for name, sp in sub.choices.items():
        sp.formatter_class = argparse.RawDescriptionHelpFormatter
        sp.epilog = "examples:\n" + "\n".join(
            f"  {line}" for line in EXAMPLES.get(name, "").splitlines()
        )
    return p


EXAMPLES: dict[str, str] = {
    "stack": "bloasis stack up\nbloasis stack status\n"
    "bloasis stack stop kafka && bloasis stack start kafka",
    "db": "bloasis db upgrade\nbloasis db current",
    "data": "bloasis data ingest\nbloasis data ingest --since 2022-12-01 --provider yahoo\n"
    "bloasis data status\nbloasis data universe\nbloasis data seed --through 2022-10-31\n"
    "bloasis data import --universe synthetic:5000:7:10 --out bars\n"
    "bloasis data import --universe file:bars.csv.gz --out bars --quarantine",
    "run": "bloasis run\nbloasis run --as-of 2008-10-15 --json\nbloasis run --history-days 365\n"
    "bloasis run --users test u00042\nbloasis run --regime-only\n"
    "bloasis run --universe synthetic:500:7",
    "backfill": "bloasis backfill --start 1990-01-02 --end 2022-12-28 --out report.json\n"
    "bloasis backfill --start 2020-01-02 --end 2020-06-30 --json > days.json\n"
    "bloasis backfill --model regime-v2,regime-v3",
    "regime": "bloasis regime compare\nbloasis regime compare --out comparison.json"
    " --chart comparison.png\nbloasis regime compare --walk-forward --json > comparison.json",
    "users": "bloasis users add alice --profile conservative --exclude Energy --max-position 0.08\n"
    "bloasis users list\nbloasis users seed 100000 --seed 1",
    "relay": "bloasis relay --once\nbloasis relay --interval 2",
    "topics": "bloasis topics --ensure",
    "cache": "bloasis cache\nbloasis cache 'strategy:*' --show",
    "serve": "bloasis serve\nbloasis serve --background --address 127.0.0.1:50051\n"
    "bloasis serve --processes 2",
    "up": "bloasis up\nbloasis up --workers 2\n"
    "bloasis up --replay 2007-06-01:2009-06-30 --replay-every 20\n"
    "bloasis up --live replay --replay 2022-11-01:2022-12-28 --replay-every 15",
    "down": "bloasis down",
    "stop": "bloasis stop",
    "status": "bloasis status\nbloasis status --json",
    "get": "bloasis get regime\nbloasis get history --start 2020-02-01 --end 2020-04-30\n"
    "bloasis get watch\nbloasis get sectors\nbloasis get strategy --user test\n"
    "bloasis get strategy --profile conservative --as-of 2008-10-15 --json",
    "backtest": "bloasis backtest --profile moderate --start 2000-01-03 --end 2022-12-28\n"
    "bloasis backtest --start 2000-01-03 --end 2022-12-28 --html report.html\n"
    "bloasis backtest --user test --start 2012-01-03 --end 2022-12-28 --rebalance monthly --json",
    "bench": "bloasis bench --list\nbloasis bench relay_throughput --quick --json\n"
    "bloasis bench grpc_regime_vs_floor freshness_p99 --json > bench.json",
}
EXIT_CODES = (
    "exit codes: 0 done; 1 an error you can act on (one line on stderr); 2 bad usage;\n"
    "3 an unexpected error (rerun with --verbose for the traceback); 130 interrupted"
)


def _configure_logging() -> None:
    """The one place logging is set up (BLOASIS_LOG_LEVEL, BLOASIS_LOG_FORMAT), before Prefect is
    imported so Prefect keeps this handler; in a flow, JSON lines carry the run id."""
    from bloasis.logs import configure_logging

    try:
        settings = load_settings()
    except SettingsError:  # reported by the command that needs the settings, if any
        configure_logging()
        return
    configure_logging(settings.log_level, settings.log_format)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _configure_logging()
        return func(args)
    except (SettingsError, CliError) as exc:
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from bloasis.errors import describe

        if args.verbose:
            import traceback

            traceback.print_exc()
        msg = describe(exc)
        if msg is not None:
            _err(msg)
            return 1
        _err(f"unexpected error: {type(exc).__name__}: {exc}"[:500])
        if not args.verbose:
            _err("rerun with --verbose for the details")
        return 3


if __name__ == "__main__":
    sys.exit(main())
