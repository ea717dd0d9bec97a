"""Hostile and malformed input: always a 4xx problem+json, never a 500, and nothing written."""

from __future__ import annotations

import json
import random
import uuid

import pytest

LONG = "x" * 201


def client_cases():
    ok = {"name": "Fine", "slug": "fine"}
    deep: dict = {}
    node = deep
    for _ in range(7):
        node["d"] = {}
        node = node["d"]
    return [
        ("oversized name", {**ok, "name": LONG}),
        ("blank name", {**ok, "name": "   "}),
        ("control characters", {**ok, "name": "a\x00b"}),
        ("bad slug", {**ok, "slug": "Not A Slug"}),
        ("slug too long", {**ok, "slug": "s" * 64}),
        ("unknown field", {**ok, "owner": "me"}),
        ("read-only field", {**ok, "version": 3}),
        ("status on create", {**ok, "status": "archived"}),
        ("contact unknown field", {**ok, "contact": {"fax": "1"}}),
        ("bad email", {**ok, "contact": {"email": "not an email"}}),
        ("email with white space around it", {**ok, "contact": {"email": " a@b.test"}}),
        ("email with a next-line character", {**ok, "contact": {"email": "a\x85b@c.test"}}),
        ("name of Unicode white space only", {**ok, "name": "\x85\u3000"}),
        ("metadata too big", {**ok, "metadata": {"blob": "y" * 9000}}),
        ("metadata too many keys", {**ok, "metadata": {f"k{i}": i for i in range(51)}}),
        ("metadata too deep", {**ok, "metadata": deep}),
        ("metadata NUL", {**ok, "metadata": {"k": "a\x00"}}),
        ("metadata long key", {**ok, "metadata": {"k" * 65: 1}}),
        ("metadata not an object", {**ok, "metadata": [1, 2]}),
        ("array body", [ok]),
        ("null body", None),
    ]


def project_cases(client_id):
    ok = {"client_id": client_id, "name": "Fine", "kind": "greenfield", "type": "fullstack"}
    return [
        ("oversized name", {**ok, "name": LONG}),
        ("oversized description", {**ok, "description": "d" * 10_001}),
        ("NUL in description", {**ok, "description": "a\x00b"}),
        ("invalid client id", {**ok, "client_id": "not-a-uuid"}),
        ("numeric client id", {**ok, "client_id": 42}),
        ("missing client id", {k: v for k, v in ok.items() if k != "client_id"}),
        ("bad kind", {**ok, "kind": "bluefield"}),
        ("bad type", {**ok, "type": "Full Stack"}),
        ("type too long", {**ok, "type": "t" * 65}),
        ("bad workflow id", {**ok, "workflow_id": "../etc/passwd"}),
        ("unknown field", {**ok, "priority": 1}),
        ("created_by", {**ok, "created_by": "someone-else"}),
        ("version", {**ok, "version": 9}),
        ("status on create", {**ok, "status": "completed"}),
        ("name is a number", {**ok, "name": 12}),
    ]


