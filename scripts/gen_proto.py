"""Generate Python code for proto/ into bloasis/pb/ (or check it is fresh with --check).

The .proto files live under proto/bloasis/pb/v1/ (the original contract, packages
`bloasis.<service>`) and proto/bloasis/pb/v2/ (packages `bloasis.<service>.v2`), so grpc_tools'
absolute imports come out as `from bloasis.pb.v2 import common_pb2`, which resolve inside the
installed package.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "bloasis" / "pb"


def _include_dirs() -> list[str]:
    dirs = [str(PROTO_DIR)]
    # grpc_tools ships google/protobuf/*.proto; googleapis-common-protos ships google/api/*.proto.
    for mod, up in (("grpc_tools", 0), ("google.api.annotations_pb2", 2)):
        spec = importlib.util.find_spec(mod)
        assert spec is not None and spec.origin is not None, mod
        base = Path(spec.origin).parent
        dirs.append(str(base / "_proto") if up == 0 else str(base.parents[up - 1]))
    return dirs


def generate(out_root: Path) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.rglob("*.proto"))
    args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
    args += [f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}"]
    args += [str(p.relative_to(PROTO_DIR)) for p in protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = out_root / "bloasis" / "pb"
    init = '"""Generated from proto/ by scripts/gen_proto.py."""\n'
    for d in (pkg, *(p for p in pkg.iterdir() if p.is_dir())):
        (d / "__init__.py").write_text(init)
    return sorted(p for p in pkg.rglob("*") if p.is_file())


def _generated(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.py*") if "__pycache__" not in p.parts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if bloasis/pb is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "bloasis" / "pb"
        files = {f.relative_to(base).as_posix(): f for f in generate(Path(tmp))}
        if args.check:
            stale = [
                rel
                for rel, f in files.items()
                if not (OUT_DIR / rel).exists() or not filecmp.cmp(f, OUT_DIR / rel, False)
            ]
            extra = {p.relative_to(OUT_DIR).as_posix() for p in _generated(OUT_DIR)} - set(files)
            if stale or extra:
                print(f"bloasis/pb is stale: {sorted(stale + list(extra))}; run make proto")
                return 1
            print(f"bloasis/pb is fresh ({len(files)} files)")
            return 0
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for old in _generated(OUT_DIR):
            old.unlink()
        for rel, f in files.items():
            (OUT_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, OUT_DIR / rel)
    print(f"generated {len(files)} files in {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
