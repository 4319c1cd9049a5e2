"""Pipeline run records: lineage (parameters, data snapshot, code and model versions), status."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert

from bloasis.store.models import PipelineRun

_T = cast(Table, PipelineRun.__table__)


def start_run(
    conn: Connection,
    *,
    run_id: uuid.UUID,
    flow: str,
    trigger: str,
    as_of: date | None,
    parameters: dict[str, Any],
    data_source: str,
    data_snapshot_hash: str,
    code_version: str,
    model_version: str,
) -> None:
    conn.execute(
        insert(_T)
        .values(
            id=run_id,
            flow=flow,
            trigger=trigger,
            as_of=as_of,
            parameters=parameters,
            data_source=data_source[:200],
            data_snapshot_hash=data_snapshot_hash,
            code_version=code_version,
            model_version=model_version,
            status="running",
            started_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )


def finish_run(
    conn: Connection,
    run_id: uuid.UUID,
    *,
    status: str,
    timings: dict[str, float] | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    conn.execute(
        update(_T)
        .where(_T.c.id == run_id)
        .values(
            status=status,
            timings=timings or {},
            result=result or {},
            error=error,
            finished_at=datetime.now(UTC),
        )
    )


def abandon_running(
    conn: Connection,
    *,
    flow: str,
    model_version: str,
    as_of: date,
    keep: uuid.UUID,
    error: str,
) -> list[uuid.UUID]:
    """Mark `failed` the rows of (flow, model version, as-of) still `running`, except `keep`.
    Only correct under the run lock (`bloasis.pipeline.run_lock`): then no other run of that
    key is alive, so such rows belong to runs that died without recording their end."""
    rows = conn.execute(
        update(_T)
        .where(
            _T.c.status == "running",
            _T.c.flow == flow,
            _T.c.model_version == model_version,
            _T.c.as_of == as_of,
            _T.c.id != keep,
        )
        .values(status="failed", error=error, finished_at=datetime.now(UTC))
        .returning(_T.c.id)
    ).all()
    return [r.id for r in rows]


def get_run(conn: Connection, run_id: uuid.UUID) -> dict[str, Any] | None:
    row = conn.execute(select(_T).where(_T.c.id == run_id)).first()
    return dict(row._mapping) if row else None


def last_replayed_as_of(
    conn: Connection, *, model_version: str, start: date, end: date | None
) -> date | None:
    """The latest as-of a completed replay run reached inside [start, end] (the replay clock)."""
    q = select(func.max(_T.c.as_of)).where(
        _T.c.status == "completed",
        _T.c.model_version == model_version,
        _T.c.parameters["replay"].as_boolean().is_(True),
        _T.c.as_of >= start,
    )
    if end is not None:
        q = q.where(_T.c.as_of <= end)
    return conn.execute(q).scalar_one_or_none()
