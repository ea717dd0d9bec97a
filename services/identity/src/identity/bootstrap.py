"""First administrator: ``python -m identity.bootstrap [--migrate]``.

Idempotent: if any admin exists, it does nothing. Otherwise it creates one from ``BATON_ADMIN_EMAIL``
(default ``admin@baton.local``) and ``BATON_ADMIN_PASSWORD``; without a password it generates one and
prints it once (it is stored only as an Argon2id hash). Concurrent runs are serialized by an advisory lock.
Exit codes: 0 done (created or already there), 2 refused (bad password, email taken by a non-admin).

``--migrate`` first applies identity's migrations as the owner role (``identity.migrate``:
``BATON_IDENTITY_DATABASE_OWNER_URL``), granting the runtime role its share; the administrator is then
created through ``BATON_DATABASE_URL``, as the service itself would.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from dataclasses import dataclass

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from identity.config import Settings
from identity.migrate import migrate
from identity.outbox import SERVICE_ACTOR
from identity.users.passwords import PasswordHasher, check_password_rules
from identity.users.repository import UserRepository
from identity.users.schemas import UserCreate
from identity.users.service import create_user
from shared.db import create_engine, create_session_factory, transaction

__all__ = ["AdminSettings", "BootstrapRefused", "BootstrapResult", "bootstrap_admin", "main"]


class AdminSettings(BaseSettings):
    """``BATON_ADMIN_EMAIL`` / ``BATON_ADMIN_PASSWORD`` / ``BATON_ADMIN_NAME``."""

    model_config = SettingsConfigDict(env_prefix="BATON_ADMIN_", extra="ignore", env_file=None)

    email: str = "admin@baton.local"
    password: SecretStr | None = None
    name: str = "Administrator"


class BootstrapRefused(Exception):
    pass


@dataclass(frozen=True)
class BootstrapResult:
    created: bool
    email: str | None
    generated_password: str | None = None


async def bootstrap_admin(
    session_factory: async_sessionmaker[AsyncSession],
    hasher: PasswordHasher,
    *,
    email: str,
    password: str | None,
    display_name: str = "Administrator",
) -> BootstrapResult:
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(18)
    try:
        check_password_rules(password)
    except ValueError as exc:
        raise BootstrapRefused(f"BATON_ADMIN_PASSWORD: {exc}") from None
    async with transaction(session_factory) as session:
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('baton-identity-bootstrap'))"))
        repo = UserRepository(session)
        if await repo.any_admin():
            return BootstrapResult(created=False, email=None)
        if await repo.by_email(email) is not None:
            raise BootstrapRefused(f"{email} belongs to an existing non-admin user; choose another email")
        try:
            data = UserCreate(email=email, password=password, display_name=display_name, is_admin=True)
        except ValueError as exc:
            raise BootstrapRefused(str(exc)) from None
        await create_user(session, hasher, data, actor=SERVICE_ACTOR, origin="bootstrap")
    return BootstrapResult(created=True, email=email, generated_password=generated)


async def _run(run_migrations: bool) -> int:
    settings = Settings()
    admin = AdminSettings()
    if run_migrations:
        await migrate(settings)
    engine = create_engine(settings.database_url, schema=settings.schema_name, pool_size=1)
    try:
        result = await bootstrap_admin(
            create_session_factory(engine),
            PasswordHasher.from_settings(settings),
            email=admin.email,
            password=admin.password.get_secret_value() if admin.password else None,
            display_name=admin.name,
        )
    except BootstrapRefused as exc:
        sys.stderr.write(f"identity bootstrap refused: {exc}\n")
        return 2
    finally:
        await engine.dispose()
    if not result.created:
        sys.stdout.write("identity bootstrap: an administrator already exists; nothing to do\n")
    elif result.generated_password is not None:
        sys.stdout.write(
            f"identity bootstrap: created administrator {result.email}\n"
            f"  generated password (shown once, store it now): {result.generated_password}\n"
        )
    else:
        sys.stdout.write(f"identity bootstrap: created administrator {result.email}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m identity.bootstrap", description=__doc__)
    parser.add_argument(
        "--migrate", action="store_true", help="apply identity's migrations first, as the schema's owner role"
    )
    args = parser.parse_args(argv)
    return asyncio.run(_run(args.migrate))


if __name__ == "__main__":
    sys.exit(main())
