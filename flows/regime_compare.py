"""Regime model comparison flow: `bloasis.app.regime_compare.run_comparison` with its tables
as a markdown artifact (in and out of sample, the targets) and the chart written to a file the
artifact names."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bloasis.app import regime_compare as rc
from bloasis.app.steps import load_market_data
from bloasis.config import load_settings
from flows.common import PrefectReporter

compare = task(name="compare-models", cache_policy=NO_CACHE)(rc.run_comparison)


@flow(name="regime-comparison")
async def regime_comparison(
    start: date | None = None,
    end: date | None = None,
    jump_penalty: float = 50.0,
    cost_bp: float = 10.0,
    chart: str | None = None,
) -> dict[str, Any]:
    """Score regime-v2, regime-v3, the jump model and the filtered HMM against the ex-post
    dating; returns the JSON document."""
    logger = get_run_logger()
    settings = load_settings()
    md = load_market_data(settings, settings.universe, end)
    path = Path(chart) if chart else settings.state_dir / "regime-comparison.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    req = rc.CompareRequest(
        start=start, end=end, jump_penalty=jump_penalty, cost_bp=cost_bp, chart=path
    )
    out = compare(md, req, progress=logger.info)
    doc = out.document
    await PrefectReporter().markdown(
        "regime-comparison",
        "# Regime models against the ex-post bull/bear dating\n\n"
        + rc.format_report(doc)
        + f"\n\nChart (index with each model's bear periods; equity curves): `{path.resolve()}`\n",
        "regime-v2 / regime-v3 / jump model / filtered HMM",
    )
    met = sum(t["met"] for t in doc["targets"])
    logger.info("regime-v3 meets %d of %d targets out of sample", met, len(doc["targets"]))
    return doc
