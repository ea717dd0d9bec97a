"""Alembic environment: migrations run inside the service's own schema (see ``shared.migrations``)."""

from shared.migrations import run_env

run_env()
