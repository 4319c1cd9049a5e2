"""The embedded stack against real servers: up/down/status, one-service stop/start, env file."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psutil
import psycopg
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bloasis import stack
from bloasis.config import load_settings

ENV_NAMES = [*stack.ENV_VARS.values(), stack.IDEMPOTENCE_VAR, stack.STATE_DIR_VAR]


@pytest.fixture(scope="module")
def clean_env() -> Iterator[pytest.MonkeyPatch]:
    # a developer may have sourced .bloasis/env: that must not leak into these stacks
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV_NAMES:
            mp.delenv(name, raising=False)
        yield mp


@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory, clean_env: pytest.MonkeyPatch
) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("stack")
    try:
        stack.up(state_dir)
        yield state_dir
    finally:
        stack.down(state_dir)


def _env(state_dir: Path) -> dict[str, str]:
    return {s.name: s.url or "" for s in stack.status(state_dir)}


def _same_process_alive(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - create_time) < 1e-3 and proc.status() != "zombie"
    except psutil.NoSuchProcess:
        return False


def _by_name(state_dir: Path) -> dict[str, stack.ServiceStatus]:
    return {s.name: s for s in stack.status(state_dir)}


def _redis_ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


async def _kafka_roundtrip(bootstrap: str) -> bytes:
    topic = f"stack-test-{uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello")
    finally:
        await producer.stop()
    # no group: assignment is immediate (a group join costs seconds)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, meta.partition)])
        msg = await asyncio.wait_for(consumer.getone(), 15)
    finally:
        await consumer.stop()
    assert msg.value is not None
    return msg.value


async def test_up_starts_all_three_and_they_answer(state: Path) -> None:
    statuses = _by_name(state)
    assert set(statuses) == set(stack.SERVICES)
    for st in statuses.values():
        assert st.managed and st.running and st.pid and st.port
        assert st.log is not None and st.log.is_file()
    urls = _env(state)
    with psycopg.connect(urls["postgres"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.dbname == "bloasis"
    assert _redis_ping(urls["redis"])
    assert await _kafka_roundtrip(urls["kafka"]) == b"hello"
    assert "embedded" in stack.format_status(stack.status(state))


def test_env_file_is_sourceable(state: Path) -> None:
    script = (
        "source ./env && echo $BLOASIS_DATABASE_URL $BLOASIS_REDIS_URL "
        "$BLOASIS_KAFKA_BOOTSTRAP_SERVERS $BLOASIS_KAFKA_IDEMPOTENCE $BLOASIS_STATE_DIR"
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=state, capture_output=True, text=True, check=True
    ).stdout.split()
    urls = _env(state)
    assert out == [urls["postgres"], urls["redis"], urls["kafka"], "false", str(state)]
    settings = load_settings(state_dir=state)
    assert settings.require("redis_url") == urls["redis"]
    assert settings.kafka_idempotence is False


def test_up_again_keeps_running_servers(state: Path) -> None:
    before = {s.name: s.pid for s in stack.status(state)}
    env = stack.up(state)
    assert {s.name: s.pid for s in stack.status(state)} == before
    assert env["BLOASIS_REDIS_URL"] == _env(state)["redis"]


def test_stop_and_start_redis_on_same_port(state: Path) -> None:
    old = _by_name(state)["redis"]
    assert old.url
    stack.stop_service("redis", state)
    st = _by_name(state)["redis"]
    assert not st.running and st.pid is None and st.port == old.port
    with pytest.raises(redis.ConnectionError):
        _redis_ping(old.url)
    stack.start_service("redis", state)
    st = _by_name(state)["redis"]
    assert st.running and st.port == old.port and st.pid != old.pid
    assert _redis_ping(old.url)


async def test_stop_and_start_kafka_on_same_port(state: Path) -> None:
    old = _by_name(state)["kafka"]
    assert old.url
    stack.stop_service("kafka", state)
    assert not _by_name(state)["kafka"].running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", old.port or 0), 1):
        pass
    stack.start_service("kafka", state)
    st = _by_name(state)["kafka"]
    assert st.running and st.port == old.port and st.pid != old.pid
    assert await _kafka_roundtrip(old.url) == b"hello"


def test_start_service_refuses_a_foreign_port(state: Path) -> None:
    port = _by_name(state)["redis"].port
    assert port
    stack.stop_service("redis", state)
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(stack.StackError, match=f"port 127.0.0.1:{port} is in use"):
            stack.start_service("redis", state)
    finally:
        squatter.close()
    stack.start_service("redis", state)
    assert _by_name(state)["redis"].running


def test_up_restarts_killed_servers_on_same_port(state: Path) -> None:
    before = _by_name(state)
    for name in ("postgres", "kafka"):
        pid = before[name].pid
        assert pid
        os.kill(pid, signal.SIGKILL)  # a crash: postmaster.pid stays behind
    stack.up(state)
    after = _by_name(state)
    for name in stack.SERVICES:
        assert after[name].running and after[name].port == before[name].port
    assert after["postgres"].pid != before["postgres"].pid
    assert after["redis"].pid == before["redis"].pid
    with psycopg.connect(_env(state)["postgres"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_configured_services_are_not_started(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = _env(state)
    monkeypatch.setenv("BLOASIS_REDIS_URL", urls["redis"])
    monkeypatch.setenv("BLOASIS_DATABASE_URL", urls["postgres"])
    other = tmp_path / "other"
    try:
        env = stack.up(other)
        assert env["BLOASIS_REDIS_URL"] == urls["redis"]
        assert env["BLOASIS_DATABASE_URL"] == urls["postgres"]
        assert env["BLOASIS_KAFKA_BOOTSTRAP_SERVERS"] != urls["kafka"]
        assert env["BLOASIS_KAFKA_IDEMPOTENCE"] == "false"
        st = _by_name(other)
        assert not st["redis"].managed and st["redis"].pid is None and st["redis"].running
        assert not st["postgres"].managed and st["postgres"].running
        assert st["kafka"].managed and st["kafka"].running
        assert not (other / "postgres").exists()
        assert f"export BLOASIS_REDIS_URL={urls['redis']}" in (other / "env").read_text()
    finally:
        assert stack.down(other) == ["kafka"]
    assert _redis_ping(urls["redis"])  # the configured one is untouched


def test_failed_start_raises_with_log_tail(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = _env(state)
    monkeypatch.setenv("BLOASIS_DATABASE_URL", urls["postgres"])
    monkeypatch.setenv("BLOASIS_KAFKA_BOOTSTRAP_SERVERS", urls["kafka"])
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'simulated redis failure: bad config' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(stack, "_redis_bin", lambda: fake)
    broken = tmp_path / "broken"
    with pytest.raises(stack.StackError, match="simulated redis failure") as err:
        stack.up(broken)
    assert "redis exited during start-up (exit 3)" in str(err.value)
    assert not (broken / "env").exists()
    assert stack.down(broken) == []


def test_down_stops_everything_and_up_reuses_data_and_ports(state: Path) -> None:
    before = _by_name(state)
    with psycopg.connect(_env(state)["postgres"], autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS stack_marker (x int)")
    # (pid, start time): on a long run PIDs wrap (pid_max 32768 here), so a stopped service's
    # pid may already belong to another process; what must be gone is the one we started.
    started = [(s.pid, psutil.Process(s.pid).create_time()) for s in before.values() if s.pid]
    assert sorted(stack.down(state)) == sorted(stack.SERVICES)
    assert not any(_same_process_alive(pid, t) for pid, t in started)
    assert not (state / "env").exists()
    assert not any(s.running for s in stack.status(state))
    assert stack.down(state) == []

    env = stack.up(state)
    after = _by_name(state)
    assert all(after[n].port == before[n].port for n in stack.SERVICES)
    with psycopg.connect(env["BLOASIS_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT to_regclass('stack_marker') IS NOT NULL").fetchone()
    assert row == (True,)
