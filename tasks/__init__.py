"""Prefect tasks: thin wrappers over bloasis.pipeline, with retries on transient errors.

Importing this package (every flow does) makes log lines carry the Prefect flow run id as their
`run_id` (`bloasis.logs`; the pipeline and backfill flows use it as their pipeline run id).
"""

from bloasis.logs import set_run_id_source


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None


set_run_id_source(_flow_run_id)
