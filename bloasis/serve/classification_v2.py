"""bloasis.classification.v2.ClassificationService: the sector analysis of an as-of (latest:
snapshot, Redis, PostgreSQL through `SectorReads`) and its candidates."""

from __future__ import annotations

from datetime import date
from typing import Any, Final

from bloasis.pb.v2 import classification_pb2 as cl_pb
from bloasis.serve.reads import SectorReads
from bloasis.serve.validation import parse_date_field, parse_sectors

SERVICE: Final = cl_pb.DESCRIPTOR.services_by_name["ClassificationService"]


class ClassificationServicer:
    def __init__(self, reads: SectorReads) -> None:
        self.reads = reads

    async def GetSectorAnalysis(
        self, request: cl_pb.GetSectorAnalysisRequest, context: Any
    ) -> cl_pb.SectorAnalysis:
        return await self.reads.analysis(parse_date_field("as_of", request.as_of), context)

    async def GetCandidateSymbols(
        self, request: cl_pb.GetCandidateSymbolsRequest, context: Any
    ) -> cl_pb.GetCandidateSymbolsResponse:
        as_of = parse_date_field("as_of", request.as_of)
        wanted = set(parse_sectors("sectors", request.sectors))
        pb = await self.reads.analysis(as_of, context)
        sectors = await self.reads.candidate_sectors(date.fromisoformat(pb.as_of), context)
        candidates = [
            cl_pb.Candidate(symbol=s, sector=sectors.get(s, ""))
            for s in pb.candidates
            if not wanted or sectors.get(s) in wanted
        ]
        return cl_pb.GetCandidateSymbolsResponse(
            as_of=pb.as_of, regime=pb.regime, candidates=candidates, served_from=pb.served_from
        )
