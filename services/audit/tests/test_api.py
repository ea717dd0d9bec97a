"""The HTTP API through the real app (ASGI) on the real Postgres: who sees what, filters, pagination,
export, verify, checkpoints and the public key."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from audit.chain.canonical import canonical_bytes
from audit.chain.models import Entry
from audit.chain.records import READ_ACTION
from audit.checkpoints.service import create_due_checkpoints
from audit.checkpoints.signing import b64url_decode
from audit.config import Settings
from audit.entries import service
from audit.entries.schemas import EntryFilter
from audit.main import build_app
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import event, select

from shared.auth.testing import TokenFactory

from .conftest import append, drafts_for

TOKENS = TokenFactory()


def bearer(sub: str = "u", **claims) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS.issue(sub, **claims)}"}


@contextlib.asynccontextmanager
async def _client(audit_schema, **settings):
    schema, engine = audit_schema
    settings = Settings(environment="test", database_schema=schema, **{"max_query_days": 31, **settings})
    app = build_app(settings, engine=engine, token_verifier=TOKENS.verifier(), configure_observability=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        client.app = app
        yield client


@pytest.fixture
async def api(audit_schema):
    async with _client(audit_schema) as client:
        yield client


@pytest.fixture
async def seeded(factory, client_a, client_b):
    a = (await append(factory, drafts_for(client_a, 5))).appended
    b = (await append(factory, drafts_for(client_b, 3, action="baton.beta.other.done.v1"))).appended
    p = (await append(factory, drafts_for(None, 2))).appended
    return {"a": a, "b": b, "p": p}


async def test_an_auditor_of_b_never_sees_client_a(api, seeded, client_a, client_b, factory):
    auditor_b = bearer("aud-b", memberships={str(client_b): "auditor"})
    a_entry = seeded["a"][0].id

    r = await api.get("/v1/audit/entries", params={"client_id": str(client_b)}, headers=auditor_b)
    assert r.status_code == 200
    assert [e["sequence"] for e in r.json()["items"]] == [1, 2, 3]
    assert {e["client_id"] for e in r.json()["items"]} == {str(client_b)}
    # Without client_id a one-client auditor reads that client.
    r = await api.get("/v1/audit/entries", headers=auditor_b)
    assert {e["chain"] for e in r.json()["items"]} == {str(client_b)}

    missing = await api.get(f"/v1/audit/entries/{uuid.uuid4()}", headers=auditor_b)
    hidden = await api.get(f"/v1/audit/entries/{a_entry}", headers=auditor_b)
    assert missing.status_code == hidden.status_code == 404
    assert missing.json()["code"] == hidden.json()["code"] == "audit_entry_not_found"
    for path in (
        "/v1/audit/entries",
        "/v1/audit/export",
        "/v1/audit/verify",
        "/v1/audit/checkpoints",
        "/v1/audit/events",
    ):
        for client in (str(client_a), "platform"):
            r = await api.get(path, params={"client_id": client}, headers=auditor_b)
            assert r.status_code == 404, (path, client, r.text)
    r = await api.get("/v1/audit/export", params={"client_id": str(client_b)}, headers=auditor_b)
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines
    assert {line["chain"] for line in lines} == {str(client_b)}
    assert (await api.get(f"/v1/audit/entries/{seeded['b'][0].id}", headers=auditor_b)).status_code == 200
    r = await api.get("/v1/audit/verify", params={"client_id": str(client_b)}, headers=auditor_b)
    assert r.status_code == 200
    assert r.json()["ok"] is True

    # Other roles and principals.
    viewer_a = bearer("v", memberships={str(client_a): "viewer"})
    assert (
        await api.get("/v1/audit/entries", params={"client_id": str(client_a)}, headers=viewer_a)
    ).status_code == 403
    owner_a = bearer("po", memberships={str(client_a): "product_owner"})
    assert (
        await api.get("/v1/audit/entries", params={"client_id": str(client_a)}, headers=owner_a)
    ).status_code == 200
    agent_b = bearer("bot", kind="agent", client_id=str(client_b), scopes=["audit:read"])
    r = await api.get("/v1/audit/entries", headers=agent_b)
    assert r.status_code == 200
    assert {e["chain"] for e in r.json()["items"]} == {str(client_b)}
    assert (
        await api.get("/v1/audit/entries", params={"client_id": str(client_a)}, headers=agent_b)
    ).status_code == 404
    unscoped = bearer("bot2", kind="agent", client_id=str(client_b), scopes=["documents:read"])
    assert (await api.get("/v1/audit/entries", headers=unscoped)).status_code == 403
    assert (await api.get("/v1/audit/entries")).status_code == 401

    admin = bearer("root", admin=True)
    r = await api.get("/v1/audit/entries", params={"limit": 100}, headers=admin)
    chains = {e["chain"] for e in r.json()["items"]}
    assert {str(client_a), str(client_b), "platform"} <= chains


async def test_filters_pagination_and_bounds(api, seeded, client_a):
    admin = bearer("root", admin=True)
    a = str(client_a)

    async def items(**params):
        r = await api.get("/v1/audit/entries", params={"client_id": a, **params}, headers=admin)
        assert r.status_code == 200, r.text
        return r.json()

    assert len((await items(action="baton.alpha."))["items"]) == 5
    assert (await items(action="baton.beta."))["items"] == []
    assert [e["resource"]["id"] for e in (await items(resource_type="thing", resource_id="3"))["items"]] == [
        "3"
    ]
    assert len((await items(actor="user-1"))["items"]) == 5
    recorded = seeded["a"][0].recorded_at
    assert (await items(until=recorded.isoformat()))["items"] == []
    assert len((await items(since=recorded.isoformat(), action="baton.alpha"))["items"]) == 5

    seen, cursor = [], None
    while True:
        page = await items(limit=2, action="baton.alpha", **({"cursor": cursor} if cursor else {}))
        seen += [e["sequence"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [1, 2, 3, 4, 5]
    desc = await items(order="desc", action="baton.alpha", limit=3)
    assert [e["sequence"] for e in desc["items"]] == [5, 4, 3]

    for params, status in (
        ({"limit": 0}, 422),
        ({"limit": 1000}, 422),
        ({"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, 422),
        ({"since": "2024-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, 422),  # > 31 days
        ({"since": "2025-01-01T00:00:00"}, 422),  # no time zone
        ({"since": "yesterday"}, 422),
        ({"since": "19"}, 422),  # not seconds since the epoch: the document says date-time
        ({"flagged": "1"}, 422),  # a boolean is true or false
        ({"resource_id": "a\x00b"}, 422),
        ({"since": "2025-01-01"}, 422),
        ({"since": "0001-01-01T00:00:00+01:00"}, 422),  # before year 1 in UTC
        ({"cursor": "!!!"}, 400),
        ({"cursor": "eyJ4IjoxfQ"}, 400),  # decodes, but names no position
        ({"client_id": "not-a-client"}, 422),
        ({"client_id": a.replace("-", "")}, 422),  # a UUID, but not as the document spells one
        ({"action": "x" * 500}, 422),
    ):
        r = await api.get("/v1/audit/entries", params={"client_id": a, **params}, headers=admin)
        assert r.status_code == status, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await api.get("/v1/audit/verify", headers=admin)
    assert r.status_code == 422  # verify needs a chain


async def test_reads_are_recorded_in_the_chain_read(api, seeded, factory, client_b):
    auditor_b = bearer("aud-b", memberships={str(client_b): "auditor"}, name="Betty")
    await api.get(
        "/v1/audit/entries", params={"client_id": str(client_b), "action": "baton.beta"}, headers=auditor_b
    )
    async with factory() as session:
        reads = (await session.execute(select(Entry).where(Entry.action == READ_ACTION))).scalars().all()
    assert len(reads) == 1
    read = reads[0]
    assert read.chain_id == str(client_b)
    assert read.sequence == 4
    assert (read.actor_subject, read.actor_name) == ("aud-b", "Betty")
    assert read.payload["what"] == "list"
    assert read.payload["filter"]["action"] == "baton.beta"
    assert read.request_id
    r = await api.get("/v1/audit/verify", params={"client_id": str(client_b)}, headers=auditor_b)
    assert r.json()["ok"]
    assert r.json()["entries_checked"] == 4


async def test_export_streams_ndjson_and_csv(api, factory, client_a):
    await append(factory, drafts_for(client_a, 1234))
    admin = bearer("root", admin=True)
    r = await api.get("/v1/audit/export", params={"client_id": str(client_a)}, headers=admin)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    # The export's own read record is committed first, so it is the last line.
    assert [x["sequence"] for x in lines] == list(range(1, 1236))
    assert lines[-1]["action"] == READ_ACTION
    assert lines[-1]["payload"]["what"] == "export"
    r = await api.get(
        "/v1/audit/export",
        params={"client_id": str(client_a), "format": "csv", "action": "baton.alpha"},
        headers=admin,
    )
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1234
    assert rows[0]["sequence"] == "1"
    assert json.loads(rows[0]["payload"]) == {"i": 0, "note": "event 0"}


def _is_problem(r: httpx.Response, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"].startswith("application/problem+json")


async def _reads(factory) -> int:
    async with factory() as session:
        return len((await session.execute(select(Entry.id).where(Entry.action == READ_ACTION))).all())


async def test_a_query_over_the_time_limit_is_refused_as_too_broad(
    audit_schema, seeded, superuser, factory, client_a
):
    admin = bearer("root", admin=True)
    params = {"client_id": str(client_a)}
    # An old month partition (of another chain) that a concurrent transaction will hold: reads of the
    # log wait for it past their limit on any machine, while the read records still go in this month's.
    await append(factory, drafts_for(uuid.uuid4(), 1), at=datetime(2023, 5, 10, tzinfo=UTC))
    async with _client(audit_schema, query_timeout_seconds=0.2) as api:
        async with superuser.transaction():
            await superuser.execute("LOCK TABLE entries_2023_05 IN ACCESS EXCLUSIVE MODE")
            listed = await api.get("/v1/audit/entries", params=params, headers=admin)
            exported = await api.get("/v1/audit/export", params=params, headers=admin)
        for r in (listed, exported):
            assert _is_problem(r, 400), r.text
            assert r.json()["code"] == "audit_query_too_broad"
        assert await _reads(factory) == 1  # the refused list is not recorded; the export's attempt is
        # Unhindered, the same limit is enough.
        assert (await api.get("/v1/audit/entries", params=params, headers=admin)).status_code == 200
        assert (await api.get("/v1/audit/export", params=params, headers=admin)).status_code == 200
    # A limit below a millisecond is still a limit (a statement_timeout of 0 would be none: a hang).
    async with _client(audit_schema, query_timeout_seconds=0.0004) as api:
        async with superuser.transaction():
            await superuser.execute("LOCK TABLE entries_2023_05 IN ACCESS EXCLUSIVE MODE")
            r = await asyncio.wait_for(api.get("/v1/audit/entries", params=params, headers=admin), 10)
        assert _is_problem(r, 400), r.text


async def test_export_checks_its_time_range_before_streaming(api, seeded, factory, client_a):
    admin = bearer("root", admin=True)
    for params in (
        {"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},  # empty
        {"since": "2025-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},  # empty
        {"since": "2024-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},  # > 31 days
        {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"},  # everything there is
        {"since": "2025-01-01"},  # no time
        {"until": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
    ):
        r = await api.get("/v1/audit/export", params={"client_id": str(client_a), **params}, headers=admin)
        assert _is_problem(r, 422), (params, r.text)
    assert await _reads(factory) == 0  # refused before anything was read (or recorded)
    r = await api.get(
        "/v1/audit/export",
        params={"client_id": str(client_a), "since": "2025-01-01T00:00:00Z", "until": "2025-01-31T00:00:00Z"},
        headers=admin,
    )
    assert r.status_code == 200


async def test_export_reads_page_by_page_in_short_transactions(audit_schema, factory, client_a):
    """What makes the export constant-memory: pages of ``page_size`` rows, each read in a transaction of
    its own when the previous one has been consumed, no connection held in between."""
    engine = audit_schema[1]
    await append(factory, drafts_for(client_a, 7))
    pages: list[str] = []

    def count_pages(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT") and "FROM entries" in statement and "LIMIT" in statement:
            pages.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count_pages)
    try:
        rows = await service.export_rows(factory, EntryFilter(chain=str(client_a)), 10.0, page_size=3)
        assert len(pages) == 1  # the first page only, before anything is streamed
        seen = []
        async for row in rows:
            assert engine.pool.checkedout() == 0  # no connection, so no transaction, while the reader reads
            seen.append(row.sequence)
            if row.sequence == 2:  # committed while the export runs: a later page reads it
                await append(factory, drafts_for(client_a, 2))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count_pages)
    assert seen == list(range(1, 10))
    assert len(pages) == 4  # 3 + 3 + 3 rows, then an empty page


async def test_checkpoints_verify_with_the_served_public_key(api, factory, client_a):
    await append(factory, drafts_for(client_a, 3))
    signer = api.app.state.audit.signer
    await create_due_checkpoints(factory, signer, every_entries=1, every_seconds=3600)
    jwk = (await api.get("/v1/audit/public-key")).json()  # no token needed
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", signer.key_id)
    owner = bearer("po", memberships={str(client_a): "product_owner"})
    page = (await api.get("/v1/audit/checkpoints", params={"client_id": str(client_a)}, headers=owner)).json()
    cp = page["items"][0]
    assert (cp["sequence"], cp["key_id"]) == (3, jwk["kid"])
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    public.verify(b64url_decode(cp["signature"]), canonical_bytes(cp["statement"]))
    assert cp["statement"]["hash"] == cp["hash"]


async def test_producers_report_access(api, factory, client_a):
    admin = bearer("root", admin=True)
    r = await api.get("/v1/audit/producers", headers=admin)
    assert r.status_code == 200
    assert r.json() == []
    assert (
        await api.get("/v1/audit/producers", headers=bearer("aud", memberships={str(client_a): "auditor"}))
    ).status_code == 200
    assert (
        await api.get("/v1/audit/producers", headers=bearer("v", memberships={str(client_a): "viewer"}))
    ).status_code == 403
