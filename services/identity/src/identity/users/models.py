"""Users: people who log in with a password or through the external issuer."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, CheckConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from identity.database import Base, Timestamps
from shared.db import new_id

__all__ = ["USER_STATUSES", "User"]

USER_STATUSES = ("active", "disabled")


class User(Timestamps, Base):
    """``email_key`` is the lower-cased email and carries the uniqueness; ``email`` keeps what was typed.

    ``tokens_valid_after`` (epoch seconds) is this subject's not-before: tokens are never issued with an
    earlier ``iat``, and the same value goes to the gateway's not-before bucket.
    """

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
        UniqueConstraint("external_issuer", "external_subject"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="active")
    is_admin: Mapped[bool] = mapped_column(default=False)
    external_issuer: Mapped[str | None] = mapped_column(String(512))
    external_subject: Mapped[str | None] = mapped_column(String(512))
    tokens_valid_after: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(default=1)

    @property
    def is_active(self) -> bool:
        return self.status == "active"
