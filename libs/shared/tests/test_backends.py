from sqlalchemy import text


async def test_postgres_has_pgvector(fresh_schema):
    schema, engine = await fresh_schema("probe")
    async with engine.connect() as conn:
        version = await conn.scalar(text("select extversion from pg_extension where extname = 'vector'"))
        path = await conn.scalar(text("show search_path"))
    assert version is not None
    assert path.startswith(schema)


async def test_jetstream_is_enabled(clean_jetstream):
    info = await clean_jetstream.account_info()
    assert info.limits is not None
