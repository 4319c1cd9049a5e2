"""Security: TLS and bearer tokens with scopes over real channels (health and reflection open),
secrets kept out of settings errors, reprs, server logs and CLI output, SQL through bound
parameters only, Redis credentials in the URL and Kafka security settings reaching aiokafka."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from bloasis.config import Settings, SettingsError, load_settings
from bloasis.pb.v2 import strategy_pb2 as st_pb
from bloasis.publish import relay, topics
from bloasis.publish.cache import make_redis
from bloasis.publish.kafka_options import client_options
from bloasis.serve import auth, client
from bloasis.serve.auth import WRITE_METHODS
from bloasis.serve.server import RegimeServer, start_server
from tests.rpcs import ALL_RPCS, RPCS, call
from tests.test_grpc import GRPCURL, _run, _seed, _settings

pytestmark = pytest.mark.security

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
SERVING = health_pb2.HealthCheckResponse.SERVING
# Fresh per run: a value found in a log or a message can only have come from this test.
READ_TOKEN = "rd-" + secrets.token_urlsafe(24)
WRITE_TOKEN = "wr-" + secrets.token_urlsafe(24)
INLINE_TOKEN = "in-" + secrets.token_urlsafe(24)
WRONG_TOKEN = "no-" + secrets.token_urlsafe(24)
SECRET = "S3cr3t-" + secrets.token_hex(8)
TOKENS = (READ_TOKEN, WRITE_TOKEN, INLINE_TOKEN, WRONG_TOKEN)
ROOT = Path(__file__).resolve().parents[1]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _assert_no_secret(text: str, *more: str) -> None:
    for s in (*TOKENS, SECRET, *more):
        assert s not in text, f"secret {s[:6]}... leaked into: {text[:400]}"


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    cert: Path  # self-signed for 127.0.0.1 and localhost: its own root
    key: Path
    other_cert: Path  # another self-signed pair: the wrong root
    other_key: Path


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    return Certs(*_self_signed(d, "server"), *_self_signed(d, "other"))


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(
        "# TOKEN SCOPE [NAME]\n"
        f"{READ_TOKEN} read dashboard\n"
        "\n"
        f"{WRITE_TOKEN}   write  ops   # the preferences service\n"
    )
    path.chmod(0o600)
    return path


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"GRPC_TLS_CERT": "<cert>"}, ["BLOASIS_GRPC_TLS_CERT", "BLOASIS_GRPC_TLS_KEY"]),
        ({"GRPC_TLS_KEY": "<key>"}, ["BLOASIS_GRPC_TLS_CERT", "BLOASIS_GRPC_TLS_KEY"]),
        ({"GRPC_TLS_CERT": "/no/such.pem", "GRPC_TLS_KEY": "<key>"}, ["BLOASIS_GRPC_TLS_CERT"]),
        ({"GRPC_TLS_CA": "/no/such/ca.pem"}, ["BLOASIS_GRPC_TLS_CA"]),
        ({"GRPC_TOKENS_FILE": "/no/such/tokens"}, ["BLOASIS_GRPC_TOKENS_FILE"]),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, ["BLOASIS_KAFKA_SECURITY_PROTOCOL"]),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "app"},
            ["BLOASIS_KAFKA_SASL_MECHANISM", "BLOASIS_KAFKA_SASL_PASSWORD"],
        ),
        ({"KAFKA_SASL_PASSWORD": SECRET}, ["BLOASIS_KAFKA_SECURITY_PROTOCOL"]),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, ["BLOASIS_KAFKA_SASL_MECHANISM"]),
        ({"KAFKA_SSL_CAFILE": "<cert>"}, ["BLOASIS_KAFKA_SSL_CAFILE"]),
        ({"DATABASE_URL": f"mysql://app:{SECRET}@db/x"}, ["BLOASIS_DATABASE_URL"]),
        ({"REDIS_URL": f"http://app:{SECRET}@cache:6379"}, ["BLOASIS_REDIS_URL"]),
        (
            {"DATABASE_URL": f"postgres://app:{SECRET}@db/x?password={SECRET}"},
            ["BLOASIS_DATABASE_URL"],
        ),
    ],
)
def test_bad_security_settings_name_the_variable_and_hide_secrets(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    certs: Certs,
    env: dict[str, str],
    names: list[str],
) -> None:
    for k, v in env.items():
        v = v.replace("<cert>", str(certs.cert)).replace("<key>", str(certs.key))
        monkeypatch.setenv(f"BLOASIS_{k}", v)
    with pytest.raises(SettingsError) as err:
        load_settings(state_dir=tmp_path)
    for name in names:
        assert name in str(err.value), str(err.value)
    _assert_no_secret(str(err.value))


def test_settings_keep_secrets_out_of_repr_but_usable(tmp_path: Path) -> None:
    s = load_settings(
        state_dir=tmp_path,
        database_url=f"postgresql://app:{SECRET}@db:5432/bloasis",
        redis_url=f"rediss://default:{SECRET}@cache:6380/0",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="app",
        kafka_sasl_password=SECRET,
        grpc_token=READ_TOKEN,
        grpc_tokens=f"{INLINE_TOKEN} read",
    )
    for shown in (repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(), default=str)):
        _assert_no_secret(shown)
    # Every reader gets the plain value through require/value_of.
    assert s.require("database_url") == f"postgresql://app:{SECRET}@db:5432/bloasis"
    assert s.value_of("redis_url") == f"rediss://default:{SECRET}@cache:6380/0"
    assert s.value_of("grpc_token") == READ_TOKEN
    assert client.ClientAuth.from_settings(s).token == READ_TOKEN
    _assert_no_secret(repr(client.ClientAuth.from_settings(s)))
    # SQLAlchemy masks the password in its own reprs too.
    from bloasis.store.db import make_engine

    _assert_no_secret(repr(make_engine(s.require("database_url"))))
    # Empty means unset, for secrets as for the rest.
    assert load_settings(state_dir=tmp_path, grpc_token="", database_url="").grpc_token is None


# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text_", "expected"),
    [
        ("short read", "at least 16"),
        (f"{READ_TOKEN}", "TOKEN SCOPE"),
        (f"{READ_TOKEN} superuser", "read, write or admin"),
        (f"read {READ_TOKEN}", "at least 16"),  # swapped: the token is not echoed as a scope
        (f"{READ_TOKEN} read a; {READ_TOKEN} write b", "twice"),
        (f"{READ_TOKEN} read bad/name", "name"),
        (f"{READ_TOKEN}\u00e9 read", "at least 16"),
    ],
)
def test_token_entries_are_checked_without_echoing_them(text_: str, expected: str) -> None:
    with pytest.raises(SettingsError) as err:
        auth.parse_tokens(text_, "GRPC_TOKENS")
    msg = str(err.value)
    assert "BLOASIS_GRPC_TOKENS" in msg and expected in msg, msg
    _assert_no_secret(msg)


def test_tokens_from_file_and_inline(tmp_path: Path, tokens_file: Path) -> None:
    s = load_settings(
        state_dir=tmp_path, grpc_tokens_file=tokens_file, grpc_tokens=f"{INLINE_TOKEN} write ci"
    )
    entries = auth.load_tokens(s)
    assert [(e.scope, e.name) for e in entries] == [
        ("read", "dashboard"),
        ("write", "ops"),
        ("write", "ci"),
    ]
    _assert_no_secret(repr(entries))
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(SettingsError, match=r"BLOASIS_GRPC_TOKENS_FILE=.* lists no token"):
        auth.load_tokens(load_settings(state_dir=tmp_path, grpc_tokens_file=empty))
    with pytest.raises(SettingsError, match="same token") as err:
        auth.load_tokens(
            load_settings(
                state_dir=tmp_path, grpc_tokens_file=tokens_file, grpc_tokens=f"{READ_TOKEN} read"
            )
        )
    _assert_no_secret(str(err.value))


def test_token_match_compares_every_entry_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entries = auth.parse_tokens(
        f"{READ_TOKEN} read a; {WRITE_TOKEN} write b; {INLINE_TOKEN} read c", "T"
    )
    table = auth.TokenTable(entries)
    seen: list[tuple[int, int]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented, name in (
        (READ_TOKEN, "a"),
        (INLINE_TOKEN, "c"),
        (WRONG_TOKEN, None),
        ("x", None),
    ):
        seen.clear()
        got = table.match(presented)
        assert (got.name if got else None) == name
        # Every entry compared, whichever matched (or none), always as equal-length digests.
        assert seen == [(32, 32)] * 3
    assert table.match(READ_TOKEN[:-1]) is None and table.match(READ_TOKEN + "x") is None


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("Authorization", "bearer  abc "),), "abc"),
        ((("authorization", "Basic abc"),), None),
        ((("authorization", "abc"),), None),
        ((("authorization", "Bearer "),), None),
        ((("x-other", "Bearer abc"),), None),
        ((), None),
    ],
)
def test_bearer_header_parsing(metadata: tuple[tuple[str, str], ...], expected: str | None) -> None:
    assert auth.bearer_token(metadata) == expected


# --- auth over a real channel -----------------------------------------------------------------


@dataclass
class Secured:
    server: RegimeServer
    settings: Settings
    prefix: str  # users created here start with it (deleted at the end)


@pytest.fixture(scope="module")
async def secured(stack_settings: Settings, tokens_file: Path) -> AsyncIterator[Secured]:
    """A plaintext server with tokens from a file and inline (both sources at once)."""
    s = _settings(
        stack_settings,
        grpc_tokens_file=tokens_file,
        grpc_tokens=SecretStr(f"{INLINE_TOKEN} read inline"),
    )
    await _seed(s, [(date(2024, 2, 1), "bull")])
    srv = await start_server(s, grace=0.5, health_interval=0.2)
    prefix = f"tsec-{uuid.uuid4().hex[:8]}-"
    try:
        yield Secured(srv, s, prefix)
    finally:
        await srv.stop(0)
        await asyncio.to_thread(_drop_users, s, prefix)


def _drop_users(s: Settings, prefix: str) -> None:
    from bloasis.store.db import engine_for

    with engine_for(s.require("database_url")).begin() as conn:
        conn.execute(
            text("DELETE FROM user_preferences WHERE starts_with(user_id, :p)"), {"p": prefix}
        )


@pytest.fixture
async def channel(secured: Secured) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(secured.server.address)
    try:
        yield ch
    finally:
        await ch.close()


def _prefs(user_id: str) -> st_pb.UpdatePreferencesRequest:
    return st_pb.UpdatePreferencesRequest(
        preferences=st_pb.UserPreferences(user_id=user_id, risk_profile="conservative")
    )


async def test_every_rpc_needs_a_valid_token(
    secured: Secured, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refused = [
        (),
        bearer(WRONG_TOKEN),
        bearer(READ_TOKEN[:-1]),
        (("authorization", f"Basic {READ_TOKEN}"),),
        (("authorization", READ_TOKEN),),
        (("x-api-key", READ_TOKEN),),
    ]
    for rpc in ALL_RPCS:
        empty = rpc.request()
        if rpc.name == "RunBacktest" and ".v2." not in rpc.service:
            # An empty v1 RunBacktest is a real one (moderate, the last year): an unknown user.
            empty = rpc.request(user_id=secured.prefix + "nobody")
        for md in refused:
            code, details = await call(channel, rpc, empty, metadata=md)
            assert code == UNAUTHENTICATED, (rpc.name, md and md[0][0], code, details)
            assert "bearer token" in details
            _assert_no_secret(details)
        # A valid token passes (the answer itself depends on the request: empty ones are
        # often INVALID_ARGUMENT); only the write methods (v2 UpdatePreferences and
        # RunBacktest; v1 SaveRegime, UpdatePreferences, RunAIAnalysis, RunBacktest) need more
        # than read.
        for token in (READ_TOKEN, INLINE_TOKEN):
            code, details = await call(channel, rpc, empty, metadata=bearer(token))
            if rpc.path in WRITE_METHODS:
                assert code == PERMISSION_DENIED and "write scope" in details, (code, details)
            else:
                assert code not in (UNAUTHENTICATED, PERMISSION_DENIED), (rpc.name, details)
        code, details = await call(channel, rpc, empty, metadata=bearer(WRITE_TOKEN))
        assert code not in (UNAUTHENTICATED, PERMISSION_DENIED), (rpc.name, details)

    ok, _ = await call(
        channel,
        RPCS["UpdatePreferences"],
        _prefs(secured.prefix + "w"),
        metadata=bearer(WRITE_TOKEN),
    )
    assert ok == grpc.StatusCode.OK
    # A refused write changed nothing.
    denied, _ = await call(
        channel,
        RPCS["UpdatePreferences"],
        _prefs(secured.prefix + "r"),
        metadata=bearer(READ_TOKEN),
    )
    assert denied == PERMISSION_DENIED
    code, _ = await call(
        channel,
        RPCS["GetPreferences"],
        st_pb.GetPreferencesRequest(user_id=secured.prefix + "r"),
        metadata=bearer(READ_TOKEN),
    )
    assert code == grpc.StatusCode.NOT_FOUND

    # The refusals are logged with method and reason, never with a token.
    assert "GetCurrentRegime" in caplog.text and "unknown bearer token" in caplog.text
    assert "token 'dashboard' has scope read" in caplog.text
    _assert_no_secret(caplog.text)


async def test_health_and_reflection_stay_open(secured: Secured, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", *secured.server.service_names):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == SERVING
    listed = (await _run(GRPCURL, "-plaintext", secured.server.address, "list")).split()
    assert "bloasis.strategy.v2.StrategyService" in listed
    # grpcurl with a token, as the README shows it.
    out = await _run(
        GRPCURL, "-plaintext", "-H", f"authorization: Bearer {READ_TOKEN}",
        secured.server.address, "bloasis.market_regime.v2.MarketRegimeService/GetCurrentRegime",
    )  # fmt: skip
    assert json.loads(out)["regime"]["as_of"] == "2024-02-01"


async def test_blocking_client_sends_the_token(secured: Secured) -> None:
    address = secured.server.address
    with pytest.raises(client.ClientError) as err:
        await asyncio.to_thread(client.get_regime, address)
    assert err.value.code == "UNAUTHENTICATED"
    reader = client.ClientAuth(token=READ_TOKEN)
    got = await asyncio.to_thread(client.get_regime, address, auth=reader)
    assert got["as_of"] == "2024-02-01"
    rows = await asyncio.to_thread(client.get_history, address, auth=reader)
    assert [r["as_of"] for r in rows] == ["2024-02-01"]
    gen = client.watch(address, auth=reader)
    try:
        assert (await asyncio.to_thread(next, gen))["as_of"] == "2024-02-01"
    finally:
        await asyncio.to_thread(gen.close)
    uid = secured.prefix + "client"
    with pytest.raises(client.ClientError) as err:
        await asyncio.to_thread(client.update_preferences, address, uid, auth=reader)
    assert err.value.code == "PERMISSION_DENIED"
    writer = client.ClientAuth(token=WRITE_TOKEN)
    made = await asyncio.to_thread(
        client.update_preferences, address, uid, risk_profile="aggressive", auth=writer
    )
    assert made["risk_profile"] == "aggressive"
    got_prefs = await asyncio.to_thread(client.get_preferences, address, uid, auth=writer)
    assert got_prefs["user_id"] == uid


async def test_bad_tokens_fail_at_start_naming_the_variable(stack_settings: Settings) -> None:
    short = SECRET[:12]
    for tokens in (f"{READ_TOKEN} superuser", f"{short} read"):  # bad scope; too short
        s = _settings(stack_settings, grpc_tokens=SecretStr(tokens))
        with pytest.raises(SettingsError) as err:
            await start_server(s)
        assert "BLOASIS_GRPC_TOKENS" in str(err.value)
        _assert_no_secret(str(err.value), short)


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def tls_server(stack_settings: Settings, certs: Certs) -> AsyncIterator[RegimeServer]:
    s = _settings(
        stack_settings,
        grpc_tls_cert=certs.cert,
        grpc_tls_key=certs.key,
        grpc_tokens=SecretStr(f"{READ_TOKEN} read"),
    )
    await _seed(s, [(date(2024, 3, 1), "bear")])
    srv = await start_server(s, grace=0.5, health_interval=0.2)
    try:
        yield srv
    finally:
        await srv.stop(0)


async def test_tls_with_a_generated_self_signed_certificate(
    tls_server: RegimeServer, certs: Certs
) -> None:
    address = tls_server.address
    good = client.ClientAuth(certs.cert.read_bytes(), READ_TOKEN)
    got = await asyncio.to_thread(client.get_regime, address, auth=good)
    assert (got["as_of"], got["regime"]) == ("2024-03-01", "bear")
    # TLS alone is not enough: the token is still required.
    with pytest.raises(client.ClientError) as err:
        await asyncio.to_thread(
            client.get_regime, address, auth=client.ClientAuth(certs.cert.read_bytes())
        )
    assert err.value.code == "UNAUTHENTICATED"
    # Plaintext, or a root that did not sign the server's certificate: no connection at all.
    for bad in (
        client.ClientAuth(token=READ_TOKEN),
        client.ClientAuth(certs.other_cert.read_bytes(), READ_TOKEN),
    ):
        with pytest.raises(client.ClientError) as err:
            await asyncio.to_thread(client.get_regime, address, timeout=3, auth=bad)
        assert err.value.code == "UNAVAILABLE"

    # Health over TLS, no token.
    creds = grpc.ssl_channel_credentials(certs.cert.read_bytes())
    async with grpc.aio.secure_channel(address, creds) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert resp.status == SERVING
    listed = await _run(GRPCURL, "-cacert", str(certs.cert), address, "list")
    assert "bloasis.market_regime.v2.MarketRegimeService" in listed


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")}
    return subprocess.run(
        [sys.executable, "-m", "bloasis.cli", *args],
        env={**base, **env}, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


async def test_cli_reads_over_tls_with_a_token(
    tls_server: RegimeServer, certs: Certs, tmp_path: Path
) -> None:
    env = {
        "BLOASIS_STATE_DIR": str(tmp_path),
        "BLOASIS_GRPC_TLS_CA": str(certs.cert),
        "BLOASIS_GRPC_TOKEN": READ_TOKEN,
    }
    proc = await asyncio.to_thread(
        _cli, env, "get", "regime", "--json", "--address", tls_server.address
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["as_of"] == "2024-03-01"
    proc = await asyncio.to_thread(
        _cli,
        {**env, "BLOASIS_GRPC_TOKEN": WRONG_TOKEN},
        "get", "regime", "--address", tls_server.address,
    )  # fmt: skip
    assert proc.returncode == 1 and "UNAUTHENTICATED" in proc.stderr
    _assert_no_secret(proc.stdout + proc.stderr)


async def test_mismatched_certificate_and_key_fail_at_start(
    stack_settings: Settings, certs: Certs
) -> None:
    s = _settings(stack_settings, grpc_tls_cert=certs.cert, grpc_tls_key=certs.other_key)
    with pytest.raises(SettingsError) as err:
        await start_server(s)
    assert "BLOASIS_GRPC_TLS_CERT" in str(err.value) and "BLOASIS_GRPC_TLS_KEY" in str(err.value)


# --- secrets in logs and CLI output -------------------------------------------------------------


async def test_server_logs_and_errors_never_show_store_passwords(
    stack_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pg = stack_settings.require("database_url")
    # The embedded PostgreSQL trusts loopback: a password in the URL is accepted and ignored.
    with_password = pg.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")
    assert SECRET in with_password
    s = _settings(
        stack_settings,
        database_url=SecretStr(with_password),
        redis_url=SecretStr(f"redis://default:{SECRET}@127.0.0.1:1/0"),  # nothing listens
    )
    await _seed(s, [(date(2024, 4, 1), "sideways")])
    srv = await start_server(s, grace=0.5, health_interval=0.2, poll_interval=60.0)
    down = _settings(
        stack_settings,
        database_url=SecretStr(f"postgresql://postgres:{SECRET}@127.0.0.1:1/bloasis"),
        redis_url=SecretStr(f"redis://default:{SECRET}@127.0.0.1:1/0"),
    )
    srv_down = await start_server(down, grace=0.5, health_interval=0.2, store_timeout=3.0)
    try:
        async with grpc.aio.insecure_channel(srv.address) as ch:
            rpc = RPCS["GetCurrentRegime"]
            code, _ = await call(ch, rpc, rpc.request(force_refresh=True))
            assert code == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(srv_down.address) as ch:
            for name in ("GetCurrentRegime", "GetRegimeHistory", "GetPreferences"):
                rpc = RPCS[name]
                req = rpc.request(user_id="u") if name == "GetPreferences" else rpc.request()
                code, details = await call(ch, rpc, req)
                assert code == grpc.StatusCode.UNAVAILABLE, (name, code, details)
                _assert_no_secret(details)
    finally:
        await srv.stop(0)
        await srv_down.stop(0)
    assert "Redis unavailable" in caplog.text  # the failures were logged...
    assert "PostgreSQL" in caplog.text
    _assert_no_secret(caplog.text)  # ...without the passwords


@pytest.mark.slow
def test_cli_output_never_shows_credentials(tmp_path: Path) -> None:
    env = {
        "BLOASIS_STATE_DIR": str(tmp_path),
        "BLOASIS_DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:1/bloasis",
        "BLOASIS_REDIS_URL": f"redis://app:{SECRET}@127.0.0.1:1/0",
        "BLOASIS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "BLOASIS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "BLOASIS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "BLOASIS_KAFKA_SASL_USERNAME": "app",
        "BLOASIS_KAFKA_SASL_PASSWORD": SECRET,
        "BLOASIS_GRPC_TOKEN": READ_TOKEN,
    }
    status = _cli(env, "stack", "status")
    assert status.returncode == 0, status.stderr
    assert "postgresql://app:***@127.0.0.1:1/bloasis" in status.stdout, status.stdout
    assert "redis://app:***@127.0.0.1:1/0" in status.stdout
    outputs = [status]
    for args in (("db", "current"), ("cache",), ("get", "regime", "--address", "127.0.0.1:1")):
        proc = _cli(env, *args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
        outputs.append(proc)
    # A malformed URL is reported naming the variable, without its password.
    bad = _cli({**env, "BLOASIS_DATABASE_URL": f"mysql://app:{SECRET}@db/x"}, "db", "current")
    assert bad.returncode == 1 and "BLOASIS_DATABASE_URL='mysql://app:***@db/x'" in bad.stderr
    # A serve with a bad token entry fails at start naming the variable, not the token.
    serve = _cli(
        {**env, "BLOASIS_GRPC_TOKENS": f"{INLINE_TOKEN} root"}, "serve", "--address", "127.0.0.1:0"
    )
    assert serve.returncode == 1 and "BLOASIS_GRPC_TOKENS: entry 1" in serve.stderr, serve.stderr
    for proc in [*outputs, bad, serve]:
        _assert_no_secret(proc.stdout + proc.stderr)


# --- SQL only through bound parameters ----------------------------------------------------------


def _sql_findings(*roots: Path) -> list[str]:
    """The scan in `tests/sqlscan.py`, in a child process (see its docstring for why)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.sqlscan", *map(str, roots)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found: list[str] = json.loads(proc.stdout)
    return found


