"""The audit service under its real database roles: the migrations run as an owner role, the service
connects as its runtime role (``shared.migrations.upgrade(..., runtime_role=...)``, as ``make run`` and the
Kubernetes init containers do).

- The runtime role can read and append, and nothing else on the log: UPDATE, DELETE, TRUNCATE, disabling a
  trigger, DROP and CREATE all fail with permission errors, on partitions too, whether a partition existed
  when the migrations ran or was created afterwards by ``audit_ensure_partition``.
- Everything the service does at run time still works as that role: the database, API and ingest tests of
  this package are collected here a second time with ``audit_schema`` overridden, so their engine (and
  every session factory, app and consumer built on it) connects as the runtime role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from audit.chain.records import RETENTION_ACTION
from audit.checkpoints.service import create_due_checkpoints
from sqlalchemy.exc import DBAPIError

from shared.db import create_engine
from shared.migrations import upgrade
from shared.testing.roles import SchemaRoles, schema_roles

from . import test_api, test_chain_db, test_ingest
from .conftest import append, drafts_for

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


class Roles(SchemaRoles):
    async def migrate(self) -> None:
        await upgrade(self.owner_url, MIGRATIONS, self.schema, runtime_role=self.runtime)


@pytest.fixture
async def roles(database_url) -> AsyncIterator[Roles]:
    """A schema owned by an owner role, migrated by it; the runtime role is ``baton_<schema>`` (the name the
    append-only test of test_chain_db expects)."""
    async with schema_roles(database_url, "audit", cls=Roles) as roles:
        await roles.migrate()
        yield roles


@pytest.fixture
async def audit_schema(roles) -> AsyncIterator[tuple[str, Any]]:
    """Overrides the package's fixture: the engine connects as the runtime role."""
    engine = create_engine(roles.runtime_url, schema=roles.schema, pool_size=5)
    yield roles.schema, engine
    await engine.dispose()


@pytest.fixture
async def runtime(roles) -> AsyncIterator[asyncpg.Connection]:
    conn = await roles.connect(roles.runtime_url)
    yield conn
    await conn.close()


async def _partitions(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'entries'::regclass ORDER BY c.relname"
    )
    return [r["relname"] for r in rows]


REFUSED = [
    ("UPDATE entries SET action = 'x'", "permission denied for table entries"),
    ("DELETE FROM entries", "permission denied for table entries"),
    ("TRUNCATE entries", "permission denied for table entries"),
    ("UPDATE entry_keys SET sequence = 0", "permission denied for table entry_keys"),
    ("DELETE FROM entry_keys", "permission denied for table entry_keys"),
    ("TRUNCATE entry_keys", "permission denied for table entry_keys"),
    ("UPDATE checkpoints SET hash = 'x'", "permission denied for table checkpoints"),
    ("DELETE FROM checkpoints", "permission denied for table checkpoints"),
    ("TRUNCATE checkpoints", "permission denied for table checkpoints"),
    ("DELETE FROM chains", "permission denied for table chains"),
    ("DELETE FROM producers", "permission denied for table producers"),
    ("UPDATE alembic_version SET version_num = '0001'", "permission denied for table alembic_version"),
    ("ALTER TABLE entries DISABLE TRIGGER entries_append_only", "must be owner of table entries"),
    ("ALTER TABLE checkpoints DISABLE TRIGGER ALL", "must be owner of table checkpoints"),
    ("ALTER TABLE entry_keys DISABLE TRIGGER entry_keys_append_only", "must be owner of table entry_keys"),
    ("DROP TABLE entries", "must be owner of table entries"),
    ("DROP TABLE checkpoints", "must be owner of table checkpoints"),
    ("DROP TRIGGER entries_append_only ON entries", "must be owner of"),
    ("CREATE TABLE sneaky (id int)", "permission denied for schema"),
    ("CREATE TABLE entries_2099_01 PARTITION OF entries FOR VALUES FROM ('2099-01-01') TO ('2099-02-01')",
     "permission denied for schema"),
    ("CREATE OR REPLACE FUNCTION audit_forbid_change() RETURNS trigger LANGUAGE plpgsql AS "
     "$$ BEGIN RETURN NEW; END $$", "permission denied for schema"),
    ("SET session_replication_role = replica", "permission denied to set parameter"),
    ("SELECT baton_restrict_runtime('nobody')", "permission denied for function baton_restrict_runtime"),
    ("SELECT audit_drop_partition_unchecked('entries_2024_03')",
     "permission denied for function audit_drop_partition_unchecked"),
]  # fmt: skip


