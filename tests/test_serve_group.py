"""`bloasis serve --processes N`: processes sharing one port (SO_REUSEPORT), each answering calls,
stopped together by SIGTERM, and the group stopped (exit 1) when one of them dies."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import date
from pathlib import Path

import grpc
import psutil
import pytest

from bloasis import stack
from bloasis.config import Settings, SettingsError, load_settings
from bloasis.metrics import iter_samples
from bloasis.pb.v2 import market_regime_pb2 as mr_pb
from bloasis.pb.v2 import market_regime_pb2_grpc as mr_grpc
from bloasis.serve.group import metrics_ports
from bloasis.serve.server import MARKET_REGIME_SERVICE_NAME
from tests.test_grpc import _seed, _settings
from tests.test_observability import _free_port

ROOT = Path(__file__).resolve().parents[1]
GET_CURRENT = f"{MARKET_REGIME_SERVICE_NAME}/GetCurrentRegime"
CHANNELS = 24  # new connections: the kernel spreads them over the processes


class Group:
    """A `bloasis serve --processes 2` child, its stderr collected by a thread."""

    def __init__(self, s: Settings, state_dir: Path, metrics_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")} | {
            "BLOASIS_DATABASE_URL": s.require("database_url"),
            "BLOASIS_REDIS_URL": s.require("redis_url"),
            "BLOASIS_MODEL_VERSION": s.model_version,
            "BLOASIS_STATE_DIR": str(state_dir),
            "BLOASIS_METRICS_PORT": str(metrics_port),
            "BLOASIS_RELAY_METRICS_PORT": str(_free_port()),
        }
        cmd = [sys.executable, "-m", "bloasis.cli", "serve", "--processes", "2"]
        self.proc = subprocess.Popen(
            [*cmd, "--address", "127.0.0.1:0"],
            env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def address(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                m = re.search(r"serving gRPC on (\S+) \(2 processes", line)
                if m:
                    return m.group(1)
            assert self.proc.poll() is None, "".join(self.lines)[-3000:]
            time.sleep(0.05)
        raise AssertionError("the group did not serve:\n" + "".join(self.lines)[-3000:])

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for child in self.children() if self.proc.poll() is None else []:
            child.kill()


async def _calls(address: str) -> list[str]:
    as_ofs = []
    for _ in range(CHANNELS):
        async with grpc.aio.insecure_channel(address) as ch:
            resp = await mr_grpc.MarketRegimeServiceStub(ch).GetCurrentRegime(
                mr_pb.GetCurrentRegimeRequest(), timeout=10
            )
            as_ofs.append(resp.regime.as_of)
    return as_ofs


def _served(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        v
        for name, labels, v in iter_samples(text)
        if name == "bloasis_grpc_requests_total" and labels.get("method") == GET_CURRENT
    )


def _gone(pids: list[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_processes_share_the_port_and_stop_together(
    stack_settings: Settings, tmp_path: Path
) -> None:
    s = _settings(stack_settings)
    asyncio.run(_seed(s, [(date(2024, 1, 2), "bull")]))
    metrics = _free_port()
    while not stack._port_free(metrics + 1):  # the second process's metrics port too
        metrics = _free_port()
    group = Group(s, tmp_path, metrics)
    try:
        address = group.address()
        port = int(address.rpartition(":")[2])
        children = group.children()
        assert len(children) == 2
        for child in children:  # each process listens on the same port itself
            assert any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in child.net_connections("tcp")
            ), child.pid
        assert asyncio.run(_calls(address)) == ["2024-01-02"] * CHANNELS
        served = [_served(metrics), _served(metrics + 1)]
        assert sum(served) == CHANNELS and min(served) > 0, served  # both processes answered
        group.proc.send_signal(signal.SIGTERM)
        assert group.proc.wait(timeout=30) == 0
        assert _gone([c.pid for c in children])
    finally:
        group.close()


def test_the_group_stops_when_one_process_dies(stack_settings: Settings, tmp_path: Path) -> None:
    s = _settings(stack_settings)
    asyncio.run(_seed(s, [(date(2024, 1, 2), "bull")]))
    group = Group(s, tmp_path, 0)
    try:
        group.address()
        first, second = group.children()
        first.kill()
        assert group.proc.wait(timeout=30) == 1
        out = "".join(group.lines)
        assert f"serve process 0 (pid {first.pid}) exited" in out and "Traceback" not in out
        assert _gone([second.pid])
    finally:
        group.close()


def test_metrics_ports_of_a_group_are_checked() -> None:
    ok = load_settings(grpc_processes=3, metrics_port=9000, relay_metrics_port=9100)
    assert metrics_ports(ok) == [9000, 9001, 9002]
    assert metrics_ports(load_settings(grpc_processes=3, metrics_port=0)) == []
    clash = load_settings(grpc_processes=3, metrics_port=9464, relay_metrics_port=9465)
    with pytest.raises(SettingsError, match="BLOASIS_RELAY_METRICS_PORT=9465"):
        metrics_ports(clash)


def test_a_group_whose_processes_fail_at_start_exits_with_one_line(
    stack_settings: Settings, tmp_path: Path
) -> None:
    # A bad token entry makes each process refuse to start: the group says so and exits 1.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")} | {
        "BLOASIS_DATABASE_URL": stack_settings.require("database_url"),
        "BLOASIS_STATE_DIR": str(tmp_path),
        "BLOASIS_METRICS_PORT": "0",
        "BLOASIS_GRPC_TOKENS": "sometoken root",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bloasis.cli", "serve", "--processes", "2",
         "--address", "127.0.0.1:0"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bloasis: gRPC server group: serve process"), last
    assert "while starting" in last
    assert "BLOASIS_GRPC_TOKENS: entry 1" in proc.stderr  # the child's own reason, relayed
    assert "Traceback" not in proc.stderr
