"""bloasis.classification.ClassificationService (v1, the original contract) over `SectorReads`.

- GetSectorAnalysis: the latest stored analysis (`force_refresh`: read from PostgreSQL); the
  sector analysis is computed for the regime of its session, so a `regime` in the request is
  checked to be a regime label and the response's `regime` says which one the analysis is for.
- GetThematicAnalysis / GetCandidateSymbols: themes are defined in `bloasis.serve.v1_wire`
  (a selected sector's candidates grouped by their strongest factor).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Final

from bloasis.pb.v1 import classification_pb2 as cl1
from bloasis.pb.v2 import classification_pb2 as cl2
from bloasis.regime.types import REGIMES
from bloasis.serve.reads import SectorReads
from bloasis.serve.v1_wire import gics_sector, iso_of, themes, v1_sector
from bloasis.serve.validation import MAX_SECTORS, invalid, show

SERVICE: Final = cl1.DESCRIPTOR.services_by_name["ClassificationService"]
MAX_CANDIDATES: Final = 1000


def check_regime(raw: str) -> None:
    if raw and raw not in REGIMES:
        raise invalid(f"regime must be one of {', '.join(REGIMES)} (or empty), got {show(raw)}")


def _rationale(s: cl2.SectorScore, regime: str) -> str:
    return (
        f"score {s.score:.1f}: {regime} tilt {s.tilt:.1f} blended with strength "
        f"{s.strength:.1f} ({s.members} members, rank {s.rank})"
    )


class ClassificationServicer:
    def __init__(self, reads: SectorReads) -> None:
        self.reads = reads

    async def _latest(self, regime: str, force_refresh: bool, context: Any) -> cl2.SectorAnalysis:
        check_regime(regime)
        return await self.reads.analysis(None, context, force_refresh=force_refresh)

    async def GetSectorAnalysis(
        self, request: cl1.GetSectorAnalysisRequest, context: Any
    ) -> cl1.GetSectorAnalysisResponse:
        pb = await self._latest(request.regime, request.force_refresh, context)
        return cl1.GetSectorAnalysisResponse(
            sectors=[
                cl1.SectorScore(
                    sector=v1_sector(s.sector),
                    score=s.score,
                    rationale=_rationale(s, pb.regime),
                    selected=s.selected,
                )
                for s in pb.sectors
            ],
            regime=pb.regime,
            cached_at=iso_of(pb.computed_at),
        )

    async def _candidates(self, pb: cl2.SectorAnalysis, context: Any) -> list[dict[str, Any]]:
        """The analysis' candidates as ranked in the profile books of its as-of."""
        books = await self.reads.books(date.fromisoformat(pb.as_of), context)
        candidates = set(pb.candidates)
        return [e for book in books for e in book if e["symbol"] in candidates]

    async def GetThematicAnalysis(
        self, request: cl1.GetThematicAnalysisRequest, context: Any
    ) -> cl1.GetThematicAnalysisResponse:
        if len(request.sectors) > MAX_SECTORS:
            raise invalid(f"sectors: at most {MAX_SECTORS} entries, got {len(request.sectors)}")
        wanted = [gics_sector("sectors", s) for s in request.sectors]
        pb = await self._latest(request.regime, request.force_refresh, context)
        selected = [s.sector for s in pb.sectors if s.selected]
        found = themes(await self._candidates(pb, context), wanted or selected)
        return cl1.GetThematicAnalysisResponse(
            themes=[
                cl1.ThemeScore(
                    theme=t.name,
                    sector=v1_sector(t.sector),
                    score=round(t.score, 4),
                    rationale=t.rationale,
                    representative_symbols=list(t.symbols[:3]),
                )
                for t in found
            ],
            cached_at=iso_of(pb.computed_at),
        )

    async def GetCandidateSymbols(
        self, request: cl1.GetCandidateSymbolsRequest, context: Any
    ) -> cl1.GetCandidateSymbolsResponse:
        if not 0 <= request.max_candidates <= MAX_CANDIDATES:
            raise invalid(
                f"max_candidates must be in [0, {MAX_CANDIDATES}] (0: all), "
                f"got {request.max_candidates}"
            )
        pb = await self._latest(request.regime, request.force_refresh, context)
        rows = await self._candidates(pb, context)  # one read of the books
        found = themes(rows, None)
        theme_of = {sym: t for t in found for sym in t.symbols}
        score_of = {e["symbol"]: float(e["final_score"]) for e in rows}
        sector_of = {e["symbol"]: e["sector"] for e in rows}
        ranked = sorted(pb.candidates, key=lambda s: (-score_of.get(s, 0.0), s))
        if request.max_candidates:
            ranked = ranked[: request.max_candidates]
        return cl1.GetCandidateSymbolsResponse(
            candidates=[
                cl1.CandidateSymbol(
                    symbol=s,
                    sector=v1_sector(sector_of.get(s, "")),
                    theme=theme_of[s].name if s in theme_of else "",
                    preliminary_score=score_of.get(s, 0.0),
                )
                for s in ranked
            ],
            selected_sectors=[v1_sector(s.sector) for s in pb.sectors if s.selected],
            top_themes=[t.name for t in found[:5]],
            regime=pb.regime,
        )