@pytest.mark.parametrize(("statement", "message"), REFUSED, ids=[s for s, _ in REFUSED])
async def test_the_runtime_role_cannot_change_the_log(factory, runtime, client_a, statement, message):
    await append(factory, drafts_for(client_a, 3))
    await create_due_checkpoints(factory, test_chain_db.SIGNER, every_entries=1, every_seconds=3600)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=message):
        await runtime.execute(statement)
    assert await runtime.fetchval("SELECT count(*) FROM entries") == 3
    assert await runtime.fetchval("SELECT count(*) FROM checkpoints") == 1


async def test_partitions_old_and_new_give_the_runtime_role_nothing(roles, factory, runtime, client_a):
    # One partition exists when the migrations run again (the next deployment), one is created after.
    await append(factory, drafts_for(client_a, 2), at=datetime(2024, 3, 5, tzinfo=UTC))
    await roles.migrate()
    await append(factory, drafts_for(client_a, 2), at=datetime(2024, 4, 5, tzinfo=UTC))
    parts = await _partitions(runtime)
    assert {"entries_2024_03", "entries_2024_04"} <= set(parts)
    for part in parts:
        owner = await runtime.fetchval(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = $1::regclass", part
        )
        assert owner == roles.owner
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER"):
            assert not await runtime.fetchval(
                "SELECT has_table_privilege($1, $2, $3)", roles.runtime, part, privilege
            ), (part, privilege)
        for statement in (f"UPDATE {part} SET action = 'x'", f"DELETE FROM {part}", f"TRUNCATE {part}"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await runtime.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
            await runtime.execute(f"DROP TABLE {part}")
    # Appending to a partition still works through the parent.
    assert await runtime.fetchval("SELECT count(*) FROM entries") == 4


async def test_a_partition_is_dropped_only_after_its_retention_entries(roles, factory, runtime, client_a):
    """The runtime role calling the retention function by hand, without the entries ``apply_retention``
    appends first, is refused and the partition stays: with one chain's entry but not the other's, and
    with a bare key row (which the runtime role may insert) standing in for the missing record."""
    part = "entries_2024_03"
    old = datetime(2024, 3, 5, tzinfo=UTC)
    await append(factory, drafts_for(client_a, 2), at=old)
    await append(factory, drafts_for(None, 1), at=old)

    def record(client):
        chain = str(client) if client else "platform"
        (draft,) = drafts_for(client, 1)
        return replace(draft, event_id=f"retention:{part}:{chain}", action=RETENTION_ACTION, resource_id=part)

    def refused(chains):
        return pytest.raises(asyncpg.RaiseError, match=rf"without a retention entry: {chains}$")

    with refused(f"{client_a}, platform"):
        await runtime.fetchval("SELECT audit_drop_partition($1)", part)
    await append(factory, [record(client_a)])
    with refused("platform"):
        await runtime.fetchval("SELECT audit_drop_partition($1)", part)
    # A key row with the record's event id and no entry behind it does not count.
    await runtime.execute(
        "INSERT INTO entry_keys (event_id, entry_id, chain_id, sequence, recorded_at) "
        "VALUES ($1, gen_random_uuid(), 'platform', -1, now())",
        f"retention:{part}:platform",
    )
    with refused("platform"):
        await runtime.fetchval("SELECT audit_drop_partition($1)", part)
    assert part in await _partitions(runtime)
    assert await runtime.fetchval("SELECT count(*) FROM entries WHERE recorded_at < '2024-04-01'") == 3


async def test_the_retention_record_lets_the_partition_go(roles, factory, runtime, client_a):
    part = "entries_2024_03"
    old = datetime(2024, 3, 5, tzinfo=UTC)
    await append(factory, drafts_for(client_a, 2), at=old)
    await append(factory, drafts_for(None, 1), at=old)
    for client in (client_a, None):
        chain = str(client) if client else "platform"
        (draft,) = drafts_for(client, 1)
        await append(
            factory,
            [replace(draft, event_id=f"retention:{part}:{chain}", action=RETENTION_ACTION, resource_id=part)],
        )
    assert await runtime.fetchval("SELECT audit_drop_partition($1)", part) == 3
    assert part not in await _partitions(runtime)


async def test_the_runtime_role_owns_nothing_and_has_no_create(roles, runtime):
    owned = await runtime.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = $1::regnamespace AND relowner = $2::regrole "
        "UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = $1::regnamespace AND proowner = $2::regrole",
        roles.schema,
        roles.runtime,
    )
    assert owned == []
    assert await runtime.fetchval("SELECT has_schema_privilege($1, $2, 'USAGE')", roles.runtime, roles.schema)
    assert not await runtime.fetchval(
        "SELECT has_schema_privilege($1, $2, 'CREATE')", roles.runtime, roles.schema
    )
    # The SECURITY DEFINER functions act as the owner role, which owns the schema and the tables.
    definers = await runtime.fetch(
        "SELECT proname, pg_get_userbyid(proowner) AS owner FROM pg_proc "
        "WHERE pronamespace = $1::regnamespace AND prosecdef ORDER BY proname",
        roles.schema,
    )
    assert [(r["proname"], r["owner"]) for r in definers] == [
        ("audit_drop_partition", roles.owner),
        ("audit_drop_partition_unchecked", roles.owner),
        ("audit_ensure_partition", roles.owner),
    ]
    assert (
        await runtime.fetchval(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", roles.schema
        )
        == roles.owner
    )