def test_sql_is_never_built_from_strings() -> None:
    findings = _sql_findings(ROOT / "bloasis", ROOT / "flows", ROOT / "tasks")
    assert findings == [], "SQL built from strings (use bound parameters):\n" + "\n".join(findings)


def test_the_sql_scan_finds_what_it_should(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "def f(conn, cur, name, sql):\n"
        "    conn.execute(text(f'SELECT * FROM t WHERE n = {name}'))\n"
        "    cur.execute('SELECT ' + name)\n"
        "    cur.execute('SELECT %s' % name)\n"
        "    q = 'DELETE FROM t WHERE n = {}'.format(name)\n"
        "    cur.execute(q)\n"
        "    cur.execute('SELECT 1 WHERE n = %s', (name,))\n"  # fine: bound
        "    cur.execute(sql.SQL('LISTEN {}').format(sql.Identifier(name)))\n"  # fine: composed
    )
    found = _sql_findings(pkg)
    assert [f.split(":")[1] for f in found] == ["2", "3", "4", "6"], found


# --- Redis and Kafka credentials ------------------------------------------------------------


def test_redis_credentials_and_tls_come_from_the_url(stack_settings: Settings) -> None:
    admin = make_redis(stack_settings.require("redis_url"))
    user, password = f"bloasis-t-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    host_port = stack_settings.require("redis_url").split("//", 1)[1]
    try:
        s = load_settings(
            state_dir=stack_settings.state_dir, redis_url=f"redis://{user}:{password}@{host_port}"
        )
        assert make_redis(s.require("redis_url")).ping() is True
        from redis.exceptions import AuthenticationError

        with pytest.raises(AuthenticationError):
            make_redis(f"redis://{user}:wrong-{password}@{host_port}").ping()
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()
    tls = make_redis(f"rediss://app:{SECRET}@cache:6380/0?ssl_ca_certs=/etc/ca.pem")
    import redis

    pool = tls.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["password"]) == (
        "app",
        SECRET,
    )
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"


