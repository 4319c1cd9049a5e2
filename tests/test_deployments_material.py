"""deployments/ names only commands, ports, topics and settings that exist in the app.

Docker cannot run here, so these tests parse compose.yaml, envoy.yaml, the Dockerfile and the
guides, and check every name against the code: `bloasis` command lines against the CLI parser,
`prefect` ones against Prefect's CLI, `BLOASIS_*` variables against the pydantic-settings classes
(found by introspection), topics against `bloasis.publish.topics.TOPICS`, Envoy's services
against the descriptor set that `deployments/build_descriptor.py` builds.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bloasis.logs import PREFECT_JSON_LOGGING, JsonFormatter

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deployments"
MARKDOWN = ("README.md", "kubernetes.md")
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash"}


# --- parsing helpers -------------------------------------------------------------------------
def _interpolate(value: str) -> str:
    """Compose interpolation with defaults: `${VAR:-default}` -> default, `$$` -> `$`."""
    value = re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "unset", value)
    return value.replace("$$", "$")


def _shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script (split at ; && || | and parentheses), without
    redirections."""
    out: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        cmd: list[str] = []
        skip = False
        for tok in [*lexer, ";"]:
            if skip:  # the target of a redirection
                skip = False
            elif tok and set(tok) <= set("<>&") and set(tok) & set("<>"):
                if cmd and cmd[-1] in {"0", "1", "2"}:  # `2>&1`: the fd number
                    cmd.pop()
                skip = True
            elif tok and set(tok) <= set(";&|()"):
                while cmd and cmd[0] in {"do", "then", "else", "!", "{"}:
                    cmd.pop(0)
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(tok)
    return out


def _commands(argv: list[str]) -> list[list[str]]:
    """A container's argv as simple commands (a `sh -c SCRIPT` becomes the script's commands)."""
    if len(argv) >= 3 and argv[0] in SHELLS and argv[1] == "-c":
        return _shell_commands(argv[2])
    return [argv] if argv else []


def _app_argv(cmd: list[str]) -> list[str] | None:
    """`bloasis ...` / `prefect ...` in a command, also behind `docker compose exec|run SVC`."""
    if Path(cmd[0]).name in {"bloasis", "prefect"}:
        return [Path(cmd[0]).name, *cmd[1:]]
    if cmd[0] == "docker":
        for verb in ("exec", "run"):
            if verb in cmd:
                rest = cmd[cmd.index(verb) + 1 :]
                while rest and rest[0].startswith("-"):
                    rest = rest[1:]
                return _app_argv(rest[1:]) if len(rest) > 1 else None
    return None


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's final stage."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            head, _, rest = line.strip().partition(" ")
            instructions.append((head.upper(), rest.strip()))
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    froms = " ".join(a for k, a in instructions if k == "FROM")
    return [("ALL_FROM", froms), *instructions[last_from:]]


def _exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form: {args}"
    return list(json.loads(args))


def _image() -> tuple[list[str], list[str]]:
    """The app image's ENTRYPOINT and CMD."""
    inst = dict(_dockerfile())
    return _exec_form(inst["ENTRYPOINT"]), _exec_form(inst["CMD"])


def _healthcheck_argv() -> list[str]:
    args = dict(_dockerfile())["HEALTHCHECK"]
    return _exec_form(args.split(" CMD ", 1)[1].strip())


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _is_app(svc: dict[str, Any]) -> bool:
    return "build" in svc or str(svc.get("image", "")).startswith("bloasis:")


def _service_argv(svc: dict[str, Any]) -> list[str]:
    """What the container runs: compose's entrypoint replaces the image's and clears its CMD."""
    if "entrypoint" in svc:
        return _as_list(svc["entrypoint"]) + _as_list(svc.get("command"))
    if _is_app(svc):
        entry, cmd = _image()
        return entry + (_as_list(svc["command"]) if "command" in svc else cmd)
    return _as_list(svc.get("command"))


def _healthcheck_commands(svc: dict[str, Any]) -> list[list[str]]:
    test = svc.get("healthcheck", {}).get("test") or []
    if test and test[0] == "CMD":
        return _commands(test[1:])
    if test and test[0] == "CMD-SHELL":
        return _shell_commands(test[1])
    return []


def _fenced(text: str) -> Iterator[tuple[str, str]]:
    """(language, body) of every fenced code block of a markdown text."""
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        yield m.group(1), m.group(2)


