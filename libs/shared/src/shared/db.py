"""Async SQLAlchemy plumbing: one engine per service, its own schema as the search path."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import uuid_utils
from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from shared.errors import NotFound

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Repository",
    "create_engine",
    "create_session_factory",
    "new_id",
    "relationship",
    "schema_metadata",
    "to_asyncpg_url",
    "transaction",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> uuid.UUID:
    """A time-ordered UUIDv7, so ids sort by creation and index well."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def utcnow() -> datetime:
    return datetime.now(UTC)


def schema_metadata(schema: str | None = None) -> MetaData:
    """Metadata with Baton's naming convention. Tables stay schema-less; the search path picks the schema."""
    return MetaData(naming_convention=NAMING_CONVENTION, schema=schema)


class Base(DeclarativeBase):
    """Default declarative base. Services normally declare their own with ``schema_metadata()``."""

    metadata = schema_metadata()
    __mapper_args__: Any = {}


def to_asyncpg_url(url: str) -> str:
    """Accept ``postgresql://`` or ``postgres://`` URLs and return one for SQLAlchemy's asyncpg dialect."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def create_engine(url: str, *, schema: str, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An engine whose connections use ``schema`` (then ``public``, for extensions) as the search path."""
    return create_async_engine(
        to_asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        echo=echo,
        connect_args={"server_settings": {"search_path": f"{schema},public", "application_name": schema}},
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work commits when the block ends normally and rolls back on any exception."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


ModelT = TypeVar("ModelT", bound=DeclarativeBase)


class Repository(Generic[ModelT]):
    """Concrete generic base: the few operations every aggregate needs. Add named queries in subclasses."""

    model: type[ModelT]
    not_found: type[NotFound] = NotFound

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, id_: Any) -> ModelT | None:
        return await self.session.get(self.model, id_)

    async def get_or_raise(self, id_: Any) -> ModelT:
        obj = await self.get(id_)
        if obj is None:
            raise self.not_found(f"{self.model.__name__} {id_} not found")
        return obj

    async def get_for_update(self, id_: Any) -> ModelT | None:
        return await self.session.get(self.model, id_, with_for_update=True)

    async def add(self, obj: ModelT) -> ModelT:
        self.session.add(obj)
        await self.session.flush()
        return obj

    async def delete(self, obj: ModelT) -> None:
        await self.session.delete(obj)
        await self.session.flush()

    async def list_all(self, *, limit: int = 100) -> Sequence[ModelT]:
        result = await self.session.execute(select(self.model).limit(limit))
        return result.scalars().all()


def relationship(*args: Any, **kwargs: Any) -> Any:
    """``sqlalchemy.orm.relationship`` with ``lazy="raise"`` unless told otherwise: async code never lazy-loads."""
    from sqlalchemy.orm import relationship as _relationship

    kwargs.setdefault("lazy", "raise")
    return _relationship(*args, **kwargs)
