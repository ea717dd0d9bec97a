"""The app factory: problem+json for every error, request ids, readiness that follows the backing servers."""

import asyncio

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from shared.app import create_app
from shared.auth.testing import TokenFactory
from shared.embedded import free_port
from shared.errors import Conflict, NotFound
from shared.http import SessionDep
from shared.settings import BaseServiceSettings

router = APIRouter()


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=10)


@router.get("/things/{thing_id}")
async def get_thing(thing_id: int) -> dict:
    raise NotFound(f"Thing {thing_id} not found", code="thing_not_found")


@router.post("/things")
async def create_thing(thing: Thing) -> dict:
    raise Conflict("A thing with that name exists", code="thing_exists")


@router.get("/boom")
async def boom() -> dict:
    raise RuntimeError("secret internal detail")


@router.get("/cast")
async def cast(session: SessionDep, value: str) -> dict:
    return {
        "value": (
            await session.execute(text("SELECT CAST(CAST(:v AS text) AS integer)"), {"v": value})
        ).scalar()
    }


@router.get("/rolled-back/{sqlstate}")
async def rolled_back(session: SessionDep, sqlstate: str) -> dict:
    # Postgres undoing the transaction, as it does to one side of a deadlock or a serialization failure.
    await session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'undone' USING ERRCODE = '{sqlstate}'; END $$"))
    return {}


def make_app(database_url, nats_url, **kw):
    settings = BaseServiceSettings(
        service_name="probe",
        database_url=database_url,
        nats_url=nats_url,
        max_body_bytes=2048,
        log_json=False,
    )
    return create_app(settings, [router], token_verifier=TokenFactory().verifier(), **kw)


@pytest.fixture
async def client(database_url, nats_url):
    app = make_app(database_url, nats_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def assert_problem(r, status, code):
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code.replace("_", "-"))
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


async def test_404_problem(client):
    body = assert_problem(await client.get("/things/7"), 404, "thing_not_found")
    assert body["detail"] == "Thing 7 not found"
    assert body["instance"] == "/things/7"


async def test_409_problem(client):
    assert_problem(await client.post("/things", json={"name": "x"}), 409, "thing_exists")


async def test_422_problem_lists_errors(client):
    body = assert_problem(
        await client.post("/things", json={"name": "x" * 50, "extra": 1}), 422, "validation_failed"
    )
    locs = {tuple(e["loc"]) for e in body["errors"]}
    assert ("body", "name") in locs
    assert ("body", "extra") in locs
    assert_problem(await client.get("/things/not-a-number"), 422, "validation_failed")
    r = await client.post("/things", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(r, 422, "validation_failed")


async def test_500_problem_leaks_nothing(client):
    r = await client.get("/boom", headers={"x-request-id": "req-123"})
    body = assert_problem(r, 500, "internal_error")
    assert body["request_id"] == "req-123"
    assert "secret" not in r.text
    assert "Traceback" not in r.text


async def test_unknown_route_and_body_limit(client):
    assert_problem(await client.get("/nowhere"), 404, "not_found")
    r = await client.post("/things", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert_problem(r, 413, "payload_too_large")


async def test_input_the_database_refuses_is_a_422(client):
    assert (await client.get("/cast", params={"value": "41"})).json() == {"value": 41}
    assert_problem(await client.get("/cast", params={"value": "forty-one"}), 422, "validation_failed")
    assert_problem(await client.get("/cast", params={"value": "1\x00"}), 422, "validation_failed")


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"], ids=["deadlock", "serialization-failure"])
async def test_a_transaction_postgres_undid_is_a_503_to_retry(client, sqlstate):
    r = await client.get(f"/rolled-back/{sqlstate}")
    assert_problem(r, 503, "service_unavailable")
    assert r.headers["retry-after"] == "1"
    assert "retry" in r.json()["detail"]


async def test_a_database_nobody_answers_on_is_a_503(nats_url):
    app = make_app(f"postgresql+asyncpg://nobody:x@127.0.0.1:{free_port()}/nothing", nats_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.get("/cast", params={"value": "1"})
    assert_problem(r, 503, "service_unavailable")
    assert r.headers["retry-after"] == "2"
    assert "nobody" not in r.text


async def wait_status(client, path, status, timeout=20.0, params=None):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await client.get(path, params=params)
        if r.status_code == status or asyncio.get_running_loop().time() > deadline:
            return r
        await asyncio.sleep(0.2)


async def test_readyz_follows_postgres(client, postgres):
    postgres.require_restart()
    assert (await client.get("/readyz")).status_code == 200
    postgres.stop()
    try:
        r = await wait_status(client, "/readyz", 503)
        assert r.status_code == 503
        assert r.json()["checks"]["database"].startswith("unavailable")
        assert (await client.get("/healthz")).status_code == 200
        assert_problem(await client.get("/cast", params={"value": "1"}), 503, "service_unavailable")
    finally:
        postgres.start()
    assert (await wait_status(client, "/readyz", 200)).status_code == 200


async def test_readyz_follows_nats(client, nats):
    nats.require_restart()
    assert (await client.get("/readyz")).status_code == 200
    nats.stop()
    try:
        r = await wait_status(client, "/readyz", 503)
        assert r.status_code == 503
        assert r.json()["checks"]["nats"] == "unavailable"
    finally:
        nats.start()
    assert (await wait_status(client, "/readyz", 200)).status_code == 200