def _k8s_containers() -> Iterator[dict[str, Any]]:
    for lang, body in _fenced((DEPLOY / "kubernetes.md").read_text()):
        if lang == "yaml":
            for doc in yaml.safe_load_all(body):
                spec = doc["spec"]
                pod = spec["template"]["spec"] if "template" in spec else spec
                yield from pod.get("containers", [])


def _all_commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(where, argv) of every command the material runs or tells an operator to run."""
    found: list[tuple[str, list[str]]] = []
    entry, cmd = _image()
    found += [("Dockerfile ENTRYPOINT+CMD", c) for c in _commands(entry + cmd)]
    found += [("Dockerfile HEALTHCHECK", c) for c in _commands(_healthcheck_argv())]
    for name, svc in compose["services"].items():
        found += [(f"compose {name}", c) for c in _commands(_service_argv(svc))]
        found += [(f"compose {name} healthcheck", c) for c in _healthcheck_commands(svc)]
    for md in MARKDOWN:
        for lang, body in _fenced((DEPLOY / md).read_text()):
            if lang in {"sh", "bash", "shell", ""}:
                found += [(md, c) for c in _shell_commands(body)]
    for c in _k8s_containers():
        if "bloasis" in c["image"]:
            argv = _as_list(c.get("command")) or entry
            found += [
                (f"kubernetes.md {c['name']}", x) for x in _commands(argv + _as_list(c.get("args")))
            ]
    return found


def _app_commands(compose: dict[str, Any], program: str) -> list[tuple[str, list[str]]]:
    out = []
    for where, cmd in _all_commands(compose):
        argv = _app_argv(cmd)
        if argv and argv[0] == program:
            out.append((where, argv))
    return out


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def envoy() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "envoy.yaml").read_text())


@pytest.fixture(scope="module")
def prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The descriptor set, built by the documented script exactly as an operator would."""
    from google.api import annotations_pb2  # noqa: F401  (registers the google.api.http option)
    from google.protobuf import descriptor_pb2

    out = tmp_path_factory.mktemp("descriptor") / "bloasis.pb"
    script = DEPLOY / "build_descriptor.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def settings_env() -> dict[str, type]:
    """`BLOASIS_*` variable -> its pydantic-settings class, for every such class in the code."""
    from pydantic_settings import BaseSettings

    packages = ("bloasis", "flows", "tasks")
    for pkg in packages:
        for path in (ROOT / pkg).rglob("*.py"):
            if "BaseSettings" in path.read_text(errors="replace"):
                rel = path.relative_to(ROOT).with_suffix("")
                importlib.import_module(".".join(rel.parts).removesuffix(".__init__"))
    classes, todo = [], list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.split(".")[0] in packages:
            classes.append(cls)
    names: dict[str, type] = {}
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "")
        for field_name, field in cls.model_fields.items():
            names[(prefix + field_name).upper()] = cls
            if isinstance(field.validation_alias, str):
                names[field.validation_alias.upper()] = cls
    # The regime models' parameters: plain models, their BLOASIS_REGIME_* variables collected
    # by the settings layer (Settings.regime_overrides).
    from bloasis.regime.params import ENV_PREFIX as REGIME_PREFIX
    from bloasis.regime.params import PARAMS_BY_ALGORITHM

    for params in PARAMS_BY_ALGORITHM.values():
        for field_name in params.model_fields:
            names[(REGIME_PREFIX + field_name).upper()] = params
    return names


# --- commands --------------------------------------------------------------------------------
def test_every_bloasis_command_line_parses(compose: dict[str, Any]) -> None:
    from bloasis.cli import build_parser

    used = _app_commands(compose, "bloasis")
    subcommands = set()
    for where, argv in used:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                args = build_parser().parse_args(argv[1:])
            except SystemExit:
                pytest.fail(
                    f"{where}: `{shlex.join(argv)}` is not a valid command: {err.getvalue()}"
                )
        subcommands.add(args.command)
    # The extraction found the commands the material depends on.
    assert {"serve", "db"} <= subcommands, used


