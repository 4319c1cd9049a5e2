"""The JSON shape every benchmark prints, and facts about the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


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
    **extra: Any,
) -> dict[str, Any]:
    ratio = (baseline_value / value) if baseline_value and value else None
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


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
