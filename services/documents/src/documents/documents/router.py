"""HTTP API of documents and versions. Parses, authorizes and calls one service function per request."""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from documents.access import ensure_read, ensure_write
from documents.deps import BlobsDep, FactoryDep, SettingsDep
from documents.documents import service
from documents.documents.content import SniffedContent, sniff
from documents.documents.models import Document, DocumentVersion
from documents.documents.repository import DocumentRepository, VersionNotFound
from documents.documents.schemas import (
    DocumentCreateJson,
    DocumentForm,
    DocumentKind,
    DocumentMeta,
    DocumentRead,
    DocumentStatus,
    DocumentUpdate,
    SectionRead,
    VersionCreateJson,
    VersionRead,
)
from documents.documents.upload import Upload, read_upload
from documents.index.partitions import ensure_client_partitions_now
from documents.projects.service import ProjectNotFound, find_project, wait_for_project
from shared.auth import CurrentPrincipal
from shared.errors import BadRequest, Conflict, ValidationFailed
from shared.http import (
    LimitParam,
    Page,
    SessionDep,
    check_if_match,
    decode_cursor,
    encode_cursor,
    etag_for,
    problems,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["documents"])

_FORM = DocumentForm.model_json_schema()
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    **_FORM,
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}, **_FORM["properties"]},
                }
            },
            "application/json": {"schema": DocumentCreateJson.model_json_schema()},
        },
    }
}
_VERSION_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    # Metadata changes go through PATCH: any other part is refused (unexpected_fields).
                    "additionalProperties": False,
                }
            },
            "application/json": {"schema": VersionCreateJson.model_json_schema()},
        },
    }
}


_UPLOAD_PROBLEMS = {
    400: "A multipart body that cannot be read (no 'file' part, too many parts, a field too long), or "
    "a body that is not a JSON object",
    413: "The upload is larger than the service accepts",
    415: "Neither multipart/form-data nor JSON, or content that is not Markdown, plain text or PDF",
}


class VersionNotProcessed(Conflict):
    code = "version_not_processed"


def _invalid(exc: ValidationError) -> ValidationFailed:
    errors = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    return ValidationFailed("The request is not valid", errors=errors)


def _title_from_filename(filename: str | None) -> str | None:
    """The file's own name without directories or extension: ``../../x/prd.md`` → ``prd``."""
    if not filename:
        return None
    name = PurePosixPath(filename.replace("\\", "/")).name
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return stem or None


def _meta_from_upload(upload: Upload) -> DocumentMeta:
    try:
        if upload.json is not None:
            return DocumentCreateJson.model_validate(upload.json)
        fields = {name: values[-1] for name, values in upload.fields.items()}
        if len(upload.fields.get("tags", ())) > 1:
            fields["tags"] = ",".join(upload.fields["tags"])
        form = DocumentForm.model_validate(fields)
        return form.meta(_title_from_filename(upload.filename))
    except ValidationError as exc:
        raise _invalid(exc) from exc


def _content(upload: Upload) -> SniffedContent:
    if upload.data is None:
        raise ValidationFailed("The document has no content", code="empty_content")
    return sniff(upload.data, declared=upload.declared_type, filename=upload.filename)


def _version_read(version: DocumentVersion | None) -> VersionRead | None:
    return None if version is None else VersionRead.model_validate(version)


def _document_read(doc: Document, latest: DocumentVersion | None) -> DocumentRead:
    read = DocumentRead.model_validate(doc)
    read.latest = _version_read(latest)
    return read


@router.post(
    "/projects/{project_id}/documents",
    response_model=DocumentRead,
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses={
        200: {
            "model": DocumentRead,
            "description": "Identical content already stored: the existing document",
        },
        **problems(400, 401, 403, 404, 413, 415, 422, described=_UPLOAD_PROBLEMS),
    },
)
async def create_document(
    project_id: uuid.UUID,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    blobs: BlobsDep,
    factory: FactoryDep,
) -> DocumentRead:
    """Upload a document (multipart ``file`` + fields, or JSON with Markdown ``content``)."""
    await wait_for_project(factory, project_id, settings.project_wait_seconds)
    project = await find_project(session, project_id)
    ensure_write(principal, project.client_id, project.id, ProjectNotFound("Project not found"))
    upload = await read_upload(request, max_bytes=settings.max_upload_bytes)
    meta = _meta_from_upload(upload)
    content = _content(upload)
    if not await ensure_client_partitions_now(factory, project.client_id):
        raise ProjectNotFound("Project not found")
    stored = await service.create_document(
        session, project=project, meta=meta, content=content, principal=principal, blobs=blobs
    )
    if not stored.created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/documents/{stored.document.id}"
    response.headers["ETag"] = etag_for(stored.document.revision)
    return _document_read(stored.document, stored.version)


