"""Reading the log: filters checked and bounded, reads recorded as entries, exports streamed.

Every read of entries, an export or a verification is itself appended (``baton.audit.log.read.v1``) to
the chain that was read (the platform chain for cross-chain reads by admins), with the filter used.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.access import authorize_chain
from audit.chain.canonical import PLATFORM_CHAIN, EntryDraft
from audit.chain.models import Entry
from audit.chain.records import READ_ACTION
from audit.chain.service import append_entries
from audit.chain.verify import VerifyResult, verify_chain
from audit.context import AuditContext
from audit.entries import repository as repo
from audit.entries.schemas import EntryFilter
from audit.errors import EntryNotFound, InvalidFilter, QueryTooBroad
from shared.auth import Principal
from shared.db import new_id, utcnow
from shared.errors import BadRequest, NotFound
from shared.http import decode_cursor, encode_cursor
from shared.telemetry import current_trace_id

__all__ = ["check_filter", "export_rows", "get_entry", "list_entries", "record_read", "verify"]

_EXPORT_PAGE = 500
_TOO_BROAD = "The query took too long; narrow the filter or the time range"


def check_filter(f: EntryFilter, max_days: int) -> None:
    if f.since is not None and f.until is not None:
        if f.until <= f.since:
            raise InvalidFilter("'until' must be after 'since'", code="time_range_empty")
        if f.until - f.since > timedelta(days=max_days):
            raise InvalidFilter(
                f"the time range may span at most {max_days} days", code="time_range_too_large"
            )


async def record_read(
    session: AsyncSession,
    ctx: AuditContext,
    principal: Principal,
    *,
    chain: str | None,
    what: str,
    details: dict[str, Any],
    request_id: str | None,
) -> None:
    if not ctx.settings.audit_reads:
        return
    target = chain or PLATFORM_CHAIN
    draft = EntryDraft(
        event_id=str(new_id()),
        action=READ_ACTION,
        client_id=None if target == PLATFORM_CHAIN else uuid.UUID(target),
        occurred_at=utcnow(),
        actor_subject=principal.subject[:200],
        actor_kind=principal.kind,
        actor_name=None if principal.display_name is None else principal.display_name[:200],
        resource_type="audit_log",
        resource_id=chain or "*",
        request_id=request_id,
        trace_id=current_trace_id(),
        payload={"what": what, **details},
    )
    if ctx.keeper is not None:
        await ctx.keeper.ensure()
    await append_entries(session, [draft])


def _cursor_position(cursor: str | None) -> repo.Position | None:
    data = decode_cursor(cursor)
    if data is None:
        return None
    try:
        return (datetime.fromisoformat(str(data["t"])), str(data["c"]), int(data["s"]))
    except (KeyError, ValueError, TypeError):
        raise BadRequest("Invalid cursor", code="invalid_cursor") from None


def _cursor_of(e: Entry) -> str:
    return encode_cursor({"t": e.recorded_at.isoformat(), "c": e.chain_id, "s": e.sequence})


async def _bounded(session: AsyncSession, seconds: float) -> None:
    # At least 1 ms: a statement_timeout of 0 would mean no limit at all.
    await session.execute(text(f"SET LOCAL statement_timeout = {max(1, math.ceil(seconds * 1000))}"))


def _too_broad(exc: DBAPIError) -> bool:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "57014" or "statement timeout" in str(orig)


async def list_entries(
    session: AsyncSession,
    ctx: AuditContext,
    principal: Principal,
    f: EntryFilter,
    *,
    limit: int,
    cursor: str | None,
    request_id: str | None,
) -> tuple[list[Entry], str | None]:
    check_filter(f, ctx.settings.max_query_days)
    after = _cursor_position(cursor)
    await _bounded(session, ctx.settings.query_timeout_seconds)
    try:
        rows = await repo.list_entries(session, f, limit=limit + 1, after=after)
    except DBAPIError as exc:
        if _too_broad(exc):
            raise QueryTooBroad(_TOO_BROAD) from None
        raise
    await session.execute(text("SET LOCAL statement_timeout = 0"))
    next_cursor = _cursor_of(rows[limit - 1]) if len(rows) > limit else None
    rows = rows[:limit]
    await record_read(
        session,
        ctx,
        principal,
        chain=f.chain,
        what="list",
        details={"filter": f.described(), "limit": limit, "returned": len(rows)},
        request_id=request_id,
    )
    return rows, next_cursor


async def get_entry(
    session: AsyncSession,
    ctx: AuditContext,
    principal: Principal,
    entry_id: uuid.UUID,
    request_id: str | None,
) -> Entry:
    entry = await repo.get_entry(session, entry_id)
    if entry is None:
        raise EntryNotFound()
    try:
        authorize_chain(principal, entry.chain_id)
    except NotFound:
        raise EntryNotFound() from None  # the same answer as for an id that does not exist
    await record_read(
        session,
        ctx,
        principal,
        chain=entry.chain_id,
        what="get",
        details={"entry_id": str(entry_id)},
        request_id=request_id,
    )
    return entry


async def _export_page(
    factory: async_sessionmaker[AsyncSession],
    f: EntryFilter,
    timeout_seconds: float,
    *,
    after: repo.Position | None,
    page_size: int,
) -> list[Entry]:
    async with factory() as session, session.begin():
        await _bounded(session, timeout_seconds)
        try:
            rows = await repo.list_entries(session, f, limit=page_size, after=after)
        except DBAPIError as exc:
            if _too_broad(exc):
                raise QueryTooBroad(_TOO_BROAD) from None
            raise
        session.expunge_all()
    return rows


async def export_rows(
    factory: async_sessionmaker[AsyncSession],
    f: EntryFilter,
    timeout_seconds: float,
    *,
    page_size: int = _EXPORT_PAGE,
) -> AsyncIterator[Entry]:
    """Every entry matching ``f``, page by page, each page in its own short transaction: constant memory
    and no transaction held open while the client reads slowly. The first page is read before this
    returns, so a query too broad for the time limit is refused (``QueryTooBroad``) before a response
    starts; a later page over the limit can only cut the stream short."""
    first = await _export_page(factory, f, timeout_seconds, after=None, page_size=page_size)

    async def pages() -> AsyncIterator[Entry]:
        rows = first
        while True:
            for row in rows:
                yield row
            if len(rows) < page_size:
                return
            last = rows[-1]
            after = (last.recorded_at, last.chain_id, last.sequence)
            rows = await _export_page(factory, f, timeout_seconds, after=after, page_size=page_size)

    return pages()


async def verify(
    session: AsyncSession, ctx: AuditContext, principal: Principal, chain: str, request_id: str | None
) -> VerifyResult:
    result = await verify_chain(session, chain, ctx.keyring)
    await record_read(
        session,
        ctx,
        principal,
        chain=chain,
        what="verify",
        details={"ok": result.ok, "entries_checked": result.entries_checked},
        request_id=request_id,
    )
    return result
