"""The backtest application service and `bloasis backtest` against the real PostgreSQL: stored
with inputs and curves, found (not recomputed) on a rerun, users read from the store, pictures,
and clear errors."""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from bloasis.app.backtest import BacktestRequest, pictures, run_backtest
from bloasis.backtest.engine import BENCHMARKS
from bloasis.backtest.types import BacktestInputError
from bloasis.config import Settings
from bloasis.store import backtests as store
from bloasis.store.db import get_engine
from bloasis.strategy.types import UserPreferences
from bloasis.users import seed_population
from tests.test_cli import bloasis

REQ = BacktestRequest(
    start=date(2021, 6, 1), end=date(2022, 12, 28), profiles=("moderate",), rebalance="monthly"
)


def test_stored_then_found_with_its_curves(stack_settings: Settings) -> None:
    # A cash amount no other test uses: this test's inputs are its own.
    req = BacktestRequest(**{**REQ.__dict__, "initial_cash": Decimal(uuid.uuid4().int % 10**6 + 1)})
    seen: list[tuple[str, int, int]] = []
    first = run_backtest(req, settings=stack_settings, progress=lambda *a: seen.append(a))
    assert not first.found and first.result is not None
    st = first.stored
    assert st.status == "succeeded" and st.progress == 1.0 and st.data_snapshot_hash
    assert st.spec["rebalance"] == "monthly" and st.spec["initial_cash"] == str(req.initial_cash)
    assert seen and seen[-1][0] == "decide" and seen[-1][1] == seen[-1][2]
    names = ["moderate", *BENCHMARKS]
    assert st.report["names"] == names and set(st.summary) == set(names)
    assert st.report["regimes"] and st.report["notes"][0].startswith("Survivorship")
    with get_engine(stack_settings).connect() as conn:
        curves = store.equity(conn, st.id)
        n = conn.execute(
            text("SELECT count(*) FROM backtest_equity WHERE backtest_id = :i"), {"i": st.id}
        ).scalar_one()
    assert n == len(names) * len(first.result.dates)
    assert [round(v, 6) for _, v in curves["moderate"]] == [
        round(float(v), 6) for v in first.result.equity[:, 0]
    ]
    again = run_backtest(req, settings=stack_settings)
    assert again.found and again.stored.id == st.id and again.result is None
    images, page = pictures(stack_settings, again.stored)
    assert set(images) == {"equity", "drawdown", "regimes"}
    assert all(b.startswith(b"\x89PNG") for b in images.values())
    assert "<table>" in page and "S&amp;P 500 buy and hold" in page


def test_a_users_backtest_reads_their_preferences(stack_settings: Settings) -> None:
    uid = f"bt-{uuid.uuid4().hex[:8]}"
    seed_population(
        get_engine(stack_settings),
        [UserPreferences(uid, "aggressive", excluded_sectors=("Energy",))],
    )
    out = run_backtest(
        BacktestRequest(**{**REQ.__dict__, "profiles": (), "user_ids": (uid,)}),
        settings=stack_settings,
    )
    assert out.stored.report["names"][0] == f"user:{uid}"
    assert out.stored.spec["portfolios"][0]["excluded"] == ["Energy"]
    with pytest.raises(BacktestInputError, match=r"^user_id: no user 'nobody-here'"):
        run_backtest(
            BacktestRequest(**{**REQ.__dict__, "user_ids": ("nobody-here",)}),
            settings=stack_settings,
        )


def test_cli_backtest(stack_settings: Settings, stack_state_dir: Path, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    proc = bloasis(
        "backtest", "--profile", "conservative", "--start", "2021-06-01", "--end",
        "2022-12-28", "--rebalance", "monthly", "--json", "--html", str(html),
        state_dir=stack_state_dir, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["summary"]["conservative"]["trades"] > 0
    assert doc["report"]["names"][0] == "conservative"
    assert html.read_text().startswith("<!doctype html>")
    text_out = bloasis(
        "backtest", "--profile", "conservative", "--start", "2021-06-01", "--end",
        "2022-12-28", "--rebalance", "monthly", state_dir=stack_state_dir, timeout=300,
    )  # fmt: skip
    assert text_out.returncode == 0 and "found: same inputs" in text_out.stdout
    assert "| CAGR |" in text_out.stdout and "Survivorship" in text_out.stdout
    bad = bloasis(
        "backtest", "--start", "2021-06-01", "--end", "2022-12-28", "--commission", "-1",
        state_dir=stack_state_dir,
    )  # fmt: skip
    assert bad.returncode == 1 and "backtest: commission: must be in [0, 0.1)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_running_backtest_whose_process_died_reads_as_failed(stack_settings: Settings) -> None:
    """A row left `running` by a stopped process (no progress for ABANDONED_AFTER) is reported
    failed, saying why, instead of running forever."""
    from datetime import UTC, datetime

    db = get_engine(stack_settings)
    live, dead = uuid.uuid4(), uuid.uuid4()
    with db.begin() as conn:
        for bid in (live, dead):
            store.create(
                conn, backtest_id=bid, inputs_key=f"test-{bid.hex}", spec={},
                model_version="regime-v2-test", model_params={}, data_source="embedded",
                data_snapshot_hash="h", code_version="t",
            )  # fmt: skip
        conn.execute(
            text("UPDATE backtests SET updated_at = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - store.ABANDONED_AFTER * 2, "i": dead},
        )
    store.set_progress(db, live, 0.5, "decide: 1/2 sessions")
    with db.connect() as conn:
        a, b = store.get(conn, live), store.get(conn, dead)
    assert a is not None and (a.status, a.progress, a.error) == ("running", 0.5, None)
    assert b is not None and b.status == "failed"
    assert b.error is not None and b.error.startswith("abandoned: no progress since")
