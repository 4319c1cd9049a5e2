"""`python -m bench [--quick|--tiny] [--list] [names...]`: run the suite (bench.suite), print one
JSON document on stdout (bench.common.emit); progress goes to stderr."""

from __future__ import annotations

import argparse
import os
import signal
import sys

# Set before grpc is imported (the stack forks servers; see bloasis.cli).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def _exit_on_sigterm() -> None:
    """SIGTERM (a timeout, `kill`) unwinds like Ctrl-C: the `with` blocks of the benchmarks
    stop the embedded stack and the servers they started (the default action would leave
    them running)."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    from bench.common import emit, say

    _exit_on_sigterm()
    from bench.suite import REGISTRY, run

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick")
    size.add_argument("--tiny", action="store_const", dest="size", const="tiny")
    ap.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    ap.add_argument("names", nargs="*", help=f"default: all ({', '.join(REGISTRY)})")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(REGISTRY))
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        say(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
        return 2
    emit(run(args.names, args.size or "full"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
