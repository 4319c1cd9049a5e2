"""The copy of the original BLOASIS contract in `tests/v1_contract/` (the .proto files clients
were generated from) is checked against the shared document field by field: every message, field
number, name, type and label, every enum value, every service method with its request and
response. The compatibility tests (issue 14) generate their client stubs from this copy, so it
must be exact."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "tests" / "v1_contract"
DOC = ROOT.parent / "shared" / "BLOASIS_V1_API.md"
FD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    FD.TYPE_STRING: "string",
    FD.TYPE_DOUBLE: "double",
    FD.TYPE_BOOL: "bool",
    FD.TYPE_INT32: "int32",
}


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    out = tmp_path_factory.mktemp("v1") / "contract.pb"
    protos = sorted(str(p.relative_to(CONTRACT)) for p in CONTRACT.rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{CONTRACT}",
         f"--descriptor_set_out={out}", "--include_imports", *protos],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in fds.file if f.name.startswith("bloasis/")}


def _messages(files: dict[str, descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """`pkg.Message` -> the document's field list (`1 \\`name\\` type; ...`)."""
    out: dict[str, str] = {}
    for f in files.values():
        maps = {}
        for m in f.message_type:
            for nested in m.nested_type:
                if nested.options.map_entry:
                    maps[f".{f.package}.{m.name}.{nested.name}"] = nested
        for m in f.message_type:
            parts = []
            for fld in m.field:
                if fld.type in (FD.TYPE_MESSAGE, FD.TYPE_ENUM):
                    entry = maps.get(fld.type_name)
                    typ = "map<string,string>" if entry else fld.type_name.lstrip(".")
                else:
                    typ = _SCALARS[fld.type]
                repeated = fld.label == FD.LABEL_REPEATED and not typ.startswith("map<")
                parts.append(f"{fld.number} `{fld.name}` {'repeated ' if repeated else ''}{typ}")
            out[f"{f.package}.{m.name}"] = "; ".join(parts)
    return out


def test_the_document_is_there() -> None:
    assert DOC.is_file(), f"{DOC} is the source of the contract copy"


def test_every_message_matches_the_document(
    files: dict[str, descriptor_pb2.FileDescriptorProto],
) -> None:
    doc = {
        name: fields.strip()
        for name, fields in re.findall(r"^Message `([\w.]+)`: (.*)$", DOC.read_text(), re.M)
    }
    assert len(doc) == 50
    assert _messages(files) == doc


def test_every_enum_matches_the_document(
    files: dict[str, descriptor_pb2.FileDescriptorProto],
) -> None:
    doc = dict(re.findall(r"^Enum `([\w.]+)`: (.*)$", DOC.read_text(), re.M))
    got = {
        f"{f.package}.{e.name}": ", ".join(f"{v.name}={v.number}" for v in e.value)
        for f in files.values()
        for e in f.enum_type
    }
    assert got == doc and len(got) == 2


def test_every_method_matches_the_document(
    files: dict[str, descriptor_pb2.FileDescriptorProto],
) -> None:
    text = DOC.read_text()
    doc = set()
    for service, table in re.findall(r"^Service `([\w.]+)`:\n\n(.*?)\n\n", text, re.M | re.S):
        for row in table.splitlines()[2:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            doc.add((service, cells[0], cells[1], cells[2]))
    got = {
        (f"{f.package}.{s.name}", m.name, m.input_type.lstrip("."), m.output_type.lstrip("."))
        for f in files.values()
        for s in f.service
        for m in s.method
    }
    assert got == doc and len(got) == 15


# --- what the server serves as v1 (proto/bloasis/pb/v1) --------------------------------------

SERVED = ROOT / "proto"
SERVED_SERVICES = ("market_regime", "classification", "strategy", "backtesting")


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gen_proto import _include_dirs
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("served") / "v1.pb"
    protos = sorted(str(p.relative_to(SERVED)) for p in (SERVED / "bloasis/pb/v1").glob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *(f"-I{d}" for d in _include_dirs()),
         f"--descriptor_set_out={out}", "--include_imports", *protos],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in fds.file if f.name.startswith("bloasis/")}


def test_the_server_serves_every_original_field_unchanged(
    served: dict[str, descriptor_pb2.FileDescriptorProto],
) -> None:
    """Every original message is served with each of its fields at the same number with the
    same name and type; additions only at numbers the original does not use."""
    doc = {
        name: fields.strip()
        for name, fields in re.findall(r"^Message `([\w.]+)`: (.*)$", DOC.read_text(), re.M)
    }
    assert len(doc) == 50 and sum(n.startswith("bloasis.backtesting.") for n in doc) == 11
    got = _messages(served)
    added = 0
    for name, fields in doc.items():
        original = fields.split("; ")
        mine = got[name].split("; ")
        assert mine[: len(original)] == original, name
        numbers = {f.split(" ")[0] for f in original}
        assert not numbers & {f.split(" ")[0] for f in mine[len(original) :]}, name
        added += len(mine) - len(original)
    # user_id; as_of, model_version, override, served_from; reasoning, risk_level;
    # BacktestResponse's status, progress, message, error.
    assert added == 11
    backtest = got["bloasis.backtesting.BacktestResponse"].split("; ")[4:]
    assert backtest == [
        "5 `status` string", "6 `progress` double", "7 `message` string", "8 `error` string"
    ]  # fmt: skip


def test_the_server_serves_every_original_method_and_route(
    served: dict[str, descriptor_pb2.FileDescriptorProto],
) -> None:
    from google.api import annotations_pb2

    text = DOC.read_text()
    doc = set()
    for service, table in re.findall(r"^Service `([\w.]+)`:\n\n(.*?)\n\n", text, re.M | re.S):
        for row in table.splitlines()[2:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            doc.add((service, *cells[:4]))
    got = set()
    for f in served.values():
        for s in f.service:
            for m in s.method:
                rule = m.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                route = ""
                if verb:
                    route = f"{verb.upper()} {getattr(rule, verb)}"
                    route += f" body={rule.body}" if rule.body else ""
                got.add(
                    (f"{f.package}.{s.name}", m.name, m.input_type.lstrip("."),
                     m.output_type.lstrip("."), route)
                )  # fmt: skip
    assert got == doc and len(got) == 15