async def test_migrating_again_is_harmless(roles, runtime):
    acl = "SELECT relname, relacl::text FROM pg_class WHERE relnamespace = $1::regnamespace ORDER BY relname"
    before = await runtime.fetch(acl, roles.schema)
    await roles.migrate()
    await roles.migrate()
    assert await runtime.fetch(acl, roles.schema) == before


async def test_a_definer_function_not_owned_by_the_owner_stops_the_migration(roles):
    su = await roles.connect(roles.superuser_url)
    try:
        await su.execute(f'ALTER FUNCTION audit_ensure_partition(timestamptz) OWNER TO "{roles.runtime}"')
    finally:
        await su.close()
    with pytest.raises(DBAPIError, match="audit_ensure_partition"):
        await roles.migrate()  # the owner role cannot even grant EXECUTE on it
    # Run by a superuser, every grant succeeds: baton_restrict_runtime itself refuses.
    with pytest.raises(DBAPIError, match=r"functions audit_ensure_partition.* must be owned by the owner"):
        await upgrade(roles.superuser_url, MIGRATIONS, roles.schema, runtime_role=roles.runtime)


# -- the package's runtime behaviour, again, as the runtime role ---------------------------------------------
api = test_api.api
seeded = test_api.seeded

test_runtime_append_only = test_chain_db.test_entries_are_append_only_at_the_database
test_runtime_chains = test_chain_db.test_chains_per_client_ordered_and_idempotent
test_runtime_concurrent_appenders = test_chain_db.test_concurrent_appenders_keep_one_chain
test_runtime_checkpoints = test_chain_db.test_checkpoints_are_signed_and_published
test_runtime_retention = test_chain_db.test_retention_drops_a_whole_partition_and_records_itself
test_runtime_api_isolation = test_api.test_an_auditor_of_b_never_sees_client_a
test_runtime_api_filters = test_api.test_filters_pagination_and_bounds
test_runtime_api_reads_recorded = test_api.test_reads_are_recorded_in_the_chain_read
test_runtime_api_export = test_api.test_export_streams_ndjson_and_csv
test_runtime_api_checkpoints = test_api.test_checkpoints_verify_with_the_served_public_key
test_runtime_api_producers = test_api.test_producers_report_access
test_runtime_ingest = test_ingest.test_two_streams_land_in_order_once_with_raw_messages_kept
test_runtime_ingest_replicas = test_ingest.test_two_audit_replicas_keep_one_gap_free_chain
test_runtime_ingest_replay = test_ingest.test_gap_left_by_lost_messages_is_healed_by_replay
