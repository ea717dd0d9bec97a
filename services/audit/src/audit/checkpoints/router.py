"""``/v1/audit/checkpoints`` and ``/v1/audit/public-key``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from audit.access import CHAIN_PATTERN, READ_SCOPE, resolve_chain
from audit.chain.models import Checkpoint
from audit.checkpoints.schemas import CheckpointRead, PublicKeyRead
from audit.context import AuditDep
from audit.entries.service import record_read
from shared.auth import CurrentPrincipal, require_scopes
from shared.errors import BadRequest
from shared.http import LimitParam, Page, SessionDep, decode_cursor, encode_cursor, problems

__all__ = ["public_router", "router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(require_scopes(READ_SCOPE))])
public_router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get(
    "/checkpoints",
    response_model=Page[CheckpointRead],
    responses=problems(
        400,
        401,
        403,
        404,
        422,
        described={
            403: "The caller's role in the client, or an agent's scopes, do not allow reading its log",
            422: "Invalid input, or client_id needed (the caller audits several clients or none)",
        },
    ),
)
async def list_checkpoints(
    request: Request,
    session: SessionDep,
    audit: AuditDep,
    principal: CurrentPrincipal,
    client_id: Annotated[
        str | None, Query(pattern=CHAIN_PATTERN, description="A client id, or 'platform' (admins).")
    ] = None,
    limit: LimitParam = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[CheckpointRead]:
    """A chain's signed checkpoints, newest first."""
    chain = resolve_chain(principal, client_id, required=True)
    data = decode_cursor(cursor)
    q = select(Checkpoint).where(Checkpoint.chain_id == chain)
    if data is not None:
        try:
            q = q.where(Checkpoint.sequence < int(data["s"]))
        except (KeyError, TypeError, ValueError):
            raise BadRequest("Invalid cursor", code="invalid_cursor") from None
    rows = list((await session.execute(q.order_by(Checkpoint.sequence.desc()).limit(limit + 1))).scalars())
    next_cursor = encode_cursor({"s": rows[limit - 1].sequence}) if len(rows) > limit else None
    rid = getattr(request.state, "request_id", None)
    await record_read(
        session, audit, principal, chain=chain, what="checkpoints", details={"returned": min(len(rows), limit)},
        request_id=rid if isinstance(rid, str) else None,
    )  # fmt: skip
    return Page[CheckpointRead](items=[CheckpointRead.of(cp) for cp in rows[:limit]], next_cursor=next_cursor)


@public_router.get("/public-key", response_model=PublicKeyRead)
async def public_key(audit: AuditDep) -> PublicKeyRead:
    """The key checkpoints are signed with (anyone may fetch it: it proves, it grants nothing)."""
    return PublicKeyRead(**audit.signer.jwk())


@public_router.get("/public-keys")
async def public_keys(audit: AuditDep) -> dict[str, list[dict[str, str]]]:
    """Every key checkpoints may carry (the current one and retired ones), as a JWK set."""
    return audit.keyring.jwks()
