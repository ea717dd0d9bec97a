"""The documents service under its real database roles: the migrations run as an owner role, the service
connects as its runtime role (``shared.migrations.upgrade(..., runtime_role=...)``, as ``make run`` and the
Kubernetes init containers do).

- The runtime role creates and drops a client's search-index partitions only through the SECURITY DEFINER
  functions of migration 0002; the partitions belong to the owner and carry the parent's indexes.
- It owns nothing and has no DDL: CREATE, DROP and ALTER in the schema fail with permission errors.
- Partitions from before 0002, created by the runtime role while it was a member of the owner role, end
  up owned by the owner role (or the upgrade stops and says how).
- Everything the service does with partitions still works as that role: some tests of this package are
  collected here a second time with ``svc`` overridden to connect as the runtime role.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from documents.embeddings.fake import FakeHashProvider
from documents.index.partitions import PARTITIONED_TABLES, partition_name
from sqlalchemy.exc import DBAPIError

from shared.db import create_engine
from shared.messaging import prune_inbox
from shared.migrations import upgrade
from shared.testing.roles import SchemaRoles, schema_roles

from . import test_project_events, test_search
from .conftest import Svc, open_svc

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
CLIENT = uuid.UUID("6f1c2b7e-0a4d-4c3e-9b1a-2d5e8f7a9c10")
DIM = 384


def _vector(hot: int) -> str:
    return "[" + ",".join("1" if i == hot else "0" for i in range(DIM)) + "]"


class Roles(SchemaRoles):
    async def migrate(self, revision: str = "head", *, url: str | None = None) -> None:
        await upgrade(url or self.owner_url, MIGRATIONS, self.schema, revision, runtime_role=self.runtime)

    async def owners(self, conn: asyncpg.Connection) -> dict[str, str]:
        """Every partition of the two parents (and its indexes) → its owner."""
        rows = await conn.fetch(
            "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
            "WHERE c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent IN "
            "('chunks'::regclass, 'chunk_vectors'::regclass)) "
            "OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT inhrelid FROM pg_inherits "
            "WHERE inhparent IN ('chunks'::regclass, 'chunk_vectors'::regclass)))"
        )
        return {r["relname"]: r["owner"] for r in rows}


@pytest.fixture
async def roles(database_url) -> AsyncIterator[Roles]:
    """A schema owned by an owner role, not migrated yet."""
    async with schema_roles(database_url, "docs", cls=Roles, extensions=["vector"]) as roles:
        yield roles


@pytest.fixture
async def migrated(roles) -> Roles:
    await roles.migrate()
    return roles


@pytest.fixture
async def runtime(migrated) -> AsyncIterator[asyncpg.Connection]:
    conn = await migrated.connect(migrated.runtime_url)
    yield conn
    await conn.close()


async def _insert_chunk(conn: asyncpg.Connection, client: uuid.UUID, content: str, hot: int) -> uuid.UUID:
    """One chunk and its vector, through the parents."""
    chunk, ids = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    await conn.execute(
        "INSERT INTO chunks (client_id, id, project_id, document_id, version_id, version, kind, ord, content) "
        "VALUES ($1, $2, $3, $4, $5, 1, 'prd', 0, $6)",
        client,
        chunk,
        *ids,
        content,
    )
    await conn.execute(
        "INSERT INTO chunk_vectors (client_id, chunk_id, model_id, project_id, document_id, kind, embedding) "
        "VALUES ($1, $2, 'm', $3, $4, 'prd', $5::text::vector)",
        client,
        chunk,
        ids[0],
        ids[1],
        _vector(hot),
    )
    return chunk


async def _search(conn: asyncpg.Connection, client: uuid.UUID, words: str, hot: int) -> tuple[object, object]:
    keyword = await conn.fetchval(
        "SELECT id FROM chunks WHERE client_id = $1 AND tsv @@ plainto_tsquery('english', $2)", client, words
    )
    nearest = await conn.fetchval(
        "SELECT chunk_id FROM chunk_vectors WHERE client_id = $1 AND model_id = 'm' "
        "ORDER BY embedding <=> $2::text::vector LIMIT 1",
        client,
        _vector(hot),
    )
    return keyword, nearest


async def test_the_runtime_role_manages_partitions_through_the_functions(migrated, runtime):
    for _ in range(2):  # idempotent
        await runtime.execute("SELECT documents_ensure_client_partitions($1)", CLIENT)
    owners = await migrated.owners(runtime)
    parts = {partition_name(table, CLIENT) for table in PARTITIONED_TABLES}
    assert parts <= owners.keys()
    assert set(owners.values()) == {migrated.owner}  # partitions and their indexes

    # Each partition takes every index of its parent: primary key, GIN, b-trees, HNSW.
    for table in PARTITIONED_TABLES:
        part = partition_name(table, CLIENT)
        parent_indexes = await runtime.fetch(
            "SELECT indexrelid::regclass::text AS name FROM pg_index WHERE indrelid = $1::regclass", table
        )
        attached = await runtime.fetch(
            "SELECT i.inhparent::regclass::text AS name FROM pg_index x "
            "JOIN pg_inherits i ON i.inhrelid = x.indexrelid WHERE x.indrelid = $1::regclass",
            part,
        )
        assert sorted(r["name"] for r in attached) == sorted(r["name"] for r in parent_indexes)
        assert len(parent_indexes) == 4
    hnsw = await runtime.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%hnsw%'",
        partition_name("chunk_vectors", CLIENT),
    )
    assert "USING hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='64')" in hnsw

    # The service writes, reads and searches through the parents; the partitions grant nothing directly.
    chunk = await _insert_chunk(runtime, CLIENT, "lighthouse keepers log the weather", hot=7)
    assert await _search(runtime, CLIENT, "lighthouse weather", hot=7) == (chunk, chunk)
    await runtime.execute("UPDATE chunks SET heading = 'Log' WHERE client_id = $1", CLIENT)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table chunks_p_"):
        await runtime.fetchval(f"SELECT count(*) FROM {partition_name('chunks', CLIENT)}")

    for _ in range(2):  # idempotent
        await runtime.execute("SELECT documents_drop_client_partitions($1)", CLIENT)
    assert not parts & (await migrated.owners(runtime)).keys()
    assert await runtime.fetchval("SELECT count(*) FROM chunks") == 0
    assert await runtime.fetchval("SELECT count(*) FROM chunk_vectors") == 0


PART = partition_name("chunks", CLIENT)
VECTORS_PART = partition_name("chunk_vectors", CLIENT)
REFUSED = [
    ("CREATE TABLE sneaky (id int)", "permission denied for schema"),
    (f"CREATE TABLE chunks_p_{'0' * 32} PARTITION OF chunks FOR VALUES IN ('{uuid.UUID(int=0)}')",
     "permission denied for schema"),
    ("CREATE INDEX ON chunks (heading)", "must be owner of table chunks"),
    ("DROP TABLE chunks", "must be owner of table chunks"),
    (f"DROP TABLE {PART}", f"must be owner of table {PART}"),
    (f"DROP TABLE {VECTORS_PART}", f"must be owner of table {VECTORS_PART}"),
    ("ALTER TABLE chunks ADD COLUMN sneaky int", "must be owner of table chunks"),
    (f"ALTER TABLE chunks DETACH PARTITION {PART}", "must be owner of table chunks"),
    (f"ALTER TABLE {PART} OWNER TO CURRENT_USER", f"must be owner of table {PART}"),
    ("ALTER TABLE chunk_vectors RENAME TO sneaky", "must be owner of table chunk_vectors"),
    ("TRUNCATE chunks", "permission denied for table chunks"),
    (f"TRUNCATE {VECTORS_PART}", f"permission denied for table {VECTORS_PART}"),
    ("DROP FUNCTION documents_ensure_client_partitions(uuid)",
     "must be owner of function documents_ensure_client_partitions"),
    ("ALTER FUNCTION documents_drop_client_partitions(uuid) SECURITY INVOKER",
     "must be owner of function documents_drop_client_partitions"),
    ("CREATE OR REPLACE FUNCTION documents_drop_client_partitions(client uuid) RETURNS void "
     "LANGUAGE sql AS $$ SELECT $$", "permission denied for schema"),
]  # fmt: skip


@pytest.mark.parametrize(("statement", "message"), REFUSED, ids=[s for s, _ in REFUSED])
async def test_the_runtime_role_has_no_ddl(migrated, runtime, statement, message):
    await runtime.execute("SELECT documents_ensure_client_partitions($1)", CLIENT)
    await migrated.migrate()  # the next deployment: the partition exists when the grants are given again
    await _insert_chunk(runtime, CLIENT, "still here", hot=1)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=message):
        await runtime.execute(statement)
    assert await runtime.fetchval("SELECT count(*) FROM chunks WHERE client_id = $1", CLIENT) == 1
    assert await runtime.fetchval("SELECT count(*) FROM chunk_vectors WHERE client_id = $1", CLIENT) == 1


async def test_the_runtime_role_owns_nothing(migrated, runtime):
    await runtime.execute("SELECT documents_ensure_client_partitions($1)", CLIENT)
    owned = await runtime.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = $1::regnamespace AND relowner = $2::regrole "
        "UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = $1::regnamespace AND proowner = $2::regrole",
        migrated.schema,
        migrated.runtime,
    )
    assert owned == []
    assert not await runtime.fetchval(
        "SELECT has_schema_privilege($1, $2, 'CREATE')", migrated.runtime, migrated.schema
    )
    assert not await runtime.fetchval(
        "SELECT pg_has_role($1, $2, 'MEMBER')", migrated.runtime, migrated.owner
    )
    # The definer functions act as the owner role, with a fixed search path, and only the runtime role
    # (besides their owner) may call them: PUBLIC may not.
    definers = await runtime.fetch(
        "SELECT p.proname, pg_get_userbyid(p.proowner) AS owner, p.proconfig, "
        "EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0) AS public, "
        "has_function_privilege($2, p.oid, 'EXECUTE') AS runtime "
        "FROM pg_proc p WHERE p.pronamespace = $1::regnamespace AND p.prosecdef ORDER BY p.proname",
        migrated.schema,
        migrated.runtime,
    )
    assert [tuple(r) for r in definers] == [
        (name, migrated.owner, [f"search_path={migrated.schema}, pg_temp"], False, True)
        for name in ("documents_drop_client_partitions", "documents_ensure_client_partitions")
    ]


@pytest.mark.parametrize(
    "function", ["documents_ensure_client_partitions", "documents_drop_client_partitions"]
)
async def test_the_functions_refuse_a_malformed_argument(migrated, runtime, function):
    for bad in ("not-a-uuid", f"{CLIENT}'); DROP TABLE chunks; --", f"{CLIENT.hex}0", ""):
        with pytest.raises(asyncpg.InvalidTextRepresentationError):
            await runtime.execute(f"SELECT {function}($1::text::uuid)", bad)
        with pytest.raises(asyncpg.InvalidTextRepresentationError):
            await runtime.execute(f"SELECT {function}('{bad.replace(chr(39), chr(39) * 2)}')")
    with pytest.raises(asyncpg.NullValueNotAllowedError, match="a client id is required"):
        await runtime.execute(f"SELECT {function}(NULL)")
    # A table of a partition's name that is not a partition (only the owner could make one) is left alone.
    await migrated.run(migrated.owner_url, f"CREATE TABLE {PART} (id int)")
    with pytest.raises(asyncpg.RaiseError, match=f"{PART} is not a partition of chunks"):
        await runtime.execute(f"SELECT {function}($1)", CLIENT)
    assert await runtime.fetchval("SELECT to_regclass($1) IS NOT NULL", PART)
    assert (
        await runtime.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'chunks'::regclass") == 0
    )


async def _old_partitions(roles: Roles) -> uuid.UUID:
    """The layout before 0002: the runtime role is a member of the owner role and created a client's
    partitions itself (so it owns them), then indexed a chunk."""
    await roles.migrate("0001")
    await roles.run(roles.superuser_url, f'GRANT "{roles.owner}" TO "{roles.runtime}"')
    conn = await roles.connect(roles.runtime_url)
    try:
        for table in PARTITIONED_TABLES:
            await conn.execute(
                f"CREATE TABLE {partition_name(table, CLIENT)} PARTITION OF {table} FOR VALUES IN ('{CLIENT}')"
            )
        chunk = await _insert_chunk(conn, CLIENT, "harbour pilots board ships", hot=3)
        assert set((await roles.owners(conn)).values()) == {roles.runtime}
    finally:
        await conn.close()
    return chunk


async def _check_adopted(roles: Roles, chunk: uuid.UUID) -> None:
    conn = await roles.connect(roles.runtime_url)
    try:
        assert set((await roles.owners(conn)).values()) == {roles.owner}
        assert await _search(conn, CLIENT, "harbour ships", hot=3) == (chunk, chunk)
        await conn.execute("SELECT documents_drop_client_partitions($1)", CLIENT)
        assert await conn.fetchval("SELECT count(*) FROM chunks") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"CREATE TABLE {PART} PARTITION OF chunks FOR VALUES IN ('{CLIENT}')")
    finally:
        await conn.close()


async def test_partitions_of_the_runtime_role_are_handed_over_after_the_one_time_step(roles):
    chunk = await _old_partitions(roles)
    # While the runtime role can act as the owner, no upgrade runs.
    with pytest.raises(RuntimeError, match=f"{roles.runtime} is a member of {roles.owner}"):
        await roles.migrate()
    await roles.run(roles.superuser_url, f'REVOKE "{roles.owner}" FROM "{roles.runtime}"')
    # The owner role cannot take over what the runtime role owns: the upgrade stops and says how.
    with pytest.raises(
        DBAPIError,
        match=rf"partitions {VECTORS_PART}, {PART} do not belong to {roles.owner}.*"
        rf"REASSIGN OWNED BY {roles.runtime} TO {roles.owner}",
    ):
        await roles.migrate()
    await roles.run(roles.superuser_url, f'REASSIGN OWNED BY "{roles.runtime}" TO "{roles.owner}"')
    await roles.migrate()
    await _check_adopted(roles, chunk)


async def test_an_upgrade_run_by_a_superuser_hands_the_partitions_over_itself(roles):
    chunk = await _old_partitions(roles)
    await roles.run(roles.superuser_url, f'REVOKE "{roles.owner}" FROM "{roles.runtime}"')
    await roles.migrate(url=roles.superuser_url)
    await _check_adopted(roles, chunk)


async def test_the_runtime_role_prunes_the_inbox_of_a_schema_from_before_the_horizon(roles):
    """A schema migrated before ``inbox_horizon`` existed gets it from 0003; the runtime role records
    horizons (insert, then update) and deletes inbox rows, all pruning needs."""
    await roles.migrate("0002")
    await roles.run(  # the layout 0001 made before: no horizon, inbox indexed by time alone
        roles.owner_url,
        "DROP TABLE inbox_horizon",
        "DROP INDEX ix_inbox_consumer_processed_at",
        "CREATE INDEX ix_inbox_processed_at ON inbox (processed_at)",
    )
    await roles.migrate()
    conn = await roles.connect(roles.owner_url)
    try:
        indexes = {
            r["indexname"]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'inbox'", roles.schema
            )
        }
    finally:
        await conn.close()
    assert "ix_inbox_consumer_processed_at" in indexes
    assert "ix_inbox_processed_at" not in indexes
    await roles.run(
        roles.runtime_url,
        "INSERT INTO inbox (consumer, event_id, processed_at) VALUES "
        "('documents-x', gen_random_uuid(), now() - interval '30 days'), ('documents-x', gen_random_uuid(), now())",
    )
    engine = create_engine(roles.runtime_url, schema=roles.schema, pool_size=1)
    try:
        first = await prune_inbox(engine, "documents-x", retention=timedelta(days=14))
        second = await prune_inbox(engine, "documents-x", retention=timedelta(days=14))
    finally:
        await engine.dispose()
    assert (first.deleted, second.deleted) == (1, 0)
    assert second.horizon >= first.horizon


# -- the package's partition work, again, as the runtime role -------------------------------------------------
@pytest.fixture
async def svc(migrated) -> AsyncIterator[Svc]:
    """Overrides the package's fixture: the app, processor and consumers connect as the runtime role."""
    engine = create_engine(migrated.runtime_url, schema=migrated.schema, pool_size=5)
    try:
        async with open_svc(engine, migrated.schema, FakeHashProvider()) as s:
            yield s
    finally:
        await engine.dispose()


test_runtime_client_deleted = (
    test_project_events.test_client_deleted_drops_partitions_and_everything_of_the_client
)
test_runtime_project_deleted = (
    test_project_events.test_project_deleted_removes_its_documents_content_and_vectors
)
test_runtime_deleted_before_created = test_project_events.test_deleted_before_created_stays_deleted
test_runtime_search_filters = test_search.test_filters_apply_before_ranking_and_never_starve_results
test_runtime_search_narrowed_agent = test_search.test_narrowed_agent_searches_only_its_projects
