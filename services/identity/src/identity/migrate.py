"""Apply identity's migrations: ``python -m identity.migrate`` (also ``identity.bootstrap --migrate``).

Like ``python -m shared.migrations``, they run as the schema's owner role and then grant the runtime
role its share (``shared.migrations.upgrade(..., runtime_role=...)``): the runtime role the service
connects as has no DDL rights, so a pending migration run with its URL would fail. The owner's URL is
``BATON_IDENTITY_DATABASE_OWNER_URL``, else ``BATON_DATABASE_URL`` (the migration init container gives
the owner's URL there). The runtime role is ``BATON_DATABASE_RUNTIME_ROLE``; with an owner URL and no
such variable, it is the user of ``BATON_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from identity.config import Settings
from shared.migrations import upgrade

__all__ = ["MIGRATIONS_DIR", "MigrationTarget", "migrate", "migration_target"]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


@dataclass(frozen=True)
class MigrationTarget:
    """The schema owner's URL the migrations run with, and the runtime role granted its privileges after
    them (``None`` when one role does both)."""

    url: str
    runtime_role: str | None


def _user(url: str) -> str | None:
    return make_url(url).username or None


def migration_target(settings: Settings) -> MigrationTarget:
    """Where and as whom the migrations run, from ``settings`` (see the module's docstring)."""
    runtime_role = settings.database_runtime_role or None
    if settings.database_owner_url is None:
        return MigrationTarget(settings.database_url, runtime_role)
    owner_url = settings.database_owner_url.get_secret_value()
    if runtime_role is None:
        runtime_role = _user(settings.database_url)
        if runtime_role is None:
            raise ValueError(
                "BATON_DATABASE_URL names no user: set BATON_DATABASE_RUNTIME_ROLE to the role identity "
                "connects as, so the migrations can grant it its privileges"
            )
        if runtime_role == _user(owner_url):
            # The same role both owns the schema and runs the service (a development database).
            runtime_role = None
    return MigrationTarget(owner_url, runtime_role)


async def migrate(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    target = migration_target(settings)
    await upgrade(target.url, MIGRATIONS_DIR, settings.schema_name, runtime_role=target.runtime_role)


if __name__ == "__main__":
    asyncio.run(migrate())
