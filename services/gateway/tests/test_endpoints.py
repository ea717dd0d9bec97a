"""Several endpoints per upstream: requests take turns, and one that refuses connections is set aside."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from gateway.balancer import Endpoints
from gateway.config import Settings
from pydantic import ValidationError

from .conftest import ServerThread, echo_app

TASKS = "/v1/tasks"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_endpoints_take_turns_and_one_set_aside_is_tried_last_until_due_back():
    clock = _Clock()
    endpoints = Endpoints("workflows", ["http://a", "http://b", "http://c"], eject_seconds=5, clock=clock)
    firsts = [endpoints.order()[0] for _ in range(6)]
    assert sorted(firsts) == ["http://a", "http://a", "http://b", "http://b", "http://c", "http://c"]

    endpoints.failed("http://b")
    clock.now += 1
    endpoints.failed("http://a")
    for _ in range(4):
        order = endpoints.order()
        assert order[0] == "http://c"
        assert order[1:] == ["http://b", "http://a"]  # both set aside: the one due back soonest first
    assert endpoints.state() == {"endpoints": 3, "set_aside": ["http://a", "http://b"], "ejections": 2}

    clock.now += 4.5  # b is due back, a is not
    assert "http://b" in endpoints.order()[:2]
    assert endpoints.order()[-1] == "http://a"
    endpoints.succeeded("http://a")
    assert endpoints.state()["set_aside"] == []
    endpoints.failed("http://a")
    endpoints.failed("http://a")  # still aside: one ejection, the deadline moves on
    assert endpoints.state()["ejections"] == 3


def test_the_turns_go_round_the_endpoints_in_service_evenly():
    endpoints = Endpoints("workflows", ["http://a", "http://b", "http://c"], eject_seconds=5, clock=_Clock())
    endpoints.failed("http://b")
    firsts = [endpoints.order()[0] for _ in range(10)]
    assert firsts.count("http://a") == firsts.count("http://c") == 5


@pytest.mark.parametrize(
    ("order", "current", "refused", "expected"),
    [
        ("ab", 0, "", 1),  # sent once to a: again to b
        ("ab", 1, "a", 1),  # a refused, b took it and broke off: b again, never a
        ("abc", 1, "a", 2),
        ("abc", 2, "a", 1),
        ("ab", 0, "ab", 0),  # every one refused: where it was
        ("a", 0, "a", 0),
    ],
)
def test_a_resend_avoids_endpoints_that_refused_the_request(order, current, refused, expected):
    from gateway.proxy import _resend_index

    assert _resend_index(list(order), current, set(refused)) == expected


def test_one_endpoint_is_a_pass_through():
    endpoints = Endpoints("audit", ["http://a"], eject_seconds=5)
    endpoints.failed("http://a")
    assert list(endpoints.order()) == ["http://a"]  # never refused without trying


@pytest.mark.parametrize(
    "value",
    [
        "http://a:1,ftp://b:2",
        "http://a:1,",
        "http://a:1/path",
        "https://a:1",
        "http://a:1,http://a:1",
        "http://a:1?x=1",
        "http://a:abc",
        "http://a:70000",
    ],
)
def test_bad_upstream_lists_are_refused(value):
    with pytest.raises(ValidationError):
        Settings(workflows_url=value)


def test_upstream_lists_are_split_and_trimmed():
    settings = Settings(workflows_url=" http://a:1/ , http://b:2")
    assert settings.upstream_urls()["workflows"] == ("http://a:1", "http://b:2")
    assert settings.upstream_urls()["audit"] == ("http://127.0.0.1:8005",)


@pytest.fixture
def twin() -> Iterator[ServerThread]:
    server = ServerThread(echo_app("workflows#2", None)).start()
    yield server
    server.stop()


async def test_requests_take_turns_over_the_endpoints(start_gateway, auth, upstreams, twin):
    server = start_gateway(workflows_url=f"{upstreams.url('workflows')},{twin.url}")
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        for _ in range(20):
            response = await c.post(TASKS, headers=auth(), json={"a": 1})
            assert response.status_code == 200
            seen.append(response.json()["upstream"])
    assert abs(seen.count("workflows") - seen.count("workflows#2")) <= 2, seen


async def test_a_refused_connection_moves_any_request_to_the_next_endpoint(
    start_gateway, auth, upstreams, dead_url
):
    body = bytes(range(256)) * 800  # over buffer_bytes: streamed, so it can be sent only once
    urls = f"{dead_url},{upstreams.url('workflows')}"
    async with httpx.AsyncClient(timeout=10) as c:
        # Set aside for a millisecond only: the turns alternate, so every other request meets the refusal.
        server = start_gateway(workflows_url=urls, eject_seconds=0.001)
        for _ in range(4):
            streamed = await c.post(server.url + TASKS, headers=auth(), content=body)
            assert streamed.status_code == 200, streamed.text
            assert streamed.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert (await c.get(server.url + "/readyz")).json()["upstreams"]["workflows"]["ejections"] >= 2

        server = start_gateway(workflows_url=urls, eject_seconds=60)
        for _ in range(6):
            response = await c.post(server.url + TASKS, headers=auth(), json={"a": 1})
            assert response.status_code == 200, response.text
            assert response.json()["upstream"] == "workflows"
        state = (await c.get(server.url + "/readyz")).json()
    assert state["upstreams"]["workflows"] == {"endpoints": 2, "set_aside": [dead_url], "ejections": 1}
    assert state["upstreams"]["audit"]["set_aside"] == []


async def test_every_endpoint_refusing_is_still_a_quick_502(start_gateway, auth, dead_url):
    from .conftest import free_port

    other = f"http://127.0.0.1:{free_port()}"
    server = start_gateway(workflows_url=f"{dead_url},{other}")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        for method in ("GET", "POST"):
            response = await c.request(method, TASKS, headers=auth(), json={"a": 1})
            assert response.status_code == 502
            assert response.json()["code"] == "upstream_unavailable"
        state = (await c.get("/readyz")).json()
    assert sorted(state["upstreams"]["workflows"]["set_aside"]) == sorted([dead_url, other])


async def test_the_merged_openapi_comes_from_an_endpoint_that_answers(start_gateway, upstreams, dead_url):
    server = start_gateway(workflows_url=f"{dead_url},{upstreams.url('workflows')}")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        document = (await c.get("/openapi.json")).json()
    assert document["x-baton-upstreams"]["workflows"] == "ok"
    assert "/v1/tasks" in document["paths"]
