"""A real Dask cluster on this machine: one `dask scheduler` and N `dask worker` processes,
started separately (as they run on several machines), addressed by BLOASIS_DASK_ADDRESS.

The workers start in their own empty directories, not the project's: what a task needs
reaches them as its arguments (books, preferences, market data), and the code is the installed
`bloasis` package, as on a machine of its own. `bloasis up --workers N` (`make up WORKERS=N`)
starts one; `bloasis down` stops it. Each process is recorded (pid, start time, log) like the
other local processes, so only those are stopped.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bloasis import stack

HOST = stack.HOST
SCHEDULER = "dask-scheduler"
START_TIMEOUT = 60.0


class ClusterError(RuntimeError):
    pass


def _dask_bin() -> str:
    found = Path(sys.executable).with_name("dask")
    if found.exists():
        return str(found)
    which = shutil.which("dask")
    if which is None:
        raise ClusterError("the `dask` command is not installed (pip install distributed)")
    return which


def worker_names(n: int) -> list[str]:
    return [f"dask-worker-{i}" for i in range(1, n + 1)]


def _spawn(
    state_dir: Path, name: str, cmd: list[str], env: dict[str, str] | None
) -> dict[str, Any]:
    cwd = state_dir / "dask" / name  # empty: nothing is read from a working directory
    cwd.mkdir(parents=True, exist_ok=True)
    try:
        return stack.spawn_recorded(cmd, state_dir / f"{name}.log", cwd, env)
    except stack.StackError as exc:
        raise ClusterError(str(exc)) from exc


def start_scheduler(state_dir: Path, port: int | None = None) -> tuple[str, dict[str, Any]]:
    port = port or stack._pick_port(set())
    cmd = [_dask_bin(), "scheduler", "--host", HOST, "--port", str(port),
           "--dashboard-address", ":0", "--no-show"]  # fmt: skip
    return f"tcp://{HOST}:{port}", _spawn(state_dir, SCHEDULER, cmd, None)


def start_worker(
    state_dir: Path, address: str, name: str, *, memory_limit: str = "2GiB"
) -> dict[str, Any]:
    """One worker (under its nanny, which restarts it past `memory_limit`), one thread: the
    tasks are CPU-bound numpy, so processes, not threads, use the cores."""
    work = state_dir / "dask" / name
    cmd = [_dask_bin(), "worker", address, "--name", name, "--nthreads", "1", "--nworkers", "1",
           "--memory-limit", memory_limit, "--local-directory", str(work / "spill"),
           "--dashboard-address", ":0"]  # fmt: skip
    return _spawn(state_dir, name, cmd, None)


def wait_for_workers(address: str, n: int, timeout: float = START_TIMEOUT) -> list[str]:
    """Block until the scheduler at `address` has `n` workers; their addresses."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout)
            return sorted(client.scheduler_info()["workers"])
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"the Dask cluster at {address} did not get {n} workers: {exc}") from exc


def start(
    state_dir: Path, workers: int, say: Callable[[str], None] = lambda _m: None
) -> tuple[str, dict[str, dict[str, Any]]]:
    """A scheduler and `workers` workers; (address, records by name)."""
    if workers < 1:
        raise ClusterError(f"a cluster needs at least 1 worker, got {workers}")
    address, rec = start_scheduler(state_dir)
    records = {SCHEDULER: rec}
    say(f"dask scheduler: started on {address} (pid {rec['pid']})")
    for name in worker_names(workers):
        records[name] = start_worker(state_dir, address, name)
        say(f"{name}: started (pid {records[name]['pid']})")
    wait_for_workers(address, workers)
    say(f"dask cluster: {workers} workers connected")
    return address, records


def stop(records: dict[str, Any]) -> list[str]:
    """Stop the cluster's recorded processes (removed from `records`): workers first (they
    would reconnect), then the scheduler. Returns the names stopped."""
    stopped = []
    for name in [*sorted(n for n in records if n.startswith("dask-worker-")), SCHEDULER]:
        rec = records.pop(name, None)
        if rec is not None and stack.stop_recorded(rec):
            stopped.append(name)
    return stopped
