"""Queries on users."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select

from identity.users.models import User
from shared.db import Repository
from shared.errors import NotFound

__all__ = ["UserNotFound", "UserRepository", "email_key"]


class UserNotFound(NotFound):
    code = "user_not_found"


def email_key(email: str) -> str:
    """The case-insensitive form of an email that carries uniqueness."""
    return email.strip().lower()


class UserRepository(Repository[User]):
    model = User
    not_found = UserNotFound

    async def by_email(self, email: str) -> User | None:
        stmt = select(User).where(User.email_key == email_key(email))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_external_subject(self, issuer: str, subject: str) -> User | None:
        stmt = select(User).where(User.external_issuer == issuer, User.external_subject == subject)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def page(self, *, limit: int, after: uuid.UUID | None, email: str | None) -> Sequence[User]:
        stmt = select(User).order_by(User.id).limit(limit)
        if after is not None:
            stmt = stmt.where(User.id > after)
        if email is not None:
            stmt = stmt.where(User.email_key == email_key(email))
        return (await self.session.execute(stmt)).scalars().all()

    async def any_admin(self) -> bool:
        stmt = select(User.id).where(User.is_admin.is_(True)).limit(1)
        return (await self.session.execute(stmt)).first() is not None

    async def count_active_admins(self) -> int:
        stmt = select(func.count()).select_from(User).where(User.is_admin.is_(True), User.status == "active")
        return int((await self.session.execute(stmt)).scalar_one())
