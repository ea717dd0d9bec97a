"""Turn a unique-index violation at flush time into the domain error it means.

Uniqueness is enforced by the database (partial unique indexes), not by a read-then-write check, so two
concurrent creates with the same name cannot both succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import BatonError

__all__ = ["flush_or_raise", "violated_constraint"]


def violated_constraint(exc: IntegrityError) -> str | None:
    """The constraint name asyncpg reports, found along the exception's cause chain."""
    current: BaseException | None = exc.orig
    while current is not None:
        name = getattr(current, "constraint_name", None)
        if isinstance(name, str):
            return name
        current = current.__cause__
    return None


async def flush_or_raise(session: AsyncSession, errors: Mapping[str, Callable[[], BatonError]]) -> None:
    """Flush; a violation of one of ``errors``' constraints raises its error, anything else propagates."""
    try:
        await session.flush()
    except IntegrityError as exc:
        error = errors.get(violated_constraint(exc) or "")
        if error is None:
            raise
        raise error() from exc
