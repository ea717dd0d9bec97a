"""``/v1/audit/entries`` (alias ``/v1/audit/events``), ``/v1/audit/export`` and ``/v1/audit/verify``."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from audit.access import CHAIN_PATTERN, READ_SCOPE, resolve_chain
from audit.context import AuditDep
from audit.entries import service
from audit.entries.schemas import BadEntryRead, EntryFilter, EntryRead, VerifyRead
from shared.auth import CurrentPrincipal, require_scopes
from shared.http import LimitParam, Page, SessionDep, problems, session_factory

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(require_scopes(READ_SCOPE))])

ClientParam = Annotated[
    str | None,
    Query(
        pattern=CHAIN_PATTERN,
        description="A client id, or 'platform' (admins). Admins may omit it: every chain; a user who audits "
        "exactly one client, or an agent, reads that client's chain without it.",
    ),
]
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _instant(value: object) -> object:
    """An RFC 3339 date-time, as the document's ``format: date-time`` says: with its offset, and not a
    number of seconds or a bare date (which pydantic would also read)."""
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 date-time with a time zone, e.g. 2025-01-31T00:00:00Z")
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid date-time: {exc}") from None


Instant = Annotated[datetime, BeforeValidator(_instant)]


def _flag(value: object) -> object:
    """``true`` or ``false``, as the document's boolean says (not ``1``, ``no`` or ``on``)."""
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]
# Free text matched in the database: no NUL (Postgres text cannot hold it).
_TEXT = r"^[^\x00]*$"

# The refusals of every read: the chain named (or implied) and the filter.
_READ = {
    403: "The caller's role in the client, or an agent's scopes, do not allow reading its log",
    404: "No such chain, or one the caller may not see (the same answer for both)",
    422: "Invalid filter: client_id needed (the caller audits several clients or none), 'until' not "
    "after 'since', or a time range over the limit",
}


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


def entry_filter(
    principal: CurrentPrincipal,
    client_id: ClientParam = None,
    actor: Annotated[
        str | None, Query(max_length=200, pattern=_TEXT, description="Actor subject (exact).")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=200, pattern=_TEXT, description="Event type prefix.")
    ] = None,
    resource_type: Annotated[str | None, Query(max_length=100, pattern=_TEXT)] = None,
    resource_id: Annotated[str | None, Query(max_length=200, pattern=_TEXT)] = None,
    since: Annotated[Instant | None, Query(description="Recorded at or after (RFC 3339).")] = None,
    until: Annotated[Instant | None, Query(description="Recorded before (RFC 3339).")] = None,
    flagged: Annotated[Flag | None, Query(description="Only flagged (or unflagged) entries.")] = None,
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
) -> EntryFilter:
    chain = resolve_chain(principal, client_id)
    return EntryFilter(
        chain=chain,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
        flagged=flagged,
        order=order,
    )


FilterDep = Annotated[EntryFilter, Depends(entry_filter)]


