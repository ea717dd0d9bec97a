"""``shared.db`` on the real Postgres: the schema as search path, ``transaction()``, the generic repository,
constraint names from the naming convention, and relationships that refuse to lazy-load."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import ForeignKey, String, UniqueConstraint, select, text
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Repository, create_session_factory, new_id, relationship, schema_metadata, transaction
from shared.errors import NotFound


class Model(DeclarativeBase):
    metadata = schema_metadata()


class Shelf(Model):
    __tablename__ = "shelves"
    __table_args__ = (UniqueConstraint("label"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    label: Mapped[str] = mapped_column(String(40), index=True)
    books: Mapped[list[Book]] = relationship(back_populates="shelf")


class Book(Model):
    __tablename__ = "books"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    shelf_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shelves.id"))
    title: Mapped[str] = mapped_column(String(80))
    shelf: Mapped[Shelf] = relationship(back_populates="books")


class Shelves(Repository[Shelf]):
    model = Shelf


@pytest.fixture
async def sessions(fresh_schema):
    schema, engine = await fresh_schema("db", Model.metadata)
    return schema, create_session_factory(engine)


async def test_transaction_commits_on_success_and_rolls_back_on_error(sessions):
    _, factory = sessions
    async with transaction(factory) as session:
        await Shelves(session).add(Shelf(label="kept"))

    async def fails_after_writing() -> None:
        async with transaction(factory) as session:
            await Shelves(session).add(Shelf(label="undone"))
            raise RuntimeError("the business rule failed")

    with pytest.raises(RuntimeError):
        await fails_after_writing()
    async with factory() as session:
        assert [s.label for s in await Shelves(session).list_all()] == ["kept"]


async def test_the_repository_raises_not_found_and_the_session_uses_the_service_schema(sessions):
    schema, factory = sessions
    async with transaction(factory) as session:
        shelf = await Shelves(session).add(Shelf(label="a"))
        assert await session.scalar(text("SELECT current_schema()")) == schema
    async with factory() as session:
        repo = Shelves(session)
        assert (await repo.get_or_raise(shelf.id)).label == "a"
        with pytest.raises(NotFound, match=r"Shelf .* not found"):
            await repo.get_or_raise(uuid.uuid4())


async def test_constraints_are_named_by_the_convention(sessions):
    schema, factory = sessions
    async with factory() as session:
        rows = await session.execute(
            text("SELECT conname FROM pg_constraint WHERE connamespace = CAST(:s AS regnamespace)"),
            {"s": schema},
        )
        names = {r[0] for r in rows}
        indexes = set(
            (
                await session.execute(
                    text("SELECT indexname FROM pg_indexes WHERE schemaname = :s"), {"s": schema}
                )
            ).scalars()
        )
    assert {"pk_shelves", "pk_books", "uq_shelves_label", "fk_books_shelf_id_shelves"} <= names
    assert "ix_shelves_label" in indexes


async def test_relationships_refuse_to_lazy_load(sessions):
    _, factory = sessions
    async with transaction(factory) as session:
        shelf = await Shelves(session).add(Shelf(label="b"))
        session.add(Book(shelf_id=shelf.id, title="Dune"))
    async with factory() as session:
        book = (await session.execute(select(Book))).scalar_one()
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = book.shelf  # async code must say what it loads, never fetch behind an attribute