def test_every_prefect_command_line_parses(
    compose: dict[str, Any], prefect_yaml: dict[str, Any]
) -> None:
    from prefect.cli._app import _app as prefect_cli  # the cyclopts app behind `prefect`

    # Pinned prefect 3.9's CLI is a cyclopts app; a change there should fail loudly here.
    assert hasattr(prefect_cli, "parse_args"), "prefect's CLI is no longer a cyclopts app"
    deployments = {d["name"] for d in prefect_yaml["deployments"]}
    used = _app_commands(compose, "prefect")
    for where, argv in used:
        tokens = [t for t in argv[1:] if t not in {"--prompt", "--no-prompt"}]  # session flags
        try:
            prefect_cli.parse_args(tokens, exit_on_error=False, print_error=False)
        except Exception as exc:
            pytest.fail(f"{where}: `{shlex.join(argv)}`: {type(exc).__name__}: {exc}")
        if tokens[:2] == ["deployment", "run"]:
            assert tokens[2].split("/")[1] in deployments, f"{where}: {tokens[2]}"
    assert {tuple(a[1:3]) for _, a in used} >= {("worker", "start"), ("server", "start")}


def test_worker_polls_the_work_pool_of_prefect_yaml(
    compose: dict[str, Any], prefect_yaml: dict[str, Any]
) -> None:
    pools = {d["work_pool"]["name"] for d in prefect_yaml["deployments"]}
    worker = _service_argv(compose["services"]["worker"])
    assert worker[:3] == ["prefect", "worker", "start"], worker
    assert len(pools) == 1 and worker[worker.index("--pool") + 1] in pools, (worker, pools)
    assert worker[worker.index("--type") + 1] == "process"
    created = [
        a[3]
        for _, a in _app_commands(compose, "prefect")
        if a[1:3] == ["work-pool", "create"] and "process" in a
    ]
    assert created and set(created) <= pools
    # Kubernetes: the pool the guide creates is the one its worker polls and its deploys target.
    k8s = [
        a for _, a in _app_commands(compose, "prefect") if "kubernetes" in a or "bloasis-k8s" in a
    ]
    k8s_pools = {a[3] for a in k8s if a[1:3] == ["work-pool", "create"]}
    k8s_pools |= {a[a.index("--pool") + 1] for a in k8s if "--pool" in a}
    assert k8s_pools == {"bloasis-k8s"}, k8s


def test_paths_named_in_the_guides_exist() -> None:
    for md in MARKDOWN:
        for _lang, body in _fenced((DEPLOY / md).read_text()):
            for path in re.findall(r"(?<![\w/])deployments/[\w./-]+", body):
                if not path.endswith("bloasis.pb"):  # built by build_descriptor.py
                    assert (ROOT / path).exists(), f"{md}: {path}"


# --- settings --------------------------------------------------------------------------------
def test_every_bloasis_variable_is_a_setting(settings_env: dict[str, type]) -> None:
    assert "BLOASIS_DATABASE_URL" in settings_env
    # More than bloasis.config.Settings was found (the regime models have their own classes).
    assert len(set(settings_env.values())) >= 2, set(settings_env.values())
    for path in sorted(DEPLOY.iterdir()):
        if path.suffix == ".pb" or not path.is_file():
            continue
        for name in set(re.findall(r"BLOASIS_[A-Z0-9_]*", path.read_text())):
            if name.endswith("_"):  # a family, e.g. `BLOASIS_KAFKA_SASL_*`
                assert any(n.startswith(name) for n in settings_env), f"{path.name}: {name}*"
            else:
                assert name in settings_env, f"{path.name}: {name} is not a setting"


def _prefect_logging_overrides() -> set[str]:
    """The PREFECT_LOGGING_[PATH]_[KEY] variables that override a leaf of Prefect's logging.yml."""
    import prefect.logging

    def leaves(node: Any, path: tuple[str, ...]) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, (*path, str(k)))
        else:
            yield "PREFECT_LOGGING_" + "_".join(path).upper().replace(".", "_")

    yml = Path(prefect.logging.__file__).parent / "logging.yml"
    return set(leaves(yaml.safe_load(yml.read_text()), ()))


def test_json_logging_overrides_are_prefect_logging_paths_and_our_formatter() -> None:
    overrides = _prefect_logging_overrides()
    assert set(PREFECT_JSON_LOGGING) <= overrides
    module, _, cls = PREFECT_JSON_LOGGING["PREFECT_LOGGING_FORMATTERS_JSON_CLASS"].rpartition(".")
    assert getattr(importlib.import_module(module), cls) is JsonFormatter


