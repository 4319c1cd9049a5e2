"""The JSON shape every benchmark prints, and facts about the machine it ran on."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bloasis.config import Settings


ROOT = Path(__file__).resolve().parent.parent  # the project: bench children import from it


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Median wall time over `repeat` calls, and the last result."""
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def entry(
    name: str,
    value: float,
    unit: str,
    *,
    compared_to: str = "",
    baseline_value: float | None = None,
    target: str = "",
    met: bool | None = None,
    higher_is_better: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """`ratio` is the product's advantage over the baseline: baseline/value for times (lower is
    better), value/baseline for throughputs (`higher_is_better`)."""
    ratio = None
    if baseline_value and value:
        ratio = value / baseline_value if higher_is_better else baseline_value / value
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "compared_to": compared_to,
        "baseline_value": None if baseline_value is None else round(baseline_value, 4),
        "ratio": None if ratio is None else round(ratio, 2),
        "target": target,
        "met": met,
        **extra,
    }


class PeakRss:
    """Samples the RSS of processes every 0.2 s; the peak of each, MB. A name's RSS is its
    process with its children (a Dask worker's nanny and worker, PostgreSQL's postmaster and
    backends summed), except the names in `alone`; `largest` reports the largest single
    process of the tree instead (PostgreSQL's backends are separate processes)."""

    def __init__(
        self,
        pids: dict[str, int],
        *,
        alone: set[str] | None = None,
        largest: set[str] | None = None,
    ) -> None:
        self.pids = pids
        self.alone = alone or set()
        self.largest = largest or set()
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, name: str, pid: int) -> float:
        import psutil

        try:
            p = psutil.Process(pid)
            procs = [p] if name in self.alone else [p, *p.children(recursive=True)]
            sizes = []
            for q in procs:
                with contextlib.suppress(psutil.Error):
                    sizes.append(q.memory_info().rss)
            return (max(sizes, default=0) if name in self.largest else sum(sizes)) / 2**20
        except psutil.Error:
            return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], self._rss(name, pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def child_env(state_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a bench's child process: this one's without its BLOASIS_/PREFECT_
    settings, then `extra` (a Prefect server's, settings of the run), reading the embedded stack
    of `state_dir` (its env file, through `load_settings`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLOASIS_", "PREFECT_"))}
    return (
        env
        | extra
        | {
            "BLOASIS_STATE_DIR": str(state_dir),
            "PYTHONPATH": str(ROOT),
            "GRPC_ENABLE_FORK_SUPPORT": "0",
        }
    )


def emit(benchmarks: list[dict[str, Any]]) -> None:
    json.dump({"machine": machine(), "benchmarks": benchmarks}, sys.stdout, indent=2)
    sys.stdout.write("\n")


def size_main(doc: str | None, sizes: Iterable[str], run: Callable[[str], list[Any]]) -> None:
    """The command line of a bench module whose only option is its size: the JSON on stdout."""
    import argparse

    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--size", choices=tuple(sizes), default="full")
    emit(run(ap.parse_args().size))


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def bench_stack(settings: Settings | None = None) -> Iterator[Settings]:
    """`settings` as given (tests pass the session stack's), or a private embedded stack in a
    temporary state dir, migrated, stopped on exit (never the developer's .bloasis)."""
    if settings is not None:
        yield settings
        return
    from bloasis import stack
    from bloasis.config import load_settings
    from bloasis.store.db import upgrade

    with tempfile.TemporaryDirectory(prefix="bloasis-bench-") as tmp:
        state = Path(tmp)
        try:
            stack.up(state)
            own = load_settings(state_dir=state)
            upgrade(own.require("database_url"))
            yield own
        finally:
            stack.down(state)
