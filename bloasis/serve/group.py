"""`bloasis serve --processes N`: N server processes sharing one port (SO_REUSEPORT).

A Python process serves from one core at a time (the GIL); with the port shared, the kernel
spreads new connections over the processes bound to it. Each process is a whole `bloasis
serve`: its own snapshots kept fresh by LISTEN/NOTIFY, health service and metrics endpoint
(BLOASIS_METRICS_PORT + i). This parent only supervises: it forwards SIGTERM/SIGINT, and when
one process dies it stops the others and exits 1, so whatever supervises it (systemd,
Kubernetes, `bloasis up`) restarts the group whole.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Final

from bloasis.config import Settings, SettingsError

READY_MARK: Final = "serving gRPC on "
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0


class GroupError(RuntimeError):
    """A process of the group failed to start or died."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def metrics_ports(settings: Settings) -> list[int]:
    """The metrics port of each process (none when BLOASIS_METRICS_PORT is 0)."""
    if not settings.metrics_port:
        return []
    ports = [settings.metrics_port + i for i in range(settings.grpc_processes)]
    if settings.relay_metrics_port in ports or ports[-1] >= 65536:
        raise SettingsError(
            f"BLOASIS_GRPC_PROCESSES={settings.grpc_processes} needs metrics ports "
            f"{ports[0]}..{ports[-1]} (BLOASIS_METRICS_PORT + i), which must stay below 65536 "
            f"and not include BLOASIS_RELAY_METRICS_PORT={settings.relay_metrics_port}"
        )
    return ports


def _die_with_parent() -> None:
    # Linux: a child gets SIGTERM when this supervisor dies, even by SIGKILL (no orphans left
    # holding the port).
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _relay_lines(index: int, stream: IO[str], ready: threading.Event) -> None:
    """Copy a child's stderr to ours, prefixed; note its "serving gRPC on" line."""
    for line in stream:
        if READY_MARK in line:
            ready.set()
        sys.stderr.write(f"[serve {index}] {line}")
        sys.stderr.flush()


def serve_group(settings: Settings, ready: Callable[[str], None]) -> int:
    """Run the group until SIGTERM/SIGINT (0) or until one process dies (1)."""
    host, _, port = settings.grpc_address.rpartition(":")
    address = f"{host}:{int(port) or _free_port(host)}"
    ports = metrics_ports(settings)
    procs: list[subprocess.Popen[str]] = []
    started: list[threading.Event] = []
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        for i in range(settings.grpc_processes):
            env = os.environ | {
                "BLOASIS_GRPC_ADDRESS": address,
                "BLOASIS_GRPC_PROCESSES": "1",
                "BLOASIS_GRPC_REUSEPORT": "true",
                "BLOASIS_METRICS_PORT": str(ports[i] if ports else 0),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bloasis.cli", "serve"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    # All forks before the first thread starts (preexec_fn and threads mix badly).
                    preexec_fn=_die_with_parent,
                )
            )
        for i, proc in enumerate(procs):
            started.append(threading.Event())
            assert proc.stderr is not None
            threading.Thread(
                target=_relay_lines, args=(i, proc.stderr, started[-1]), daemon=True
            ).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(e.is_set() for e in started):
            _check_alive(procs, "while starting")
            if stop.is_set():
                return 0
            if time.monotonic() > deadline:
                raise GroupError(f"not every process served within {START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)
        ready(address)
        while not stop.wait(0.2):
            _check_alive(procs, "")
        return 0
    finally:
        _stop_all(procs)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_alive(procs: list[subprocess.Popen[str]], when: str) -> None:
    for i, p in enumerate(procs):
        if p.poll() is not None:
            raise GroupError(
                f"serve process {i} (pid {p.pid}) exited with status {p.returncode}"
                f"{' ' + when if when else ''}; stopping the group"
            )


def _stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
