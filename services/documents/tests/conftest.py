"""Fixtures for the documents service tests: the real app on a fresh schema of the session's Postgres.

``svc`` (fake embeddings, fast) and ``real_svc`` (the real all-MiniLM-L6-v2 model, loaded once per
session) give an HTTP client wired to the app through its lifespan, token helpers for every kind of
caller, a way to make projects known (as the projects service's events would) and to run the
processing pipeline on pending versions, and direct reads of the tables.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from documents.config import Settings
from documents.database import Base
from documents.documents.blobstore import PostgresBlobStore
from documents.documents.models import DocumentVersion
from documents.embeddings import EmbeddingProvider
from documents.embeddings.fake import FakeHashProvider
from documents.main import build_app
from documents.processing.extraction import ExtractionLimits
from documents.processing.service import Processor
from documents.projects.handlers import ProjectEvents
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.auth.testing import TokenFactory
from shared.db import create_session_factory, new_id, transaction
from shared.events.projects import ClientCreated, ProjectCreated
from shared.messaging import Actor, Envelope
from shared.messaging.outbox import outbox
from shared.testing.backends import create_fresh_schema, drop_schema

FreshSchema = Callable[..., Awaitable[tuple[str, AsyncEngine]]]
SMALL_UPLOAD_LIMIT = 256 * 1024


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


def envelope_for(event: Any, tenant: Any = None) -> Envelope:
    """An envelope as the projects service's relay would deliver it."""
    from shared.db import utcnow

    return Envelope(
        id=str(new_id()),
        source="/baton/projects",
        type=event.event_type,
        subject=str(getattr(event, "project_id", None) or getattr(event, "client_id", "")),
        time=utcnow(),
        tenant=None if tenant is None else str(tenant),
        actor=Actor(subject="admin-1", kind="user"),
        data=event.model_dump(mode="json"),
    )


@dataclass
class Svc:
    http: httpx.AsyncClient
    tokens: TokenFactory
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    schema: str
    processor: Processor
    settings: Settings

    problem = staticmethod(assert_problem)

    # -- callers -----------------------------------------------------------------------------------

    def user(self, client_id: Any, role: str = "member", sub: str | None = None) -> dict[str, str]:
        sub = sub or f"user-{role}-{str(client_id)[-6:]}"
        return bearer(self.tokens.issue(sub, memberships={str(client_id): role}, name=f"User {role}"))

    def admin(self) -> dict[str, str]:
        return bearer(self.tokens.issue("admin-1", admin=True))

    def outsider(self) -> dict[str, str]:
        return bearer(self.tokens.issue("user-nobody"))

    def agent(
        self,
        client_id: Any,
        scopes: tuple[str, ...] = ("documents:read", "documents:write", "search"),
        project_ids: list[Any] | None = None,
        sub: str = "agent-1",
    ) -> dict[str, str]:
        return bearer(
            self.tokens.issue(
                sub,
                kind="agent",
                client_id=str(client_id),
                scopes=scopes,
                project_ids=None if project_ids is None else [str(p) for p in project_ids],
            )
        )

    # -- world ---------------------------------------------------------------------------------------

    async def known_project(
        self, client_id: Any = None, project_id: Any = None
    ) -> tuple[uuid.UUID, uuid.UUID]:
        """Make a client and project known, through the same handlers the projects consumer runs."""
        client_id = uuid.UUID(str(client_id)) if client_id else uuid.uuid4()
        project_id = uuid.UUID(str(project_id)) if project_id else uuid.uuid4()
        events = ProjectEvents(self.processor.blobs)
        async with transaction(self.sessions) as s:
            await events.on_client_created(
                s,
                envelope_for(
                    ClientCreated(
                        client_id=client_id,
                        name="C",
                        slug=f"c-{client_id.hex[:8]}",
                        status="active",
                        version=1,
                    )
                ),
            )
        async with transaction(self.sessions) as s:
            await events.on_project_created(
                s,
                envelope_for(
                    ProjectCreated(
                        project_id=project_id,
                        client_id=client_id,
                        name="P",
                        kind="greenfield",
                        type="fullstack",
                        created_by="u",
                        version=1,
                    ),
                    tenant=client_id,
                ),
            )
        return client_id, project_id

    async def upload_md(
        self,
        project_id: Any,
        content: str,
        headers: dict[str, str],
        title: str = "Doc",
        kind: str = "prd",
        **extra: Any,
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/projects/{project_id}/documents",
            json={"title": title, "kind": kind, "content": content, **extra},
            headers=headers,
        )

    async def upload_file(
        self,
        project_id: Any,
        data: bytes,
        headers: dict[str, str],
        filename: str = "doc.md",
        content_type: str = "text/markdown",
        fields: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.http.post(
            f"/v1/projects/{project_id}/documents",
            files={"file": (filename, io.BytesIO(data), content_type)},
            data=fields or {"title": "Uploaded", "kind": "reference"},
            headers=headers,
        )

    async def process_pending(self) -> dict[uuid.UUID, str]:
        """Run the processing pipeline on every pending version, oldest first; version id → outcome."""
        async with self.sessions() as s:
            ids = list(
                await s.scalars(
                    select(DocumentVersion.id)
                    .where(DocumentVersion.status.in_(("pending", "processing")))
                    .order_by(DocumentVersion.created_at, DocumentVersion.version)
                )
            )
        out: dict[uuid.UUID, str] = {}
        for vid in ids:
            async with transaction(self.sessions) as s:
                out[vid] = await self.processor.process(s, vid)
        return out

    async def search(self, headers: dict[str, str], query: str, **body: Any) -> httpx.Response:
        return await self.http.post("/v1/search", json={"query": query, **body}, headers=headers)

    # -- reads -----------------------------------------------------------------------------------------

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.sessions() as s:
            return await s.scalar(text(sql), params)

    async def count(self, table: str) -> int:
        return int(await self.scalar(f"SELECT count(*) FROM {table}"))

    async def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        async with self.sessions() as s:
            query = select(outbox.c.payload).order_by(outbox.c.id)
            if event_type is not None:
                query = query.where(outbox.c.event_type == event_type)
            return [row[0] for row in await s.execute(query)]

    async def outbox_count(self) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(outbox)) or 0)


