"""Build the protobuf descriptor set Envoy's gRPC-JSON transcoder reads (`bloasis.pb`).

    python deployments/build_descriptor.py [--out deployments/bloasis.pb]

Compiles every proto under proto/ with grpc_tools' protoc (the `dev` extra), with
`--include_imports` so google/api/http.proto, google/protobuf/*.proto and google/rpc/status.proto
(used by `convert_grpc_status`) are in the set. Prints the services it contains.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = Path(__file__).resolve().parent / "bloasis.pb"


def _package_root(module: str, up: int) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{module} is not installed: install the project's dev extra")
    return Path(spec.origin).parents[up]


def build(out: Path) -> list[str]:
    """Write the descriptor set to `out`; return the fully qualified service names in it."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    includes = [
        PROTO_DIR,
        _package_root("grpc_tools", 0) / "_proto",  # google/protobuf/*.proto
        _package_root("google.api.annotations_pb2", 2),  # googleapis-common-protos: google/api, rpc
    ]
    protos = [str(p.relative_to(PROTO_DIR)) for p in sorted(PROTO_DIR.rglob("*.proto"))]
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["protoc", *(f"-I{d}" for d in includes), "--include_imports", "--include_source_info"]
    args += [f"--descriptor_set_out={out}", *protos, "google/rpc/status.proto"]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return [f"{f.package}.{s.name}" for f in fds.file for s in f.service]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args()
    services = build(args.out)
    print(f"wrote {args.out}: {', '.join(services)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