@router.get(
    "/projects/{project_id}/documents",
    response_model=Page[DocumentRead],
    responses=problems(400, 401, 403, 404, 422),
)
async def list_documents(
    project_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: SessionDep,
    limit: LimitParam = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    kind: DocumentKind | None = None,
    status: DocumentStatus | None = None,
    # No NUL: Postgres text cannot hold it (refused here, not by the database).
    tag: Annotated[str | None, Query(min_length=1, max_length=50, pattern=r"^[^\x00]*$")] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=r"^[^\x00]*$", description="Text in the title"),
    ] = None,
) -> Page[DocumentRead]:
    project = await find_project(session, project_id)
    ensure_read(principal, project.client_id, project.id, ProjectNotFound("Project not found"))
    position = decode_cursor(cursor)
    before: uuid.UUID | None = None
    if position is not None:
        try:
            before = uuid.UUID(str(position.get("id")))
        except ValueError:
            raise BadRequest("Invalid cursor", code="invalid_cursor") from None
    repo = DocumentRepository(session)
    docs = await repo.list_for_project(
        project_id, kind=kind, status=status, tag=tag, q=q, before=before, limit=limit
    )
    more = len(docs) > limit
    docs = docs[:limit]
    latest = await repo.latest_versions(docs)
    return Page[DocumentRead](
        items=[_document_read(d, latest.get(d.id)) for d in docs],
        next_cursor=encode_cursor({"id": str(docs[-1].id)}) if more and docs else None,
    )


@router.get("/documents/{document_id}", response_model=DocumentRead, responses=problems(401, 403, 404, 422))
async def get_document(
    document_id: uuid.UUID, response: Response, principal: CurrentPrincipal, session: SessionDep
) -> DocumentRead:
    doc = await service.readable_document(session, principal, document_id)
    latest = await DocumentRepository(session).version(doc.id, doc.latest_version)
    response.headers["ETag"] = etag_for(doc.revision)
    return _document_read(doc, latest)


@router.patch(
    "/documents/{document_id}",
    response_model=DocumentRead,
    responses=problems(400, 401, 403, 404, 412, 413, 422),
)
async def update_document(
    document_id: uuid.UUID,
    changes: DocumentUpdate,
    response: Response,
    principal: CurrentPrincipal,
    session: SessionDep,
    if_match: Annotated[str | None, Header(max_length=200)] = None,
) -> DocumentRead:
    """Change metadata (title, kind, tags, epic, story). ``If-Match`` (the ETag) guards lost updates."""
    doc = await service.writable_document(session, principal, document_id)
    doc = await service.update_document(session, doc, changes, principal, if_match)
    latest = await DocumentRepository(session).version(doc.id, doc.latest_version)
    response.headers["ETag"] = etag_for(doc.revision)
    return _document_read(doc, latest)