def _kafka_settings(tmp_path: Path, **kw: Any) -> Settings:
    return load_settings(state_dir=tmp_path, kafka_bootstrap_servers="broker:9093", **kw)


def test_kafka_client_options(tmp_path: Path, certs: Certs) -> None:
    assert client_options(_kafka_settings(tmp_path)) == {}
    ssl_only = client_options(
        _kafka_settings(tmp_path, kafka_security_protocol="SSL", kafka_ssl_cafile=certs.cert)
    )
    assert ssl_only["security_protocol"] == "SSL" and ssl_only["ssl_context"].check_hostname
    assert "sasl_mechanism" not in ssl_only
    sasl = client_options(
        _kafka_settings(
            tmp_path,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="app",
            kafka_sasl_password=SECRET,
        )
    )
    assert {k: v for k, v in sasl.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "app",
        "sasl_plain_password": SECRET,
    }
    plain = client_options(
        _kafka_settings(
            tmp_path,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="app",
            kafka_sasl_password=SECRET,
        )
    )
    assert "ssl_context" not in plain and plain["sasl_mechanism"] == "PLAIN"


@pytest.fixture
def sasl_settings(tmp_path: Path, certs: Certs) -> Iterator[Settings]:
    yield _kafka_settings(
        tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="app",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=certs.cert,
    )


