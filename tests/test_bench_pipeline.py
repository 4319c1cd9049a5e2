"""`bench.pipeline_scale` runs end to end on its tiny size (50 symbols x 2 years) against the
session's stack and Prefect harness: the five entries in the bench shape, the per-symbol
reference and the store round trips checked equal, real flow and plain runs. No timing is
asserted (performance is measured by `make bench`, not tested)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from bloasis.config import Settings
from bloasis.regime.types import REGIMES

pytestmark = pytest.mark.prefect

SHAPE = {"name", "value", "unit", "compared_to", "baseline_value", "ratio", "target", "met"}
NAMES = {
    "pipeline_5000x10y",
    "pipeline_vs_per_symbol",
    "data_load",
    "prefect_overhead",
    "pipeline_peak_rss",
}


def test_pipeline_bench_tiny(
    prefect_harness: None, clean_db: Engine, stack_settings: Settings
) -> None:
    from prefect.settings import PREFECT_API_URL

    from bench.pipeline_scale import run

    got = run("tiny", settings=stack_settings, prefect_api_url=str(PREFECT_API_URL.value()))
    by: dict[str, dict[str, Any]] = {e["name"]: e for e in got}
    assert set(by) == NAMES and len(got) == len(NAMES)
    for e in got:
        assert set(e) >= SHAPE, e["name"]
        assert isinstance(e["value"], float) and e["value"] > 0, e
        assert e["size"] == "tiny" and e["symbols"] == 50 and e["sessions"] == 505

    flow = by["pipeline_5000x10y"]
    result = flow["result"]
    assert result["regime"] in REGIMES and result["strategies_inserted"] == 3
    assert result["users"] == 5 and result["user_strategies_written"] == 5  # the demo users
    assert result["relay"].startswith("published") and result["relay"].endswith("0 pending")
    assert {"load_s", "compute_s", "tiers_s", "users_s", "cache_s", "relay_s"} <= set(
        flow["steps_s"]
    )

    ref = by["pipeline_vs_per_symbol"]
    # The reference ran on every symbol (no extrapolation) and matched the product value for
    # value: 50 symbols x (4 raw factors + 4 scores + 5 sizing/sector inputs + 9 indicators).
    assert ref["reference_extrapolated"] is False and ref["reference_sample_symbols"] == 50
    assert ref["values_checked_equal"] == 50 * 22
    assert ref["baseline_value"] > 0 and ref["ratio"] > 0 and ref["floor_seconds"] > 0

    load = by["data_load"]
    assert load["rows"] == 50 * 505
    assert set(load["rows_per_s_by_store"]) == {
        "parquet_store",
        "postgresql_binary_copy",
        "csv_file_source",
    }

    overhead = by["prefect_overhead"]
    assert len(overhead["flow_runs_s"]) == len(overhead["plain_runs_s"]) == 1
    assert overhead["overhead"] > 0 and overhead["baseline_value"] > 0

    rss = by["pipeline_peak_rss"]
    assert rss["unit"] == "MB" and rss["value"] >= rss["rss_after_imports_mb"] > 0
