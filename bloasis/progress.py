"""Progress of long work, reported to whoever listens (a terminal bar, a Prefect artifact).

Domain code calls `report(stage, done, total)`; front ends `listen(...)` for the duration of a
command. Process-wide on purpose: Prefect may run a task in another thread than the caller.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Listener = Callable[[str, int, int], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def report(stage: str, done: int, total: int) -> None:
    with _lock:
        listeners = list(_listeners)
    for fn in listeners:
        fn(stage, done, total)


@contextmanager
def listen(fn: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(fn)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(fn)


class TerminalBar:
    """A one-line bar on a terminal; on a pipe or file, a line every 10%."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._t0: dict[str, float] = {}
        self._last_decile: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        now = time.perf_counter()
        elapsed = now - self._t0.setdefault(stage, now)
        if self.tty:
            fill = int(frac * self.width)
            bar = "#" * fill + "-" * (self.width - fill)
            end = "\n" if done >= total else ""
            self.stream.write(
                f"\r{stage:<10} [{bar}] {done:>6}/{total} {frac:6.1%} {elapsed:6.1f}s{end}"
            )
            self.stream.flush()
            return
        decile = int(frac * 10)
        if self._last_decile.get(stage) != decile:
            self._last_decile[stage] = decile
            self.stream.write(f"{stage}: {done}/{total} ({frac:.0%}, {elapsed:.1f}s)\n")
            self.stream.flush()
