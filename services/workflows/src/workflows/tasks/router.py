"""``/v1/tasks`` and ``/v1/decisions``: find work, claim it, finish it, answer what the workflow asks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import CurrentPrincipal, Principal
from shared.db import utcnow
from shared.errors import BadRequest, NotFound, ValidationFailed
from shared.http import LimitParam, Page, SessionDep, decode_cursor, encode_cursor, etag_for, problems
from workflows.access import actor_of, ensure_act, ensure_read, readable_clients
from workflows.definitions.vocabulary import CANONICAL_ROLES, ROLE_ALIASES, canonical_role
from workflows.engine.errors import DecisionNotFound, TaskNotFound
from workflows.engine.operations import Engine
from workflows.instances.models import DecisionRow, TaskRow
from workflows.instances.read import decision_read, decision_row_read, task_read, task_row_read
from workflows.instances.schemas import (
    AnswerBody,
    ClaimBody,
    CompleteBody,
    DecisionRead,
    ReasonBody,
    TaskRead,
)
from workflows.instances.service import apply, lock_instance

router = APIRouter(tags=["tasks and decisions"])

TaskStateParam = Literal["pending", "ready", "claimed", "completed", "skipped", "failed"]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description="The ETag last read; the change is refused (412) if it moved on"),
]
CursorParam = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]
ROLE_NAMES = sorted(CANONICAL_ROLES | set(ROLE_ALIASES))
RoleParam = Annotated[
    str | None,
    Query(
        description="A BMAD role, by its canonical name or one of its aliases (tea, ux-designer, ...)",
        json_schema_extra={"enum": ROLE_NAMES},
    ),
]
# What a task action can be refused with, besides the caller and the request.
_TASK_PROBLEMS = problems(
    400,
    401,
    403,
    404,
    409,
    412,
    413,
    422,
    described={
        403: "The caller may read but not act on this project, or an agent lacks the task's BMAD role",
        409: "The task is not open to this caller: not ready, closed, claimed by another, or the workflow "
        "has ended; or the named document is not indexed yet or already used",
        422: "Invalid input, or a document the task cannot take (missing, of another kind)",
    },
)


class UnknownRole(ValidationFailed):
    code = "unknown_role"


def _scope_query(query: Any, model: Any, principal: Principal, client_id: uuid.UUID | None) -> Any:
    """Only rows of clients (and, for narrowed agents, projects) the caller may read."""
    clients = readable_clients(principal)
    if client_id is not None:
        if clients is not None and str(client_id) not in clients:
            raise NotFound(f"Client {client_id} not found", code="client_not_found")
        query = query.where(model.client_id == client_id)
    elif clients is not None:
        valid = []
        for c in clients:
            try:
                valid.append(uuid.UUID(c))
            except ValueError:
                continue
        query = query.where(model.client_id.in_(valid))
    if principal.kind == "agent" and not principal.is_admin and principal.project_ids is not None:
        allowed = []
        for p in principal.project_ids:
            try:
                allowed.append(uuid.UUID(p))
            except ValueError:
                continue
        query = query.where(model.project_id.in_(allowed))
    return query


def _page_after(query: Any, model: Any, cursor: str | None) -> Any:
    after = decode_cursor(cursor)
    if after is not None:
        try:
            query = query.where(model.id > uuid.UUID(str(after.get("id"))))
        except ValueError:
            raise BadRequest("Invalid cursor", code="invalid_cursor") from None
    return query.order_by(model.id)


@router.get("/v1/tasks", response_model=Page[TaskRead], responses=problems(400, 401, 403, 404, 422))
async def list_tasks(
    session: SessionDep,
    principal: CurrentPrincipal,
    client_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
    role: RoleParam = None,
    state: TaskStateParam | None = None,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
) -> Page[TaskRead]:
    """Tasks the caller may see, oldest first. ``state=ready`` includes claims whose lease ran out."""
    now = utcnow()
    query = _scope_query(select(TaskRow), TaskRow, principal, client_id)
    if project_id is not None:
        query = query.where(TaskRow.project_id == project_id)
    if role is not None:
        canonical = canonical_role(role) if role in ROLE_NAMES else None
        if canonical is None:
            raise UnknownRole(f"Unknown role '{role}'; known roles: {', '.join(ROLE_NAMES)}")
        query = query.where(TaskRow.roles.contains([canonical]))
    expired = and_(TaskRow.state == "claimed", TaskRow.lease_expires_at <= now)
    if state == "ready":
        query = query.where(or_(TaskRow.state == "ready", expired))
    elif state == "claimed":
        query = query.where(TaskRow.state == "claimed", TaskRow.lease_expires_at > now)
    elif state is not None:
        query = query.where(TaskRow.state == state)
    rows = (await session.scalars(_page_after(query, TaskRow, cursor).limit(limit + 1))).all()
    items = [task_row_read(r, now) for r in rows[:limit]]
    next_cursor = encode_cursor({"id": str(rows[limit - 1].id)}) if len(rows) > limit else None
    return Page[TaskRead](items=items, next_cursor=next_cursor)


async def _task_row(
    session: AsyncSession, principal: Principal, task_id: uuid.UUID, *, act: bool = False
) -> TaskRow:
    """The task if the caller may read it (``act``: act on it): 404 if hidden, 403 if not allowed."""
    row = await session.get(TaskRow, task_id)
    if row is None:
        raise TaskNotFound(f"Task {task_id} not found")
    (ensure_act if act else ensure_read)(
        principal, row.client_id, row.project_id, not_found=lambda: TaskNotFound(f"Task {task_id} not found")
    )
    return row


@router.get("/v1/tasks/{task_id}", response_model=TaskRead, responses=problems(401, 403, 404, 422))
async def get_task(task_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal) -> TaskRead:
    return task_row_read(await _task_row(session, principal, task_id), utcnow())


async def _task_action(
    session: AsyncSession,
    principal: Principal,
    task_id: uuid.UUID,
    response: Response,
    if_match: str | None,
    operation: Callable[[Engine], Any],
) -> TaskRead:
    row = await _task_row(session, principal, task_id, act=True)
    instance = await lock_instance(session, row.instance_id)
    _, engine = await apply(session, instance, operation, actor=actor_of(principal), if_match=if_match)
    response.headers["ETag"] = etag_for(instance.version)
    task = engine.state.tasks[str(task_id)]
    return task_read(
        task,
        instance_id=instance.id,
        project_id=instance.project_id,
        client_id=instance.client_id,
        now=engine.now,
    )


@router.post("/v1/tasks/{task_id}/claim", response_model=TaskRead, responses=_TASK_PROBLEMS)
async def claim_task(
    task_id: uuid.UUID,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
    body: ClaimBody | None = None,
) -> TaskRead:
    """Hold a ready task for a lease (``lease_seconds``, bounded); claiming again renews it. Agents may
    claim only tasks whose role is among their ``bmad_roles``."""
    settings = request.app.state.settings
    lease = min(
        (body.lease_seconds if body and body.lease_seconds else settings.lease_seconds),
        settings.max_lease_seconds,
    )
    actor = actor_of(principal)
    return await _task_action(
        session,
        principal,
        task_id,
        response,
        if_match,
        lambda e: e.claim(str(task_id), actor, lease_seconds=lease),
    )


@router.post("/v1/tasks/{task_id}/complete", response_model=TaskRead, responses=_TASK_PROBLEMS)
async def complete_task(
    task_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
    body: CompleteBody | None = None,
) -> TaskRead:
    """Finish a task. One that must produce a document names it (``document_id``), and the document must
    be an indexed document of this project of the right kind."""
    actor = actor_of(principal)
    doc = str(body.document_id) if body and body.document_id else None
    title = body.story_title if body else None
    return await _task_action(
        session,
        principal,
        task_id,
        response,
        if_match,
        lambda e: e.complete(str(task_id), actor, document_id=doc, story_title=title),
    )


@router.post("/v1/tasks/{task_id}/skip", response_model=TaskRead, responses=_TASK_PROBLEMS)
async def skip_task(
    task_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
    body: ReasonBody | None = None,
) -> TaskRead:
    """Skip an optional task (409 ``task_not_optional`` otherwise)."""
    actor = actor_of(principal)
    reason = body.reason if body else None
    return await _task_action(
        session, principal, task_id, response, if_match, lambda e: e.skip(str(task_id), actor, reason=reason)
    )


@router.post("/v1/tasks/{task_id}/fail", response_model=TaskRead, responses=_TASK_PROBLEMS)
async def fail_task(
    task_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
    body: ReasonBody | None = None,
) -> TaskRead:
    """Report a failed attempt; the step gets a fresh ready task."""
    actor = actor_of(principal)
    reason = body.reason if body else None
    return await _task_action(
        session, principal, task_id, response, if_match, lambda e: e.fail(str(task_id), actor, reason=reason)
    )


@router.get("/v1/decisions", response_model=Page[DecisionRead], responses=problems(400, 401, 403, 404, 422))
async def list_decisions(
    session: SessionDep,
    principal: CurrentPrincipal,
    client_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
    state: Literal["open", "answered"] | None = None,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
) -> Page[DecisionRead]:
    query = _scope_query(select(DecisionRow), DecisionRow, principal, client_id)
    if project_id is not None:
        query = query.where(DecisionRow.project_id == project_id)
    if state is not None:
        query = query.where(DecisionRow.state == state)
    rows = (await session.scalars(_page_after(query, DecisionRow, cursor).limit(limit + 1))).all()
    next_cursor = encode_cursor({"id": str(rows[limit - 1].id)}) if len(rows) > limit else None
    return Page[DecisionRead](items=[decision_row_read(r) for r in rows[:limit]], next_cursor=next_cursor)


async def _decision_row(
    session: AsyncSession, principal: Principal, decision_id: uuid.UUID, *, act: bool = False
) -> DecisionRow:
    """The decision if the caller may read it (``act``: answer it): 404 if hidden, 403 if not allowed."""
    row = await session.get(DecisionRow, decision_id)
    if row is None:
        raise DecisionNotFound(f"Decision {decision_id} not found")
    (ensure_act if act else ensure_read)(
        principal,
        row.client_id,
        row.project_id,
        not_found=lambda: DecisionNotFound(f"Decision {decision_id} not found"),
    )
    return row


@router.get(
    "/v1/decisions/{decision_id}", response_model=DecisionRead, responses=problems(401, 403, 404, 422)
)
async def get_decision(
    decision_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal
) -> DecisionRead:
    return decision_row_read(await _decision_row(session, principal, decision_id))


@router.post(
    "/v1/decisions/{decision_id}",
    response_model=DecisionRead,
    responses=problems(
        400,
        401,
        403,
        404,
        409,
        412,
        413,
        422,
        described={
            409: "The decision is already answered, or the workflow has ended",
            422: "Invalid input, or an answer that is not one of the decision's options",
        },
    ),
)
async def answer_decision(
    decision_id: uuid.UUID,
    body: AnswerBody,
    response: Response,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> DecisionRead:
    """Answer a decision (one of its ``options``); the answer and who gave it are stored and emitted.
    For "PO checklist found issues?" ``flagged_documents`` narrows who fixes them."""
    row = await _decision_row(session, principal, decision_id, act=True)
    instance = await lock_instance(session, row.instance_id)
    actor = actor_of(principal)
    decision, _ = await apply(
        session,
        instance,
        lambda e: e.answer(
            str(decision_id), actor, body.answer, flagged=body.flagged_documents, comment=body.comment
        ),
        actor=actor,
        if_match=if_match,
    )
    response.headers["ETag"] = etag_for(instance.version)
    return decision_read(
        decision, instance_id=instance.id, project_id=instance.project_id, client_id=instance.client_id
    )