@router.get(
    "/entries",
    response_model=Page[EntryRead],
    responses=problems(
        400,
        401,
        403,
        404,
        422,
        described={**_READ, 400: "Malformed cursor, or a query that took too long (narrow the filter)"},
    ),
)
async def list_entries(
    request: Request,
    session: SessionDep,
    audit: AuditDep,
    principal: CurrentPrincipal,
    f: FilterDep,
    limit: LimitParam = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[EntryRead]:
    rows, next_cursor = await service.list_entries(
        session, audit, principal, f, limit=limit, cursor=cursor, request_id=_request_id(request)
    )
    return Page[EntryRead](items=[EntryRead.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/entries/{entry_id}", response_model=EntryRead, responses=problems(401, 403, 404, 422))
async def get_entry(
    request: Request, entry_id: uuid.UUID, session: SessionDep, audit: AuditDep, principal: CurrentPrincipal
) -> EntryRead:
    return EntryRead.of(await service.get_entry(session, audit, principal, entry_id, _request_id(request)))


# The same resources under the names the gateway's public API uses.
router.add_api_route(
    "/events", list_entries, methods=["GET"], response_model=Page[EntryRead], include_in_schema=False
)
router.add_api_route(
    "/events/{entry_id}", get_entry, methods=["GET"], response_model=EntryRead, include_in_schema=False
)

_CSV_COLUMNS = (
    "id", "chain", "client_id", "sequence", "recorded_at", "occurred_at", "event_id", "actor_subject",
    "actor_kind", "actor_name", "action", "resource_type", "resource_id", "request_id", "trace_id",
    "source_stream", "stream_sequence", "producer", "producer_sequence", "flagged", "flag_reason",
    "payload_truncated", "payload", "prev_hash", "hash",
)  # fmt: skip


def _csv_line(values: list[object]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(["" if v is None else v for v in values])
    return buf.getvalue().encode()


@router.get(
    "/export",
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}},
        **problems(
            400,
            401,
            403,
            404,
            422,
            described={**_READ, 400: "A query that took too long (narrow the filter)"},
        ),
    },
    response_class=StreamingResponse,
)
async def export(
    request: Request,
    session: SessionDep,
    audit: AuditDep,
    principal: CurrentPrincipal,
    f: FilterDep,
    format: Annotated[Literal["jsonl", "ndjson", "csv"], Query()] = "jsonl",
) -> StreamingResponse:
    """Every entry matching the filter, streamed (NDJSON, one entry per line, or CSV)."""
    service.check_filter(f, audit.settings.max_query_days)
    await service.record_read(
        session, audit, principal, chain=f.chain, what="export",
        details={"filter": f.described(), "format": format}, request_id=_request_id(request),
    )  # fmt: skip
    await session.commit()  # first: the export includes its own read (refused as too broad, it stays)
    rows = await service.export_rows(session_factory(request), f, audit.settings.query_timeout_seconds)

    async def body() -> AsyncIterator[bytes]:
        if format == "csv":
            yield _csv_line(list(_CSV_COLUMNS))
        async for row in rows:
            doc = EntryRead.of(row)
            if format == "csv":
                flat = doc.model_dump(mode="json")
                yield _csv_line(
                    [
                        *[flat[k] for k in ("id", "chain", "client_id", "sequence", "recorded_at", "occurred_at", "event_id")],
                        flat["actor"]["subject"], flat["actor"]["kind"], flat["actor"]["name"], flat["action"],
                        flat["resource"]["type"], flat["resource"]["id"], flat["request_id"], flat["trace_id"],
                        flat["source"]["stream"], flat["source"]["stream_sequence"], flat["source"]["producer"],
                        flat["source"]["producer_sequence"], flat["flagged"], flat["flag_reason"],
                        flat["payload_truncated"], orjson.dumps(flat["payload"]).decode(), flat["prev_hash"],
                        flat["hash"],
                    ]
                )  # fmt: skip
            else:
                yield orjson.dumps(doc.model_dump(mode="json")) + b"\n"

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    ext = "csv" if format == "csv" else "jsonl"
    name = f"audit-{f.chain or 'all'}.{ext}"
    return StreamingResponse(
        body(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/verify", response_model=VerifyRead, responses=problems(401, 403, 404, 422, described=_READ))
async def verify(
    request: Request,
    session: SessionDep,
    audit: AuditDep,
    principal: CurrentPrincipal,
    client_id: ClientParam = None,
) -> VerifyRead:
    """Recompute the chain's hashes and links and check its signed checkpoints."""
    chain = resolve_chain(principal, client_id, required=True)
    assert chain is not None
    result = await service.verify(session, audit, principal, chain, _request_id(request))
    bad = result.first_bad
    return VerifyRead(
        ok=result.ok,
        chain=chain,
        client_id=None if chain == "platform" else uuid.UUID(chain),
        entries_checked=result.entries_checked,
        checkpoints_checked=result.checkpoints_checked,
        first_sequence=result.first_sequence,
        last_sequence=result.last_sequence,
        first_bad=None
        if bad is None
        else BadEntryRead(sequence=bad.sequence, reason=bad.reason, detail=bad.detail),
    )
