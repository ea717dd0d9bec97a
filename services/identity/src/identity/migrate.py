"""Apply identity's migrations: ``python -m identity.migrate`` (the runner and the k8s Job use it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from identity.config import Settings
from shared.migrations import upgrade

__all__ = ["MIGRATIONS_DIR", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


async def migrate(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    await upgrade(settings.database_url, MIGRATIONS_DIR, settings.schema_name)


if __name__ == "__main__":
    asyncio.run(migrate())
