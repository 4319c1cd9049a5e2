"""The `bloasis` command as a user runs it: clear one-line errors, JSON output, reads."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from bloasis.config import Settings


def bloasis(
    *args: str,
    state_dir: Path | None = None,
    timeout: float = 120,
    extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOASIS_")} | (extra or {})
    if state_dir is not None:
        env["BLOASIS_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "-m", "bloasis.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_run_rejects_a_non_session_date(stack_settings: Settings, stack_state_dir: Path) -> None:
    proc = bloasis("run", "--as-of", "2022-12-25", state_dir=stack_state_dir)
    assert proc.returncode == 1
    assert "2022-12-25 is not a trading session; the session before is 2022-12-23" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = bloasis("run", "--as-of", "1950-01-03", state_dir=stack_state_dir)
    assert proc.returncode == 1 and "outside the data (1990-01-02..2022-12-28)" in proc.stderr


def test_bad_date_argument() -> None:
    proc = bloasis("run", "--as-of", "yesterday")
    assert proc.returncode == 2 and "expected a date YYYY-MM-DD" in proc.stderr


def test_get_without_server_is_unavailable(tmp_path: Path) -> None:
    proc = bloasis("get", "regime", "--address", "127.0.0.1:1", state_dir=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert "UNAVAILABLE" in proc.stderr and "Traceback" not in proc.stderr


def test_run_without_database_names_the_variable(tmp_path: Path) -> None:
    proc = bloasis("run", state_dir=tmp_path)
    assert proc.returncode == 1
    assert "BLOASIS_DATABASE_URL is not set" in proc.stderr


def test_stack_status_and_cache_listing(stack_settings: Settings, stack_state_dir: Path) -> None:
    status = bloasis("stack", "status", state_dir=stack_state_dir)
    assert status.returncode == 0
    for name in ("postgres", "redis", "kafka"):
        assert name in status.stdout
    assert status.stdout.count("running") >= 3
    topics = bloasis("topics", "--ensure", state_dir=stack_state_dir)
    assert topics.returncode == 0, topics.stderr
    assert "regime-events\t3 partitions" in topics.stdout
    assert "strategy-events\t6 partitions" in topics.stdout


def test_db_current(stack_settings: Settings, stack_state_dir: Path) -> None:
    proc = bloasis("db", "current", state_dir=stack_state_dir)
    assert proc.returncode == 0 and "schema revision: 0004" in proc.stdout


def test_every_command_has_help_with_examples() -> None:
    from bloasis.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        text = sp.format_help()
        assert "examples:" in text, name
        examples = [ln.strip() for ln in text.split("examples:")[1].splitlines() if ln.strip()]
        assert examples and all(e.startswith(f"bloasis {name}") for e in examples), name
        for e in examples:  # every example parses
            argv = shlex.split(e.split("&&")[0].split(">")[0])[1:]
            parser.parse_args(argv)
    assert "exit codes" in parser.format_help()


def test_status_reports_components_and_store(
    stack_settings: Settings, stack_state_dir: Path
) -> None:
    proc = bloasis("status", "--json", state_dir=stack_state_dir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {s["name"]: s["running"] for s in report["services"]} == {
        "postgres": True,
        "redis": True,
        "kafka": True,
    }
    assert "serving" in report["grpc"]
    assert "outbox_backlog" in report["store"] and "last_runs" in report["store"]


def test_data_universe_status_and_a_failing_ingest(
    stack_settings: Settings, stack_state_dir: Path, tmp_path: Path
) -> None:
    shown = bloasis("data", "universe", "--universe", "current20")
    assert shown.returncode == 0, shown.stderr
    assert "members:  20" in shown.stdout and "Health Care                   5" in shown.stdout
    bad = tmp_path / "u.csv"
    bad.write_text("symbol,name,sector\nAAA,A,Tech\n")
    refused = bloasis("data", "universe", "--universe", f"file:{bad}")
    assert refused.returncode == 1 and "line 2" in refused.stderr and "'Tech'" in refused.stderr
    status = bloasis("data", "status", state_dir=stack_state_dir)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("market data embedded; live universe sp500")
    # No provider answers: one line naming the provider, the series and the span; the key is
    # never printed; nothing but the failure is recorded.
    key = "fedcba9876543210fedcba9876543210"
    failed = bloasis(
        "data", "ingest", state_dir=stack_state_dir, timeout=180,
        extra={"BLOASIS_FRED_URL": "http://127.0.0.1:1", "BLOASIS_YAHOO_URL": "http://127.0.0.1:1",
               "BLOASIS_FRED_API_KEY": key, "BLOASIS_PROVIDER_ATTEMPTS": "1",
               "BLOASIS_LIVE_UNIVERSE": "current20"},
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    assert "ingest: the index is required: yahoo ^GSPC" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert key not in failed.stderr + failed.stdout
    after = bloasis("data", "status", state_dir=stack_state_dir)
    assert "ingest    live    failed" in after.stdout and key not in after.stdout


def test_regime_compare_prints_both_spans_and_the_targets(tmp_path: Path) -> None:
    out, chart = tmp_path / "c.json", tmp_path / "c.png"
    proc = bloasis(
        "regime", "compare", "--out", str(out), "--chart", str(chart),
        state_dir=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "**full** (1993-01-04 .. 2022-12-28)" in proc.stdout
    assert "**out of sample** (2007-01-03 .. 2022-12-28)" in proc.stdout
    assert "| balanced accuracy >= 0.88 |" in proc.stdout
    doc = json.loads(out.read_text())
    assert set(doc["scores"]["out_of_sample"]) == {
        "regime-v2", "regime-v3", "jump-model", "hmm-filtered", "buy-and-hold",
    }  # fmt: skip
    assert [m["peak"] for m in doc["truth"]["bear_markets"]] == [
        "2000-03-24", "2007-10-09", "2020-02-19", "2022-01-03",
    ]  # fmt: skip
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 50_000
    # The same inputs give the same document (the bootstrap has a fixed seed).
    again = bloasis("regime", "compare", "--json", "--no-chart", state_dir=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    redo = json.loads(again.stdout)
    doc.pop("chart"), doc.pop("timings_seconds"), redo.pop("timings_seconds")
    doc["models"]["regime-v3"]["selection"].pop("seconds")
    redo["models"]["regime-v3"]["selection"].pop("seconds")
    assert redo == doc


def test_regime_compare_and_backfill_reject_bad_input(tmp_path: Path) -> None:
    proc = bloasis("regime", "compare", "--cost-bp", "-1", state_dir=tmp_path)
    assert proc.returncode == 1 and "--cost-bp must be >= 0, got -1.0" in proc.stderr
    proc = bloasis("regime", "compare", "--jump-penalty", "0", state_dir=tmp_path)
    assert proc.returncode == 1 and "--jump-penalty must be positive, got 0.0" in proc.stderr
    proc = bloasis("regime", "compare", "--out", str(tmp_path / "no" / "c.json"))
    assert proc.returncode == 1 and "directory" in proc.stderr and "does not exist" in proc.stderr
    proc = bloasis("regime", "compare", "--start", "1990-01-02", "--no-chart", state_dir=tmp_path)
    assert proc.returncode == 1
    assert "start 1990-01-02 is before 1993-01-04, the first session every model" in proc.stderr
    proc = bloasis("backfill", "--model", "regime-v9", state_dir=tmp_path)
    assert proc.returncode == 1
    assert "--model 'regime-v9': not a regime model (known: regime-v2, regime-v3, all)" in (
        proc.stderr
    )
