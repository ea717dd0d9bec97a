"""Test support: real Postgres and NATS for every test session (see ``shared.testing.plugin``)."""

from shared.testing.backends import Backends, NatsBackend, PostgresBackend, create_fresh_schema, drop_schema

__all__ = ["Backends", "NatsBackend", "PostgresBackend", "create_fresh_schema", "drop_schema"]
