"""Reindexing: re-embed every chunk with the target model beside the active vectors, then switch.

``request_reindex`` (API) records a job; ``ReindexRunner`` (worker) runs it: batches of chunks lacking a
vector of the target model are embedded and written (each batch its own transaction, so a crash resumes
where it stopped), and when none is left one transaction makes the target the active model and deletes the
other models' vectors. Searches use the previous model's vectors until that commit. One runner works at a
time (a session-level advisory lock), whichever worker replica gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from documents.documents.service import SERVICE, actor_of
from documents.embeddings import EmbeddingError, EmbeddingProvider
from documents.index.models import EMBEDDING_DIM, Chunk, ChunkVector, ReindexJob
from documents.index.repository import ChunkRow, IndexRepository
from documents.processing.service import SYSTEM_ACTOR, embedding_text
from shared.auth import Principal
from shared.db import transaction, utcnow
from shared.errors import NotFound
from shared.events.documents import ReindexCompleted, ReindexRequested
from shared.messaging import emit
from shared.messaging.relay import DB_ERRORS

__all__ = ["ReindexJobNotFound", "ReindexRunner", "get_job", "request_reindex"]

log = logging.getLogger(__name__)

_MAX_PASSES = 5


class ReindexJobNotFound(NotFound):
    code = "reindex_job_not_found"


async def request_reindex(
    session: AsyncSession, principal: Principal, target_model_id: str, *, force: bool
) -> tuple[ReindexJob, bool]:
    """Queue a job for ``target_model_id``; an open job (queued or running) is returned instead."""
    open_job = await session.scalar(select(ReindexJob).where(ReindexJob.status.in_(("queued", "running"))))
    if open_job is not None:
        return open_job, False
    job = ReindexJob(
        target_model_id=target_model_id,
        previous_model_id=await IndexRepository(session).active_model(),
        force=force,
        status="queued",
        requested_by=principal.subject,
    )
    try:
        async with session.begin_nested():
            session.add(job)
            await session.flush()
    except IntegrityError:  # another request queued one at the same moment
        existing = await session.scalar(
            select(ReindexJob).where(ReindexJob.status.in_(("queued", "running")))
        )
        if existing is None:
            raise
        return existing, False
    await emit(
        session,
        ReindexRequested(
            job_id=job.id, target_model_id=target_model_id, force=force, requested_by=principal.subject
        ),
        tenant=None,
        actor=actor_of(principal),
        resource_id=job.id,
        source_service=SERVICE,
    )
    return job, True


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> ReindexJob:
    job = await session.get(ReindexJob, job_id)
    if job is None:
        raise ReindexJobNotFound("Reindex job not found")
    return job


def _missing_clause(model_id: str, force: bool) -> tuple[str, dict[str, object]]:
    if force:
        # Every chunk (its target vector is overwritten); progress is tracked by the keyset cursor.
        return "", {}
    return (
        " AND NOT EXISTS (SELECT 1 FROM chunk_vectors v WHERE v.client_id = c.client_id "
        "AND v.chunk_id = c.id AND v.model_id = :model)",
        {"model": model_id},
    )


class ReindexRunner:
    """Polls for reindex jobs and runs them with the worker's provider (``run``/``stop``, like a consumer)."""

    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        provider: EmbeddingProvider,
        *,
        batch_size: int = 128,
        poll_seconds: float = 5.0,
    ) -> None:
        self.factory = factory
        self.provider = provider
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self._stopping.clear()
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                log.warning("reindex: database unavailable (%s)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)

    async def run_once(self) -> str | None:
        """Run the open job if there is one and no other worker runs it; its final status (or None)."""
        bind = self.factory.kw["bind"]
        async with bind.connect() as lock_conn:
            locked = await lock_conn.scalar(
                text("SELECT pg_try_advisory_lock(hashtext('documents-reindex:' || current_schema()))")
            )
            if not locked:
                return None
            try:
                async with self.factory() as session:
                    job = await session.scalar(
                        select(ReindexJob)
                        .where(ReindexJob.status.in_(("queued", "running")))
                        .order_by(ReindexJob.created_at)
                    )
                if job is None:
                    return None
                return await self._run(job.id)
            finally:
                await lock_conn.execute(
                    text("SELECT pg_advisory_unlock(hashtext('documents-reindex:' || current_schema()))")
                )

    async def _run(self, job_id: uuid.UUID) -> str:
        async with transaction(self.factory) as session:
            job = await session.get(ReindexJob, job_id, with_for_update=True)
            assert job is not None
            if job.target_model_id != self.provider.model_id or self.provider.dim != EMBEDDING_DIM:
                return await self._finish(
                    session,
                    job,
                    error=f"this worker embeds with {self.provider.model_id} ({self.provider.dim} dims); the job "
                    f"asks for {job.target_model_id} ({EMBEDDING_DIM} dims). Deploy that model to the worker.",
                )
            if job.status == "queued":
                job.status, job.started_at = "running", utcnow()
            job.total_chunks = int(await session.scalar(select(func.count()).select_from(Chunk)) or 0)
            force = job.force
        try:
            embedded = 0
            for _ in range(_MAX_PASSES):
                done = await self._pass(job_id, force)
                embedded += done
                force = False  # later passes only catch chunks that arrived meanwhile
                if done == 0 or await self._missing() == 0:
                    break
                if self._stopping.is_set():
                    return "running"
        except EmbeddingError as exc:
            log.warning("reindex %s: embedding unavailable (%s); will resume", job_id, exc)
            return "running"
        async with transaction(self.factory) as session:
            job = await session.get(ReindexJob, job_id, with_for_update=True)
            assert job is not None
            missing = await self._missing(session)
            if missing:
                return await self._finish(
                    session, job, error=f"{missing} chunks still lack a vector; try again"
                )
            return await self._finish(session, job, error=None)

    async def _missing(self, session: AsyncSession | None = None) -> int:
        sql = text(
            "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM chunk_vectors v "
            "WHERE v.client_id = c.client_id AND v.chunk_id = c.id AND v.model_id = :model)"
        )
        if session is not None:
            return int(await session.scalar(sql, {"model": self.provider.model_id}) or 0)
        async with self.factory() as s:
            return int(await s.scalar(sql, {"model": self.provider.model_id}) or 0)

    async def _pass(self, job_id: uuid.UUID, force: bool) -> int:
        model_id = self.provider.model_id
        extra, params = _missing_clause(model_id, force)
        cursor: tuple[uuid.UUID, uuid.UUID] | None = None
        total = 0
        while not self._stopping.is_set():
            after = " AND (c.client_id, c.id) > (:cc, :ci)" if cursor is not None else ""
            query = text(
                "SELECT c.client_id, c.id, c.project_id, c.document_id, c.kind, c.heading_path, c.content, "
                "d.title FROM chunks c JOIN documents d ON d.id = c.document_id "
                f"WHERE true{after}{extra} ORDER BY c.client_id, c.id LIMIT :n"
            )
            args: dict[str, object] = {**params, "n": self.batch_size}
            if cursor is not None:
                args.update(cc=cursor[0], ci=cursor[1])
            async with self.factory() as session:
                rows = list(await session.execute(query, args))
            if not rows:
                break
            texts = [
                embedding_text(ChunkRow(0, tuple(r.heading_path or ()), r.content), r.title) for r in rows
            ]
            vectors = await self.provider.embed_documents(texts)
            async with transaction(self.factory) as session:
                await IndexRepository(session).insert_vectors(
                    [(r.client_id, r.id, r.project_id, r.document_id, r.kind) for r in rows],
                    vectors,
                    model_id,
                )
                job = await session.get(ReindexJob, job_id, with_for_update=True)
                if job is not None:
                    job.embedded_chunks += len(rows)
            total += len(rows)
            cursor = (rows[-1].client_id, rows[-1].id)
        return total

    async def _finish(self, session: AsyncSession, job: ReindexJob, *, error: str | None) -> str:
        previous = await IndexRepository(session).active_model()
        if error is None:
            await IndexRepository(session).set_active_model(job.target_model_id)
            await session.execute(delete(ChunkVector).where(ChunkVector.model_id != job.target_model_id))
        job.status = "failed" if error else "completed"
        job.error = error
        job.finished_at = utcnow()
        await session.flush()
        await emit(
            session,
            ReindexCompleted(
                job_id=job.id,
                status=job.status,  # type: ignore[arg-type]
                model_id=job.target_model_id if error is None else (previous or job.target_model_id),
                previous_model_id=previous,
                chunks_embedded=job.embedded_chunks,
                error=error,
            ),
            tenant=None,
            actor=SYSTEM_ACTOR,
            resource_id=job.id,
            source_service=SERVICE,
        )
        return job.status
