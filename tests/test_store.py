"""PostgreSQL storage against the real embedded server: migrations, idempotent inserts, reads,
the outbox."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select, text

from bloasis.config import Settings
from bloasis.store import outbox, regimes, runs
from bloasis.store.db import current_revision, downgrade, upgrade
from bloasis.store.models import Base, OutboxRow, RegimeRow
from tests.factories import RUN_ID, regime


def _seed_run(engine: Engine) -> None:
    with engine.begin() as conn:
        runs.start_run(
            conn,
            run_id=RUN_ID,
            flow="test",
            trigger="manual",
            as_of=None,
            parameters={"k": 1},
            data_source="test",
            data_snapshot_hash="0" * 64,
            code_version="t",
            model_version="rules-v1",
        )


def test_migrations_match_models_and_round_trip(stack_settings: Settings, engine: Engine) -> None:
    url = stack_settings.require("database_url")
    downgrade(url, "base")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('regimes')")).scalar() is None
    upgrade(url)
    upgrade(url)  # idempotent
    assert current_revision(url) == "0004"
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_concurrent_upgrades_serialise(stack_settings: Settings) -> None:
    """Three processes migrating a fresh database at once (two runs starting together)."""
    url = stack_settings.require("database_url")
    downgrade(url, "base")
    env = {**os.environ, "BLOASIS_DATABASE_URL": url, "BLOASIS_STATE_DIR": "/nonexistent"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bloasis.cli", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert all("schema revision: 0004" in out for out, _ in outs)


def test_regime_insert_is_idempotent_and_reads(clean_db: Engine) -> None:
    _seed_run(clean_db)
    days = [date(2022, 1, 3) + timedelta(days=i) for i in range(5)]
    with clean_db.begin() as conn:
        assert regimes.insert_regimes(conn, [regime(d, "bull") for d in days]) == days
    with clean_db.begin() as conn:
        # Same keys again, different content: nothing changes.
        assert regimes.insert_regimes(conn, [regime(d, "crisis") for d in days]) == []
    with clean_db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RegimeRow)).scalar() == 5
        latest = regimes.latest_regime(conn, "rules-v1")
        assert latest is not None and latest.as_of == days[-1] and latest.regime == "bull"
        assert latest == regime(days[-1], "bull")  # full round trip incl. indicators JSON
        prev = regimes.previous_regime(conn, "rules-v1", days[2])
        assert prev is not None and prev.as_of == days[1]
        assert regimes.previous_regime(conn, "rules-v1", days[0]) is None
        hist = regimes.regime_history(conn, "rules-v1", days[1], days[3])
        assert [r.as_of for r in hist] == days[1:4]
        page = regimes.regime_history(conn, "rules-v1", days[0], days[4], after=days[1], limit=2)
        assert [r.as_of for r in page] == days[2:4]
        assert regimes.latest_regime(conn, "other-model") is None


def test_outbox_dedup_claim_and_mark(clean_db: Engine) -> None:
    evs = [
        outbox.OutboxEvent(f"e{i}", "regime-events", "regime", f'{{"i": {i}}}') for i in range(4)
    ]
    with clean_db.begin() as conn:
        assert outbox.enqueue(conn, evs) == 4
        assert outbox.enqueue(conn, evs[:2]) == 0
    # Two concurrent claimers never get the same rows.
    with clean_db.begin() as c1, clean_db.begin() as c2:
        a = outbox.claim_pending(c1, 2)
        b = outbox.claim_pending(c2, 10)
        assert [p.event.event_id for p in a] == ["e0", "e1"]
        assert [p.event.event_id for p in b] == ["e2", "e3"]
        outbox.mark_published(c1, [p.id for p in a])
        outbox.mark_failed(c2, [p.id for p in b], "broker down")
    with clean_db.connect() as conn:
        assert outbox.backlog(conn) == 2
        rows = conn.execute(
            select(OutboxRow.event_id, OutboxRow.attempts, OutboxRow.last_error).order_by(
                OutboxRow.id
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("e0", 0, None),
        ("e1", 0, None),
        ("e2", 1, "broker down"),
        ("e3", 1, "broker down"),
    ]


def test_run_lineage_recorded(clean_db: Engine) -> None:
    _seed_run(clean_db)
    with clean_db.begin() as conn:
        runs.finish_run(conn, RUN_ID, status="completed", timings={"total_s": 1.5})
    with clean_db.connect() as conn:
        row = runs.get_run(conn, RUN_ID)
    assert row is not None
    assert row["status"] == "completed" and row["timings"] == {"total_s": 1.5}
    assert row["parameters"] == {"k": 1} and row["data_snapshot_hash"] == "0" * 64
    assert row["finished_at"] >= row["started_at"]


def test_bulk_copy_paths_twice_in_one_transaction(clean_db: Engine) -> None:
    """The COPY staging tables live until commit: a second bulk call in the same transaction
    used to fail with DuplicateTable."""
    from bloasis.store import strategies
    from bloasis.strategy.types import UserPreferences

    with clean_db.begin() as conn:
        a = [outbox.OutboxEvent(f"b{i}", "strategy-events", "k", "{}") for i in range(3)]
        b = [outbox.OutboxEvent(f"c{i}", "strategy-events", "k", "{}") for i in range(2)]
        assert outbox.copy_enqueue(conn, a) == 3
        assert outbox.copy_enqueue(conn, a + b) == 2  # only the new ids
        assert strategies.copy_preferences(conn, [UserPreferences("x1")]) == 1
        assert (
            strategies.copy_preferences(conn, [UserPreferences("x1"), UserPreferences("x2")]) == 1
        )
    with clean_db.connect() as conn:
        assert outbox.backlog(conn) == 5
        assert strategies.count_users(conn) == 2