@pytest.fixture
async def world(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    return client, project


async def assert_nothing_written(svc, before, project):
    assert await svc.counts() == before
    row = await svc.project_row(project["id"])
    assert (row.version, row.name, row.deleted_at) == (1, project["name"], None)


async def test_bad_bodies(svc, world):
    client, project = world
    before = await svc.counts()
    cases = [("POST", "/v1/clients", label, body) for label, body in client_cases()]
    cases += [
        ("PATCH", f"/v1/clients/{client['id']}", label, body)
        for label, body in client_cases()
        if label != "status on create"  # a valid change on PATCH
    ]
    cases += [("POST", "/v1/projects", label, body) for label, body in project_cases(client["id"])]
    cases += [
        ("PATCH", f"/v1/projects/{project['id']}", label, body)
        for label, body in [
            ("empty", {}),
            ("null name", {"name": None}),
            ("null status", {"status": None}),
            ("oversized name", {"name": LONG}),
            ("bad status", {"status": "done"}),
            ("unknown field", {"owner": "x"}),
            ("version", {"version": 2}),
            ("created_by", {"created_by": "x"}),
            ("invalid client id", {"client_id": "nope"}),
            ("array", [{"name": "x"}]),
        ]
    ]
    for method, url, label, body in cases:
        r = await svc.http.request(method, url, json=body, headers=svc.admin)
        assert r.status_code == 422, (method, url, label, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", label
        assert r.json()["status"] == 422
    await assert_nothing_written(svc, before, project)


async def test_malformed_and_non_json_bodies(svc, world):
    client, project = world
    before = await svc.counts()
    raw_cases = [
        (b'{"name": "x", "slug": ', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b'{"name": "x", "slug": "x", "metadata": {"n": NaN}}', "application/json"),
        (b'{"name": "x", "slug": "x", "metadata": {"n": Infinity}}', "application/json"),
        (b"name=x&slug=y", "application/x-www-form-urlencoded"),
        (b'{"name": "x", "slug": "x"}', "text/plain"),
        (b"", "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
    ]
    targets = [
        ("POST", "/v1/clients"),
        ("PATCH", f"/v1/clients/{client['id']}"),
        ("POST", "/v1/projects"),
        ("PATCH", f"/v1/projects/{project['id']}"),
    ]
    for method, url in targets:
        for content, content_type in raw_cases:
            r = await svc.http.request(
                method, url, content=content, headers={**svc.admin, "Content-Type": content_type}
            )
            assert 400 <= r.status_code < 500, (method, url, content[:40], r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    await assert_nothing_written(svc, before, project)


async def test_oversized_request_body(svc, world):
    _client, project = world
    before = await svc.counts()
    huge = json.dumps({"name": "x", "description": "d" * 2_000_000}).encode()
    r = await svc.http.patch(
        f"/v1/projects/{project['id']}",
        content=huge,
        headers={**svc.admin, "Content-Type": "application/json"},
    )
    svc.problem(r, 413)
    await assert_nothing_written(svc, before, project)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("limit=100000", 422, None),
        ("limit=0", 422, None),
        ("limit=-1", 422, None),
        ("limit=ten", 422, None),
        ("cursor=not-base64!!", 400, "invalid_cursor"),
        ("cursor=W10", 400, "invalid_cursor"),  # "[]"
        ("cursor=eyJhZnRlciI6ICJub3BlIn0", 400, "invalid_cursor"),  # {"after": "nope"}
        ("cursor=" + "A" * 600, 422, None),
        ("status=done", 422, None),
        ("client_id=not-a-uuid", 422, None),
        ("q=" + "q" * 201, 422, None),
        ("q=", 422, None),
    ],
)
async def test_bad_list_parameters(svc, world, query, status, code):
    for path in ("/v1/projects", "/v1/clients"):
        if "client_id" in query and path == "/v1/clients":
            continue
        r = await svc.http.get(f"{path}?{query}", headers=svc.admin)
        svc.problem(r, status, code)


async def test_invalid_ids_in_paths(svc, world):
    _, project = world
    before = await svc.counts()
    for bad in ("not-a-uuid", "123", "' OR 1=1 --", "0" * 100, "%00"):
        for method in ("GET", "PATCH", "DELETE"):
            for base in ("/v1/projects", "/v1/clients"):
                body = {"name": "x"} if method == "PATCH" else None
                r = await svc.http.request(method, f"{base}/{bad}", json=body, headers=svc.admin)
                assert r.status_code in (404, 422), (method, base, bad, r.status_code)
                assert r.headers["content-type"] == "application/problem+json"
    await assert_nothing_written(svc, before, project)


async def test_bad_if_match_and_credentials(svc, world):
    _, project = world
    before = await svc.counts()
    url = f"/v1/projects/{project['id']}"
    svc.problem(
        await svc.http.patch(url, json={"name": "x"}, headers={**svc.admin, "If-Match": "x" * 300}), 422
    )
    svc.problem(
        await svc.http.patch(url, json={"name": "x"}, headers={**svc.admin, "If-Match": "garbage"}), 412
    )
    svc.problem(await svc.http.patch(url, json={"name": "x"}), 401)
    svc.problem(await svc.http.delete(url, headers={"Authorization": "Bearer not.a.jwt"}), 401)
    svc.problem(await svc.http.delete(url, headers={"Authorization": "Basic YTpi"}), 401)
    other = type(svc.tokens)()  # a token signed by a key this service does not trust
    svc.problem(
        await svc.http.delete(url, headers={"Authorization": f"Bearer {other.issue('x', admin=True)}"}), 401
    )
    await assert_nothing_written(svc, before, project)


def _random_value(rng, depth=0):
    choices = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.random() * 10 ** rng.randint(-5, 300),
        lambda: "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 30))),
        lambda: rng.choice(["active", "archived", "paused", "completed", "greenfield", "fullstack", ""]),
        lambda: "x" * rng.choice([199, 200, 201, 10_000, 10_001]),
        lambda: str(uuid.uuid4()),
    ]
    if depth < 3:
        choices += [
            lambda: [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))],
            lambda: {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 4))},
        ]
    return rng.choice(choices)()


async def test_random_bodies_never_break_the_service(svc, world):
    """A seeded fuzz: valid bodies with one or two fields replaced by arbitrary JSON. Each answer is a
    success or a 4xx problem, never a 5xx, and every 4xx leaves the database as it was."""
    client, project = world
    await svc.know_workflows("greenfield-ui")
    rng = random.Random(20_240_601)
    valid = {
        "name": lambda i: f"Fuzz {i}",
        "slug": lambda i: f"fuzz-{i}",
        "status": lambda i: rng.choice(["active", "archived", "paused", "completed"]),
        "contact": lambda i: {"email": f"f{i}@x.test"},
        "metadata": lambda i: {"i": i},
        "description": lambda i: "d" * (i % 50),
        "kind": lambda i: "greenfield",
        "type": lambda i: "fullstack",
        "workflow_id": lambda i: "greenfield-ui",
        "client_id": lambda i: client["id"],
    }
    targets = [
        ("POST", "/v1/clients", ["name", "slug", "contact", "metadata"]),
        ("PATCH", f"/v1/clients/{client['id']}", ["name", "contact", "metadata"]),
        ("POST", "/v1/projects", ["client_id", "name", "description", "kind", "type", "workflow_id"]),
        ("PATCH", f"/v1/projects/{project['id']}", ["name", "description", "status"]),
    ]
    outcomes = {"success": 0, "client error": 0}
    for i in range(160):
        method, url, fields = rng.choice(targets)
        body = {name: valid[name](i) for name in fields}
        for name in rng.sample(sorted(valid), rng.randint(0, 2)):
            body[name] = _random_value(rng)
        before = await svc.counts()
        r = await svc.http.request(method, url, json=body, headers=svc.admin)
        assert r.status_code < 500, (method, url, body, r.text)
        if r.status_code >= 400:
            outcomes["client error"] += 1
            assert r.headers["content-type"] == "application/problem+json"
            assert await svc.counts() == before, (method, url, body)
        else:
            outcomes["success"] += 1
    assert min(outcomes.values()) > 20, outcomes  # both paths were exercised