async def test_kafka_options_reach_aiokafka(
    sasl_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = client_options(sasl_settings)
    # The producer the relay creates (no broker needed to construct it).
    producer = relay.make_producer("broker:9093", idempotence=True, options=options)
    c = producer.client
    assert (c._security_protocol, c._sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert (c._sasl_plain_username, c._sasl_plain_password) == ("app", SECRET)
    assert c._ssl_context is options["ssl_context"]
    await producer.stop()  # never started: releases it without a broker

    # The admin client of topic management, and the relay passing its options to both.
    seen: list[dict[str, Any]] = []

    class FakeAdmin:
        def __init__(self, **kwargs: Any) -> None:
            seen.append(kwargs)
            raise ConnectionError("no broker in this test")

    monkeypatch.setattr(topics, "AIOKafkaAdminClient", FakeAdmin)
    with pytest.raises(ConnectionError):
        await topics.ensure_topics("broker:9093", options=options)
    with pytest.raises(ConnectionError):
        await topics.list_topics("broker:9093", options=options)
    assert all(kw["sasl_plain_password"] == SECRET for kw in seen) and len(seen) == 2

    engine = create_engine("sqlite://")
    monkeypatch.setattr(relay.outbox, "backlog", lambda conn: 1)
    with pytest.raises(relay.RelayError) as err:
        await relay.relay_pending(
            engine, "broker:9093", idempotence=False, attempts=1, options=options
        )
    assert seen[-1]["security_protocol"] == "SASL_SSL" and len(seen) == 3
    _assert_no_secret(str(err.value))

    # What the relay task passes for these settings.
    from bloasis.app import steps

    got: dict[str, Any] = {}

    async def fake_relay(*args: Any, **kwargs: Any) -> Any:
        got.update(kwargs)
        return relay.RelayStats(0, 0, 0, 0.0)

    monkeypatch.setattr(steps, "relay_pending", fake_relay)
    monkeypatch.setattr(steps, "get_engine", lambda s: engine)
    await asyncio.to_thread(steps.run_relay, sasl_settings)
    assert got["options"]["sasl_plain_password"] == SECRET
    assert got["options"]["security_protocol"] == "SASL_SSL"