@router.delete("/documents/{document_id}", status_code=204, responses=problems(401, 403, 404, 412, 422))
async def delete_document(
    document_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: SessionDep,
    blobs: BlobsDep,
    if_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Delete the document, all its versions, their content and their index entries."""
    doc = await service.writable_document(session, principal, document_id)
    check_if_match(if_match, doc.revision)
    await service.delete_documents(
        session, [doc], actor=service.actor_of(principal), reason="requested", blobs=blobs
    )
    return Response(status_code=204)


@router.get(
    "/documents/{document_id}/versions",
    response_model=Page[VersionRead],
    responses=problems(400, 401, 403, 404, 422),
)
async def list_versions(
    document_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: SessionDep,
    limit: LimitParam = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[VersionRead]:
    doc = await service.readable_document(session, principal, document_id)
    position = decode_cursor(cursor)
    before = position.get("v") if position is not None else None
    if before is not None and not isinstance(before, int):
        raise BadRequest("Invalid cursor", code="invalid_cursor")
    versions = await DocumentRepository(session).list_versions(doc.id, before=before, limit=limit)
    more = len(versions) > limit
    versions = versions[:limit]
    return Page[VersionRead](
        items=[VersionRead.model_validate(v) for v in versions],
        next_cursor=encode_cursor({"v": versions[-1].version}) if more and versions else None,
    )


@router.post(
    "/documents/{document_id}/versions",
    response_model=VersionRead,
    status_code=201,
    openapi_extra=_VERSION_BODY,
    responses={
        200: {"model": VersionRead, "description": "Identical to the latest version: that version"},
        **problems(400, 401, 403, 404, 413, 415, 422, described=_UPLOAD_PROBLEMS),
    },
)
async def create_version(
    document_id: uuid.UUID,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    blobs: BlobsDep,
) -> VersionRead:
    """Upload new content for a document (multipart ``file`` or JSON ``content``)."""
    doc = await service.writable_document(session, principal, document_id)
    upload = await read_upload(request, max_bytes=settings.max_upload_bytes)
    if upload.json is not None:
        try:
            VersionCreateJson.model_validate(upload.json)
        except ValidationError as exc:
            raise _invalid(exc) from exc
    elif upload.fields:
        raise ValidationFailed(
            "A new version takes only a 'file' part; change metadata with PATCH", code="unexpected_fields"
        )
    content = _content(upload)
    stored = await service.add_version(session, doc, content, principal, blobs)
    if not stored.created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/documents/{doc.id}/content?version={stored.version.version}"
    return VersionRead.model_validate(stored.version)


async def _version_or_latest(session: SessionDep, doc: Document, number: int | None) -> DocumentVersion:
    version = await DocumentRepository(session).version(doc.id, number or doc.latest_version)
    if version is None:
        raise VersionNotFound("Version not found")
    return version


@router.get(
    "/documents/{document_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/markdown": {}, "text/plain": {}, "application/pdf": {}}},
        304: {"description": "If-None-Match names this version's content"},
        **problems(
            401, 403, 404, 422, described={404: "No such document or version, or one the caller may not see"}
        ),
    },
)
async def get_content(
    document_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: SessionDep,
    blobs: BlobsDep,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """The stored bytes of the latest version (or ``?version=``), streamed, with a strong ETag."""
    doc = await service.readable_document(session, principal, document_id)
    stored = await _version_or_latest(session, doc, version)
    etag = f'"{stored.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
    if if_none_match is not None and etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    media = (
        stored.content_type
        if stored.content_type == "application/pdf"
        else f"{stored.content_type}; charset=utf-8"
    )
    extension = {"application/pdf": "pdf", "text/plain": "txt"}.get(stored.content_type, "md")
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in " ._-") else "_" for ch in doc.title)[:100]
    headers["Content-Disposition"] = (
        f'attachment; filename="{safe or "document"}-v{stored.version}.{extension}"'
    )
    headers["Content-Length"] = str(stored.size_bytes)
    return StreamingResponse(
        blobs.stream(stored.blob_key, stored.size_bytes), media_type=media, headers=headers
    )


@router.get(
    "/documents/{document_id}/sections",
    response_model=Page[SectionRead],
    responses=problems(
        401,
        403,
        404,
        409,
        422,
        described={
            404: "No such document or version, or one the caller may not see",
            409: "The version is not indexed (yet): it has no sections",
        },
    ),
)
async def get_sections(
    document_id: uuid.UUID,
    principal: CurrentPrincipal,
    session: SessionDep,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> Page[SectionRead]:
    """The level-2 sections of a processed Markdown version (latest by default), in order."""
    doc = await service.readable_document(session, principal, document_id)
    stored = await _version_or_latest(session, doc, version)
    if stored.status != "indexed":
        raise VersionNotProcessed(
            f"Version {stored.version} is {stored.status}; sections exist once it is indexed",
            version_status=stored.status,
        )
    sections = await DocumentRepository(session).sections(stored.id)
    return Page[SectionRead](
        items=[
            SectionRead(ord=s.ord, heading=s.heading, content=s.content, version=stored.version)
            for s in sections
        ]
    )
