"""``/v1/workflow-definitions``: list, read, and (admins) upload BMAD workflow files."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ValidationError

from shared.auth import AdminPrincipal, require_any_scope
from shared.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from shared.http import LimitParam, Page, SessionDep, decode_cursor, encode_cursor, problems
from shared.messaging.envelope import Actor
from workflows.access import SCOPES
from workflows.definitions import service
from workflows.definitions.loader import MAX_SOURCE_BYTES
from workflows.definitions.models import DefinitionRow, DefinitionVersionRow
from workflows.definitions.schemas import DefinitionRead, DefinitionSummary, DefinitionUpload, VersionRead

router = APIRouter(prefix="/v1/workflow-definitions", tags=["workflow definitions"])
_readers = [Depends(require_any_scope(*SCOPES))]  # signed in; agents with a workflows scope

DefinitionId = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


def _summary(row: DefinitionRow) -> DefinitionSummary:
    return DefinitionSummary(
        id=row.id,
        name=row.name,
        format=row.format,
        latest_version=row.latest_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _read(
    row: DefinitionRow, version: DefinitionVersionRow, versions: list[DefinitionVersionRow]
) -> DefinitionRead:
    return DefinitionRead(
        **_summary(row).model_dump(),
        version=version.version,
        content_hash=version.content_hash,
        versions=[
            VersionRead(
                version=v.version,
                content_hash=v.content_hash,
                origin=v.origin,
                created_by=v.created_by,
                created_at=v.created_at,
            )
            for v in versions
        ],
        model=version.model,
        flow_diagram=version.model.get("flow_diagram"),
        source=version.source_text,
    )


@router.get(
    "",
    response_model=Page[DefinitionSummary],
    dependencies=_readers,
    responses=problems(400, 401, 403, 422),
)
async def list_definitions(
    session: SessionDep,
    limit: LimitParam = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor of the previous page")
    ] = None,
) -> Page[DefinitionSummary]:
    after = decode_cursor(cursor)
    last = None if after is None else after.get("id")
    if after is not None and (not isinstance(last, str) or "\x00" in last):
        raise BadRequest("Invalid cursor", code="invalid_cursor")
    rows = await service.list_definitions(session, after=last, limit=limit + 1)
    items = [_summary(r) for r in rows[:limit]]
    next_cursor = encode_cursor({"id": rows[limit - 1].id}) if len(rows) > limit else None
    return Page[DefinitionSummary](items=items, next_cursor=next_cursor)


@router.get(
    "/{definition_id}",
    response_model=DefinitionRead,
    dependencies=_readers,
    responses=problems(401, 403, 404, 422),
)
async def get_definition(
    definition_id: DefinitionId,
    session: SessionDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> DefinitionRead:
    row = await service.get_definition(session, definition_id)
    chosen = await service.get_version(session, definition_id, version or row.latest_version)
    return _read(row, chosen, list(await service.list_versions(session, definition_id)))


async def _source(request: Request) -> str:
    content_type = request.headers.get("content-type", "application/yaml").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type == "application/json":
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            raise BadRequest("The body is not valid JSON", code="malformed_json") from exc
        try:
            return DefinitionUpload.model_validate(parsed).source
        except ValidationError as exc:
            raise ValidationFailed('Send {"source": "<yaml text>"} or the YAML itself') from exc
    if content_type not in _YAML_TYPES:
        raise UnsupportedMediaType(f"Send the workflow file as application/yaml, not {content_type}")
    if len(raw) > MAX_SOURCE_BYTES:
        raise ValidationFailed(
            f"The workflow file is larger than {MAX_SOURCE_BYTES} bytes", code="invalid_workflow_definition"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            "The workflow file must be UTF-8 text", code="invalid_workflow_definition"
        ) from exc


@router.post(
    "",
    response_model=DefinitionRead,
    status_code=201,
    responses={
        200: {
            "model": DefinitionRead,
            "description": "Same content as the latest version: nothing new stored",
        },
        **problems(
            400,
            401,
            403,
            413,
            415,
            422,
            described={
                400: "A JSON body that is not valid JSON",
                415: "Neither YAML (application/yaml, text/yaml, text/plain) nor JSON",
                422: "The file does not load as a BMAD workflow (``problems`` names each line, step and "
                "reason), or is not UTF-8",
            },
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "application/json": {"schema": DefinitionUpload.model_json_schema()},
            },
        }
    },
)
async def upload_definition(
    request: Request, response: Response, session: SessionDep, principal: AdminPrincipal
) -> DefinitionRead:
    """Store a new version of a workflow (v4 ``workflow:`` or v6 ``phases:``) and announce it
    (``definition.published``), so projects can name it. A file that does not load is refused with 422
    listing each problem's line, step and reason; nothing is stored then."""
    source = await _source(request)
    version, created = await service.store_definition(
        session,
        source,
        origin="upload",
        created_by=principal.subject,
        actor=Actor(subject=principal.subject, kind=principal.kind, name=principal.display_name),
    )
    if not created:
        response.status_code = 200
    row = await service.get_definition(session, version.definition_id)
    response.headers["Location"] = f"/v1/workflow-definitions/{row.id}?version={version.version}"
    return _read(row, version, list(await service.list_versions(session, row.id)))