def test_compose_settings_are_valid_and_point_at_its_services(
    compose: dict[str, Any], settings_env: dict[str, type], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import Settings as PrefectSettings
    from prefect.settings.legacy import _get_valid_setting_names

    prefect_names = _get_valid_setting_names(PrefectSettings)
    logging_overrides = _prefect_logging_overrides()
    services = compose["services"]
    app = {n: s for n, s in services.items() if _is_app(s) and n != "prefect-server"}
    assert {"migrate", "deploy", "worker", "grpc"} <= set(app)
    for name, svc in [*app.items(), ("prefect-server", services["prefect-server"])]:
        env = {k: _interpolate(str(v)) for k, v in svc["environment"].items()}
        for key in env:
            if key in logging_overrides:  # must be what `bloasis up` sets for JSON logs
                assert PREFECT_JSON_LOGGING.get(key) == env[key], (name, key)
            elif key.startswith("PREFECT_"):
                assert key in prefect_names, f"{name}: {key} is not a Prefect setting"
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false", name
        if name == "prefect-server":
            continue
        assert env["BLOASIS_KAFKA_IDEMPOTENCE"] == "true", name
        # Values validate as the app would read them.
        for key in [k for k in os.environ if k.startswith("BLOASIS_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("BLOASIS_"):
                monkeypatch.setenv(key, value)
        for cls in set(settings_env.values()):
            cls()
        # ... and name this file's services, on the ports those listen on.
        assert urlsplit(env["BLOASIS_DATABASE_URL"]).hostname == "postgres"
        assert urlsplit(env["BLOASIS_DATABASE_URL"]).port == 5432
        assert urlsplit(env["BLOASIS_REDIS_URL"]).hostname == "redis"
        assert urlsplit(env["BLOASIS_REDIS_URL"]).port == 6379
        assert urlsplit(env["PREFECT_API_URL"]).hostname == "prefect-server"
        assert urlsplit(env["PREFECT_API_URL"]).port == 4200
        kafka_host, _, kafka_port = env["BLOASIS_KAFKA_BOOTSTRAP_SERVERS"].partition(":")
        assert kafka_host == "redpanda"
        listeners = next(a for a in services["redpanda"]["command"] if "--kafka-addr" in a)
        assert f"0.0.0.0:{kafka_port}" in listeners
    db = urlsplit(
        _interpolate(
            services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
        )
    )
    assert db.scheme == "postgresql+asyncpg" and db.hostname == "postgres", db
    init = (DEPLOY / "postgres-init.sql").read_text()
    assert re.search(rf"CREATE DATABASE {db.path.lstrip('/')}\b", init), init


def test_grpc_port_is_the_default_everywhere(
    compose: dict[str, Any], envoy: dict[str, Any]
) -> None:
    from bloasis.config import Settings

    port = Settings.model_fields["grpc_address"].default.rpartition(":")[2]
    grpc = compose["services"]["grpc"]
    argv = _service_argv(grpc)
    assert argv[:2] == ["bloasis", "serve"]
    assert argv[argv.index("--address") + 1] == f"0.0.0.0:{port}"
    assert any(str(p).endswith(f":{port}") for p in grpc["ports"])
    _, cmd = _image()
    assert cmd[0] == "serve" and cmd[cmd.index("--address") + 1] == f"0.0.0.0:{port}"
    assert dict(_dockerfile())["EXPOSE"] == port
    for check in (_healthcheck_argv(), grpc["healthcheck"]["test"][1:]):
        assert f"127.0.0.1:{port}" in check[-1]
    cluster = envoy["static_resources"]["clusters"][0]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address == {"address": "grpc", "port_value": int(port)}
    assert "http2_protocol_options" in str(cluster["typed_extension_protocol_options"])


@pytest.fixture
def health_server() -> Iterator[tuple[int, Any]]:
    """A bare grpc.health.v1 server on a free port (stands in for `bloasis serve`)."""
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None)


def test_grpc_health_checks_work(compose: dict[str, Any], health_server: tuple[int, Any]) -> None:
    from grpc_health.v1 import health_pb2

    from bloasis.config import Settings

    port, servicer = health_server
    default = Settings.model_fields["grpc_address"].default
    checks = [_healthcheck_argv(), compose["services"]["grpc"]["healthcheck"]["test"][1:]]
    for status, expected in ((health_pb2.HealthCheckResponse.SERVING, 0),
                             (health_pb2.HealthCheckResponse.NOT_SERVING, 1)):  # fmt: skip
        servicer.set("", status)
        for argv in checks:
            assert argv[:2] == ["python", "-c"]
            code = argv[2].replace(default, f"127.0.0.1:{port}")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
            assert proc.returncode == expected, (argv, proc.stderr.decode()[-500:])


# --- Envoy -----------------------------------------------------------------------------------
def _transcoder(envoy: dict[str, Any]) -> dict[str, Any]:
    (listener,) = envoy["static_resources"]["listeners"]
    (hcm,) = listener["filter_chains"][0]["filters"]
    filters = hcm["typed_config"]["http_filters"]
    names = [f["name"] for f in filters]
    assert names[-1] == "envoy.filters.http.router" and TRANSCODER in names, names
    return next(f["typed_config"] for f in filters if f["name"] == TRANSCODER)


V1_SERVICES = (
    "market_regime.MarketRegimeService",
    "classification.ClassificationService",
    "strategy.StrategyService",
    "backtesting.BacktestingService",
)


def test_envoy_transcodes_every_annotated_service(
    envoy: dict[str, Any], descriptor: Any, compose: dict[str, Any]
) -> None:
    from google.api import annotations_pb2

    config = _transcoder(envoy)
    files = {f"{f.package}.{s.name}": s for f in descriptor.file for s in f.service}
    annotated = {
        name for name, s in files.items()
        if any(m.options.HasExtension(annotations_pb2.http) for m in s.method)
    }  # fmt: skip
    assert (
        set(config["services"])
        == annotated
        == {
            *(f"bloasis.{s}" for s in V1_SERVICES),
            *(f"bloasis.{s.replace('.', '.v2.')}" for s in V1_SERVICES),
        }
    )
    # Every method has its REST route, but SaveRegime, which had none in the original contract.
    for name in config["services"]:
        for m in files[name].method:
            if (name, m.name) != ("bloasis.market_regime.MarketRegimeService", "SaveRegime"):
                assert m.options.HasExtension(annotations_pb2.http), f"{name}/{m.name}"
    # convert_grpc_status needs google.rpc.Status in the set.
    assert "google/rpc/status.proto" in {f.name for f in descriptor.file}
    # The descriptor Envoy reads is the one the script writes, mounted where envoy.yaml says.
    mounts = {v["target"]: v["source"] for v in compose["services"]["envoy"]["volumes"]}
    assert mounts[config["proto_descriptor"]] == "./bloasis.pb"
    assert mounts["/etc/envoy/envoy.yaml"] == "./envoy.yaml"
    spec = importlib.util.spec_from_file_location(
        "build_descriptor", DEPLOY / "build_descriptor.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.DEFAULT_OUT == DEPLOY / "bloasis.pb"


def test_rest_paths_in_the_material_are_annotated(envoy: dict[str, Any], descriptor: Any) -> None:
    from google.api import annotations_pb2

    patterns = []
    for f in descriptor.file:
        for s in f.service:
            for m in s.method:
                rule = m.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                if verb and verb != "custom":
                    template = getattr(rule, verb)
                    patterns.append(re.sub(r"\{[^}]+\}", "[^/]+", template) + r"(\?.*)?$")
    text = "\n".join((DEPLOY / n).read_text() for n in (*MARKDOWN, "envoy.yaml"))
    paths = set(re.findall(r"(/v[12]/[\w/{}.=&?-]*)", text))
    assert paths, "no REST path found"
    for path in paths:
        assert any(re.match(p, path.rstrip(".,")) for p in patterns), path


# --- Redpanda --------------------------------------------------------------------------------
def test_redpanda_topics_match_the_app(compose: dict[str, Any]) -> None:
    from bloasis.publish.topics import TOPICS

    svc = compose["services"]["redpanda-topics"]
    script = _service_argv(svc)[2]
    created = {
        m.group(1): (int(m.group(2)), m.group(3))
        for m in re.finditer(r"^\s*topic (\S+) (\d+) (\d+)\s*$", script, re.M)
    }
    assert created == {t.name: (t.partitions, t.config["retention.ms"]) for t in TOPICS}
    assert '--partitions "$$2"' in script and 'retention.ms="$$3"' in script
    assert "cleanup.policy=delete" in script
    assert all(t.config["cleanup.policy"] == "delete" for t in TOPICS)
    host, _, port = svc["environment"]["RPK_BROKERS"].partition(":")
    assert host == "redpanda"
    assert f"0.0.0.0:{port}" in next(a for a in compose["services"]["redpanda"]["command"]
                                     if "--kafka-addr" in a)  # fmt: skip


# --- compose structure -----------------------------------------------------------------------
def test_compose_services_health_dependencies_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    one_shot = {n for n, s in services.items() if s.get("restart") == "no"}
    assert {"migrate", "deploy", "redpanda-topics"} <= one_shot
    expected = {"redpanda", "console", "postgres", "redis", "prefect-server", "worker", "grpc",
                "envoy"}  # fmt: skip
    assert expected <= set(services) - one_shot
    for name, svc in services.items():
        if name not in one_shot:
            test = svc.get("healthcheck", {}).get("test")
            assert test and not svc["healthcheck"].get("disable"), f"{name}: no health check"
            assert svc.get("restart") in {"unless-stopped", "always"}, name
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            want = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert cond == {"condition": want}, f"{name} -> {dep}: {cond}"
    # Named volumes are declared (and every declared one is used); bind sources exist.
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            if isinstance(vol, str):
                source = vol.split(":")[0]
                kind = "bind" if source.startswith((".", "/")) else "volume"
            else:
                source, kind = vol["source"], vol["type"]
            if kind == "volume":
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
            elif source != "./bloasis.pb":  # built by build_descriptor.py
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    assert used == declared
    for name in ("postgres", "redis", "redpanda"):
        assert any(isinstance(v, str) and v.split(":")[0] in declared
                   for v in services[name]["volumes"]), name  # fmt: skip
    # Production images and durability.
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes" and "--save" in redis_cmd
    # Host ports are unique.
    published = [str(p).rsplit(":", 1)[0] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), published
    # The app services share the image built from the Dockerfile.
    builds = {json.dumps(s["build"], sort_keys=True) for s in services.values() if "build" in s}
    assert builds == {json.dumps({"context": "..", "dockerfile": "deployments/Dockerfile"},
                                 sort_keys=True)}  # fmt: skip
    assert _service_argv(services["migrate"]) == ["bloasis", "db", "upgrade"]


# --- Dockerfile ------------------------------------------------------------------------------
def test_dockerfile(prefect_yaml: dict[str, Any]) -> None:
    inst = _dockerfile()
    text = (DEPLOY / "Dockerfile").read_text()
    assert set(dict(inst)["ALL_FROM"].replace(" AS build", "").split()) == {"python:3.11-slim"}
    final = dict(inst)
    assert final["USER"].split(":")[0] not in {"root", "0"}
    entry, _ = _image()
    assert entry == ["bloasis"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'bloasis = "bloasis.cli:main"' in pyproject
    # Installed with the live providers' extra, without the embedded one; no compiler.
    installs = re.findall(r"pip install ([^\n&]*)", text)
    assert installs and all("embedded" not in i for i in installs) and any(
        i.strip() == "'.[live]'" for i in installs
    )  # fmt: skip
    assert not re.search(r"apt-get|build-essential|gcc", text)
    # What the stages copy exists and is not excluded by the BuildKit ignore file.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), path
            assert f"!{path.rstrip('/')}" in ignore, f"{path} is excluded from the build context"
    # The process worker loads prefect.yaml's entrypoints from the image's working directory.
    copied = {a.split()[0].rstrip("/") for k, a in inst if k == "COPY" and "--from" not in a}
    for d in prefect_yaml["deployments"]:
        top = d["entrypoint"].split("/")[0]
        assert top in copied, f"{d['entrypoint']} is not in the runtime image"
    assert "prefect.yaml" in copied and final["WORKDIR"] == "/app"


# --- Kubernetes ------------------------------------------------------------------------------
def test_kubernetes_deploy_job_finds_every_deployment(prefect_yaml: dict[str, Any]) -> None:
    (deploy,) = [c for c in _k8s_containers() if c["name"] == "deploy"]
    script = _commands(_as_list(deploy["command"]) + _as_list(deploy["args"]))
    (lister,) = [c for c in script if c[:2] == ["python", "-c"]]
    # The image's working directory holds prefect.yaml as the repository root does.
    proc = subprocess.run(
        [sys.executable, "-c", lister[2]], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [d["name"] for d in prefect_yaml["deployments"]]
    # Flow-run pods use the same Secret and run Prefect's args despite the `bloasis` entrypoint.
    md = (DEPLOY / "kubernetes.md").read_text()
    assert '"command": ["/usr/bin/env"]' in md and '"secretRef": { "name": "bloasis-env" }' in md
    for c in _k8s_containers():
        assert c["envFrom"] == [{"secretRef": {"name": "bloasis-env"}}], c["name"]
