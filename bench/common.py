"""The JSON shape every benchmark prints, and facts about the machine it ran on."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bloasis.config import Settings


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