@pytest.fixture(scope="session")
def real_model() -> EmbeddingProvider:
    """The real all-MiniLM-L6-v2 int8 ONNX model, loaded once for the whole session."""
    from documents.embeddings.local import LocalMiniLMProvider

    return LocalMiniLMProvider(threads=2, batch_size=32)


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "embedding_provider": "fake",
        "project_wait_seconds": 0.0,
        "max_upload_bytes": SMALL_UPLOAD_LIMIT,
        "log_json": False,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def open_svc(
    engine: AsyncEngine, schema: str, provider: EmbeddingProvider, **settings: Any
) -> AsyncIterator[Svc]:
    """The app on ``engine`` (bound to ``schema``), with its lifespan running and an HTTP client."""
    cfg = _settings(**settings)
    tokens = TokenFactory()
    app = build_app(
        cfg, embedder=provider, engine=engine, token_verifier=tokens.verifier(), configure_observability=False
    )
    sessions = create_session_factory(engine)
    processor = Processor(
        factory=sessions,
        provider=provider,
        blobs=PostgresBlobStore(sessions),
        limits=ExtractionLimits(timeout_seconds=20, memory_bytes=512 * 1024 * 1024),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Svc(http, tokens, engine, sessions, schema, processor, cfg)


@pytest.fixture
def make_svc(fresh_schema: FreshSchema) -> Callable[..., Any]:
    """Build a ``Svc`` with a given embedding provider and settings overrides (an async context)."""

    @asynccontextmanager
    async def factory(provider: EmbeddingProvider | None = None, **settings: Any) -> AsyncIterator[Svc]:
        schema, engine = await fresh_schema("docs", Base.metadata)
        async with open_svc(engine, schema, provider or FakeHashProvider(), **settings) as s:
            yield s

    return factory


@pytest.fixture(scope="session")
async def session_svc_factory(database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Like ``make_svc`` but for session-scoped fixtures (schemas dropped at the end of the session)."""
    made: list[tuple[str, AsyncEngine]] = []

    @asynccontextmanager
    async def factory(provider: EmbeddingProvider, **settings: Any) -> AsyncIterator[Svc]:
        schema, engine = await create_fresh_schema(database_url, "docs", Base.metadata)
        made.append((schema, engine))
        async with open_svc(engine, schema, provider, **settings) as s:
            yield s

    yield factory
    for schema, engine in made:
        await engine.dispose()
        await drop_schema(database_url, schema)


@pytest.fixture
async def svc(make_svc: Callable[..., Any]) -> AsyncIterator[Svc]:
    async with make_svc() as s:
        yield s


@pytest.fixture
async def real_svc(make_svc: Callable[..., Any], real_model: EmbeddingProvider) -> AsyncIterator[Svc]:
    async with make_svc(real_model) as s:
        yield s


class PdfFactory:
    """PDF files built by the tests themselves: text pages, encrypted, corrupt, image-only, zip bombs,
    slow to parse, greedy for memory."""

    @staticmethod
    def text(pages: list[str]) -> bytes:
        """A valid PDF with one text page per item (Helvetica, one line per text line)."""

        def escape(line: str) -> str:
            return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

        objects: list[bytes] = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"",  # pages, filled below
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
        kids = []
        for page in pages:
            ops = (
                "BT /F1 11 Tf 50 760 Td 14 TL "
                + " ".join(f"({escape(line)}) Tj T*" for line in page.split("\n"))
                + " ET"
            )
            content_id = len(objects) + 2
            objects.append(
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                f"/Contents {content_id} 0 R >>".encode()
            )
            kids.append(f"{len(objects)} 0 R")
            objects.append(f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream".encode("latin-1"))
        objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
        return PdfFactory._assemble(objects)

    @staticmethod
    def _assemble(objects: list[bytes]) -> bytes:
        out = io.BytesIO()
        out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(objects, start=1):
            offsets.append(out.tell())
            out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
        xref = out.tell()
        out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
        for offset in offsets:
            out.write(b"%010d 00000 n \n" % offset)
        out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
        return out.getvalue()

    @staticmethod
    def encrypted(pages: list[str], password: str = "s3cret") -> bytes:
        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(PdfFactory.text(pages))))
        writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()

    @staticmethod
    def corrupt() -> bytes:
        good = PdfFactory.text(["This file will be cut in half."])
        return good[: len(good) // 2] + b"\x00garbage\xff" * 10

    @staticmethod
    def image_only() -> bytes:
        """Pages that draw only a filled rectangle: no text layer at all."""
        ops = "0.5 g 50 50 500 700 re f"
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream".encode(),
        ]
        return PdfFactory._assemble(objects)

    @staticmethod
    def zip_bomb(expanded_bytes: int = 150_000_000) -> bytes:
        """A few hundred KB that inflate to ``expanded_bytes`` of page content."""
        import zlib

        compressor = zlib.compressobj(9)
        parts = [compressor.compress(b"BT /F1 12 Tf 72 720 Td (")]
        block = b"A" * 1_000_000
        for _ in range(expanded_bytes // len(block)):
            parts.append(compressor.compress(block))
        parts.append(compressor.compress(b") Tj ET"))
        parts.append(compressor.flush())
        stream = b"".join(parts)
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
            b"/Contents 4 0 R >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
        return PdfFactory._assemble(objects)

    @staticmethod
    def _one_page(*contents: bytes) -> bytes:
        """One Helvetica page drawn by ``contents``, each a Flate-compressed stream (several: an array)."""
        import zlib

        streams = [zlib.compress(content, 9) for content in contents]
        refs = " ".join(f"{5 + n} 0 R" for n in range(len(streams)))
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
            + f"/Contents [{refs}] >>".encode(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
        for stream in streams:
            objects.append(
                b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"
            )
        return PdfFactory._assemble(objects)

    @staticmethod
    def slow(operations: int = 300_000) -> bytes:
        """A few KB whose page holds ``operations`` path operators (6 tokens each, under pypdf's 2 million
        tokens per stream): seconds of parsing before the text comes out."""
        return PdfFactory._one_page(b"BT /F1 12 Tf 72 720 Td (slow) Tj ET\n" + b"0 0 m 1 1 l\n" * operations)

    @staticmethod
    def memory_hog(image_bytes: int = 70_000_000) -> bytes:
        """~70 KB whose page draws its text, then an uncompressed inline image of ``image_bytes`` (under
        pypdf's 75 MB per page): parsed in a few buffered reads, but the reader holds copies of the image at
        once and needs over 192 MB of address space, where an ordinary PDF needs under 96 MB."""
        width = 1000
        height = image_bytes // width
        image = b"q 100 0 0 100 72 500 cm BI /W %d /H %d /BPC 8 /CS /G ID " % (width, height)
        return PdfFactory._one_page(
            b"BT /F1 12 Tf 72 720 Td (hog) Tj ET", image + bytes(width * height) + b"\nEI Q\n"
        )


@pytest.fixture(scope="session")
def pdfs() -> type[PdfFactory]:
    return PdfFactory
