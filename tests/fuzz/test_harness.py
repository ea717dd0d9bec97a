"""The fuzzing harness's own checks can fail: a leaking app, a write that slips through, a NUL placed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .harness import INT32_PAST, TenantIsolation, _edge_leaves, _poison, running

THINGS = {"t1": {"id": "t1", "owner": "A", "version": 1}}


def thing_app(*, leak_reads: bool = False, leak_writes: bool = False) -> FastAPI:
    """``/things/{id}`` of tenant A; client B's token is ``Bearer b``. The flags make it leak."""
    app = FastAPI()

    def visible(request: Request, thing: dict[str, Any]) -> bool:
        caller = request.headers.get("authorization", "")
        return caller == "Bearer a" or (caller == "Bearer b" and thing["owner"] == "B")

    @app.get("/things/{thing_id}")
    async def read(thing_id: str, request: Request) -> Any:
        thing = THINGS.get(thing_id)
        if thing is None or not (visible(request, thing) or leak_reads):
            return JSONResponse({"code": "not_found"}, status_code=404)
        return thing

    @app.get("/things")
    async def listing(request: Request) -> Any:
        return {"items": [t for t in THINGS.values() if visible(request, t) or leak_reads]}

    @app.patch("/things/{thing_id}")
    async def change(thing_id: str, request: Request) -> Any:
        thing = THINGS[thing_id]
        if leak_writes:
            thing["version"] += 1  # changed, yet answered like a missing resource
        if not visible(request, thing):
            return JSONResponse({"code": "not_found"}, status_code=404)
        return thing

    @app.delete("/things/{thing_id}")
    async def remove(thing_id: str, request: Request) -> Any:
        return JSONResponse({"code": "not_found"}, status_code=404)

    return app


@dataclass
class Answer:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class Sent:
    path: str


def check_for(client: Any, *, writes: bool) -> TenantIsolation:
    return TenantIsolation(
        client=client,
        b_client_id="B",
        b_callers={"b": {"Authorization": "Bearer b"}},
        resource_url=lambda obj, path: (f"/things/{obj['id']}", str(obj["owner"])),
        listings=lambda obj, owner: ["/things"],
        patch_body=(lambda url: {"name": "x"}) if writes else None,
        owner_headers={"Authorization": "Bearer a"},
    )


def a_read_of_t1() -> Answer:
    THINGS["t1"]["version"] = 1
    return Answer(200, json.dumps(THINGS["t1"]).encode())


@pytest.mark.parametrize("writes", [False, True])
def test_isolation_passes_when_b_gets_404s(writes: bool) -> None:
    with running(thing_app()) as client:
        check = check_for(client, writes=writes)
        check(None, a_read_of_t1(), Sent("/things/t1"))
        assert check.replays["GET"] == 1
        assert check.replays["PATCH"] == (1 if writes else 0)


def test_isolation_fails_when_b_reads_a() -> None:
    with running(thing_app(leak_reads=True)) as client, pytest.raises(AssertionError, match="GET /things"):
        check_for(client, writes=False)(None, a_read_of_t1(), Sent("/things/t1"))


def test_isolation_fails_when_b_changes_a_behind_a_404() -> None:
    with (
        running(thing_app(leak_writes=True)) as client,
        pytest.raises(AssertionError, match="refused writes"),
    ):
        check_for(client, writes=True)(None, a_read_of_t1(), Sent("/things/t1"))


def test_isolation_ignores_b_own_resources_and_errors() -> None:
    with running(thing_app(leak_reads=True)) as client:
        check = check_for(client, writes=False)
        check(None, Answer(200, json.dumps({"id": "t9", "owner": "B", "version": 1}).encode()), Sent("/x"))
        check(None, Answer(404, b'{"code": "not_found"}'), Sent("/things/t1"))
        assert not check.replays


def test_edges_go_into_every_string_and_integer_one_at_a_time() -> None:
    body = {"name": "ab", "tags": ["x", 1, True], "nested": {"k": ""}}
    leaves = list(_edge_leaves({"body": body}))
    assert leaves == [("body", "name"), ("body", "tags", 0), ("body", "tags", 1), ("body", "nested", "k")]
    root = {"body": json.loads(json.dumps(body))}
    _poison(root, ("body", "tags", 0))
    _poison(root, ("body", "tags", 1))
    assert root["body"]["tags"] == ["\x00x", INT32_PAST, True]
    assert root["body"]["name"] == "ab"
