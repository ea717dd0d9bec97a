"""``/v1/audit/producers``: the reconciliation report, per producer."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from audit.access import READ_ROLES, READ_SCOPE
from audit.ingest.healing import ProducerReport
from audit.ingest.producers import list_producers, state_of
from shared.auth import CurrentPrincipal, require_scopes
from shared.errors import Forbidden
from shared.http import SessionDep, problems

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(require_scopes(READ_SCOPE))])


class GapRead(BaseModel):
    from_sequence: int
    to_sequence: int
    open_since: str
    replay_attempts: int
    lost: bool


class ProducerRead(BaseModel):
    producer: str
    stream: str | None
    last_sequence_seen: int
    contiguous_through: int
    producer_last_sequence: int
    gaps_open: int
    missing: int
    lost: int
    replays_requested: int
    replayed_entries: int
    gaps: list[GapRead]


@router.get(
    "/producers",
    response_model=list[ProducerRead],
    responses=problems(401, 403, described={403: "Auditors, agents and platform administrators only"}),
)
async def producers(session: SessionDep, principal: CurrentPrincipal) -> list[ProducerRead]:
    """Per producing service: the last sequence seen, open gaps, replays asked for. Counters only (no
    tenant data): platform admins and anyone who audits a client."""
    auditor = any(role in READ_ROLES for role in principal.memberships.values())
    if not (principal.is_admin or auditor or principal.kind == "agent"):
        raise Forbidden("Auditors and platform administrators only", code="auditor_required")
    out = []
    for row in await list_producers(session):
        report = ProducerReport.of(row)
        gaps = [
            GapRead(
                from_sequence=g.start,
                to_sequence=g.end,
                open_since=g.since.isoformat(),
                replay_attempts=g.attempts,
                lost=g.lost,
            )
            for g in state_of(row).gaps
        ]
        out.append(ProducerRead(**report.__dict__, gaps=gaps))
    return out
