"""A client generated from the original BLOASIS contract (`tests/v1_contract/`), as existing
BLOASIS services were: it generates its stubs into a directory of its own and imports only those
(never `bloasis.pb`, whose messages share full names with the original ones), so it runs in a
process of its own.

    python tests/v1_client.py HOST:PORT [--user ID] [--token TOKEN]
    python tests/v1_client.py HOST:PORT --backtest 2021-01-04:2022-12-28 [--token TOKEN]
    python tests/v1_client.py --decode < events.jsonl

Calls every method of the three original services with the documented requests and prints one
JSON object per method: the status code, and the decoded answer or the error as such a client
sees it. With `--backtest PERIOD` it calls the original BacktestingService instead, as its
clients did: RunBacktest (moderate over PERIOD), GetBacktestResults polled every 0.5 s until the
results are there (the original knows no status field: results appear when done), then
CompareStrategies and RunRLBacktest. With `--decode` it is an original Kafka consumer instead:
each stdin line `{"topic": ..., "payload": ...}` is parsed as the topic's original event message
(proto3 JSON, unknown keys ignored as the original consumers' parser did) and printed decoded.
The compatibility tests run it; run by hand it shows what an original client gets.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONTRACT = Path(__file__).resolve().parent / "v1_contract"


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(CONTRACT)) for p in CONTRACT.rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{CONTRACT}", f"--python_out={out}",
         f"--grpc_python_out={out}", *protos],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def calls(user: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(module, service stub, method, request fields): every original method, documented
    requests."""
    return [
        ("market_regime", "MarketRegimeService", "GetCurrentRegime", {}),
        (
            "market_regime",
            "MarketRegimeService",
            "GetRegimeHistory",
            {"time_range": {"start_date": "2022-12-01", "end_date": "2022-12-28"}},
        ),
        (
            "market_regime",
            "MarketRegimeService",
            "SaveRegime",
            {"regime": "bear", "confidence": 0.7, "trigger": "manual"},
        ),
        ("classification", "ClassificationService", "GetSectorAnalysis", {}),
        ("classification", "ClassificationService", "GetThematicAnalysis", {}),
        ("classification", "ClassificationService", "GetCandidateSymbols", {"max_candidates": 10}),
        ("strategy", "StrategyService", "GetStockPicks", {"user_id": user, "max_picks": 5}),
        ("strategy", "StrategyService", "GetPersonalizedStrategy", {"user_id": user}),
        ("strategy", "StrategyService", "GetPreferences", {"user_id": user}),
        (
            "strategy",
            "StrategyService",
            "UpdatePreferences",
            {
                "user_id": user,
                "risk_profile": "CONSERVATIVE",
                "excluded_sectors": ["Energy"],
                "max_single_position": 0.08,
            },
        ),
        ("strategy", "StrategyService", "RunAIAnalysis", {"user_id": user}),
    ]


TOPICS = {
    "regime-events": "RegimeChangeEvent",
    "alert-events": "MarketAlertEvent",
    "strategy-events": "StrategySignalEvent",
}


def decode(lines: list[str]) -> None:
    from google.protobuf import json_format

    events_pb2 = importlib.import_module("bloasis.events_pb2")
    for line in lines:
        item = json.loads(line)
        msg = getattr(events_pb2, TOPICS[item["topic"]])()
        out: dict[str, Any] = {"topic": item["topic"]}
        try:
            json_format.Parse(item["payload"], msg, ignore_unknown_fields=True)
            out["event"] = json_format.MessageToDict(
                msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        except json_format.ParseError as exc:
            out["error"] = str(exc)
        print(json.dumps(out), flush=True)


def invoke(
    channel: Any,
    module: str,
    service: str,
    method: str,
    fields: dict[str, Any],
    timeout: float,
    meta: list[tuple[str, str]] | None,
) -> dict[str, Any]:
    """One call through the generated stub: {"method", "code", "response" | "error"}."""
    import grpc
    from google.protobuf import json_format

    pb2 = importlib.import_module(f"bloasis.{module}_pb2")
    grpc_mod = importlib.import_module(f"bloasis.{module}_pb2_grpc")
    stub = getattr(grpc_mod, f"{service}Stub")(channel)
    rpc = getattr(stub, method)
    req_type = pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    req = json_format.ParseDict(fields, getattr(pb2, req_type.input_type.name)())
    out: dict[str, Any] = {"method": f"{service}/{method}"}
    try:
        resp = rpc(req, timeout=timeout, metadata=meta)
        out |= {"code": "OK", "response": json_format.MessageToDict(resp)}
    except grpc.RpcError as exc:
        out |= {"code": exc.code().name, "error": exc.details()}
    except Exception as exc:  # a decode failure is what such a client would see
        out |= {"code": "CLIENT_ERROR", "error": f"{type(exc).__name__}: {exc}"}
    return out


def backtesting(
    channel: Any, period: str, timeout: float, meta: list[tuple[str, str]] | None
) -> None:
    """The original backtesting client: run, poll until the results are there, compare."""
    svc = ("backtesting", "BacktestingService")
    run = invoke(channel, *svc, "RunBacktest", {"strategy_type": "moderate", "period": period},
                 timeout, meta)  # fmt: skip
    print(json.dumps(run), flush=True)
    bid = run.get("response", {}).get("backtestId")
    if bid:
        deadline = time.monotonic() + 120.0
        polls = 0
        while True:
            got = invoke(channel, *svc, "GetBacktestResults", {"backtest_id": bid}, timeout, meta)
            polls += 1
            done = got["code"] != "OK" or got["response"].get("results", {}).get("results")
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(json.dumps(got | {"polls": polls}), flush=True)
        compare = invoke(channel, *svc, "CompareStrategies", {"backtest_ids": [bid]}, timeout, meta)
        print(json.dumps(compare), flush=True)
    rl = {"rl_algorithm": "PPO", "train_timesteps": 10000, "period": period}
    print(json.dumps(invoke(channel, *svc, "RunRLBacktest", rl, timeout, meta)), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("address", nargs="?")
    ap.add_argument("--decode", action="store_true", help="decode event lines from stdin")
    ap.add_argument("--user", default="test")
    ap.add_argument("--token", default=None)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--backtest", metavar="PERIOD", default=None, help="backtesting calls only")
    args = ap.parse_args()
    import grpc

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        sys.path.insert(0, tmp)
        if args.decode:
            decode(sys.stdin.read().splitlines())
            return 0
        if not args.address:
            ap.error("give HOST:PORT, or --decode")
        meta = [("authorization", f"Bearer {args.token}")] if args.token else None
        with grpc.insecure_channel(args.address) as channel:
            if args.backtest is not None:
                backtesting(channel, args.backtest, args.timeout, meta)
                return 0
            for module, service, method, fields in calls(args.user):
                out = invoke(channel, module, service, method, fields, args.timeout, meta)
                print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
