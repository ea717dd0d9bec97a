"""Forwarding through the real gateway process: headers, bodies both ways, limits, CORS, security headers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re

import httpx
import pytest

TASKS = "/v1/tasks"
UPLOAD = "/v1/projects/0190f1d2-0000-7000-8000-0000000000a1/documents"


def _echoed(response: httpx.Response) -> dict[str, str]:
    return dict(response.json()["headers"])


async def test_spoofable_and_hop_by_hop_headers_are_stripped(client, auth):
    headers = {
        **auth("u-strip"),
        "X-Principal-Id": "admin",
        "X-Principal": "admin",
        "X-User-Id": "root",
        "X-User-Roles": "admin",
        "X-Forwarded-User": "root",
        "X-Baton-Admin": "true",
        "X-Baton-Subject": "root",
        "X-Forwarded-For": "1.2.3.4",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Real-IP": "1.2.3.4",
        "Forwarded": "for=1.2.3.4;proto=https",
        "Connection": "keep-alive, X-Custom-Hop",
        "X-Custom-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic abc",
        "Upgrade": "websocket",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=1",
        "X-Keep-Me": "yes",
    }
    response = await client.get(TASKS, headers=headers)
    assert response.status_code == 200
    echoed = _echoed(response)
    for name in (
        "x-principal-id", "x-principal", "x-user-id", "x-user-roles", "x-baton-admin", "x-baton-subject",
        "x-real-ip", "forwarded", "x-custom-hop", "keep-alive", "proxy-authorization", "upgrade",
    ):  # fmt: skip
        assert name not in echoed, name
    assert echoed["x-forwarded-for"] == "127.0.0.1"
    assert echoed["x-forwarded-proto"] == "http"
    assert "evil" not in echoed["x-forwarded-host"]
    assert "x-forwarded-user" not in echoed
    assert echoed["authorization"] == headers["Authorization"]
    assert echoed["traceparent"] == headers["traceparent"]
    assert echoed["tracestate"] == "vendor=1"
    assert echoed["x-keep-me"] == "yes"
    # The generated request id is sent upstream and returned to the caller.
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert echoed["x-request-id"] == response.headers["x-request-id"]
    # Upstream response headers that are the gateway's business are not passed through.
    assert response.headers["server"] != "echo"


async def test_request_id_is_kept_when_sane_and_replaced_otherwise(client, auth):
    response = await client.get(TASKS, headers={**auth(), "X-Request-Id": "req-123.abc"})
    assert response.headers["x-request-id"] == "req-123.abc"
    assert _echoed(response)["x-request-id"] == "req-123.abc"
    response = await client.get(TASKS, headers={**auth(), "X-Request-Id": "x" * 200})
    assert response.headers["x-request-id"] != "x" * 200
    assert _echoed(response)["x-request-id"] == response.headers["x-request-id"]


async def test_query_string_and_encoded_path_are_forwarded_verbatim(client, auth):
    response = await client.get("/v1/tasks/a%20b?role=pm&status=ready&q=%C3%A9", headers=auth())
    body = response.json()
    assert body["raw_path"] == "/v1/tasks/a%20b"
    assert body["query"] == "role=pm&status=ready&q=%C3%A9"


@pytest.mark.parametrize(
    "path",
    ["/v1/users/%2e%2e/clients", "/v1/users/a%2Fb", "/v1/users/a%5cb", "/v1/users/%00", "/v1/users//x"],
)
async def test_ambiguous_paths_are_refused(client, auth, path):
    response = await client.get(path, headers=auth())
    assert response.status_code == 400
    assert "x-upstream" not in response.headers


async def test_security_headers_on_forwarded_and_error_responses(client, auth):
    for response in (await client.get(TASKS, headers=auth()), await client.get(TASKS)):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in response.headers  # plain http, no trusted proxy


async def test_hsts_and_forwarded_headers_behind_a_trusted_proxy(start_gateway, auth):
    server = start_gateway(trusted_proxies=["127.0.0.1/32"])
    async with httpx.AsyncClient(base_url=server.url) as c:
        response = await c.get(
            TASKS, headers={**auth(), "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        )
    assert response.status_code == 200
    assert response.headers["strict-transport-security"].startswith("max-age=")
    echoed = _echoed(response)
    assert echoed["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert echoed["x-forwarded-proto"] == "https"


async def test_cors(client, auth):
    preflight = await client.options(
        TASKS,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert "x-upstream" not in preflight.headers

    denied = await client.options(
        TASKS, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert denied.status_code == 403
    assert "access-control-allow-origin" not in denied.headers

    actual = await client.get(TASKS, headers={**auth(), "Origin": "https://app.example"})
    assert actual.headers["access-control-allow-origin"] == "https://app.example"
    assert "Origin" in actual.headers["vary"]
    assert "X-Request-Id" in actual.headers["access-control-expose-headers"]
    other = await client.get(TASKS, headers={**auth(), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_large_upload_is_streamed_and_arrives_intact(client, auth):
    data = os.urandom(5 * 1024 * 1024)
    response = await client.post(UPLOAD, headers=auth(), content=data)
    assert response.status_code == 200
    assert response.json()["body_bytes"] == len(data)
    assert response.json()["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert _echoed(response)["content-length"] == str(len(data))


async def test_chunked_upload_is_streamed(client, auth):
    parts = [os.urandom(256 * 1024) for _ in range(12)]

    async def body():
        for part in parts:
            yield part

    response = await client.post(UPLOAD, headers=auth(), content=body())
    assert response.status_code == 200
    assert response.json()["body_bytes"] == sum(map(len, parts))
    assert response.json()["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


async def test_small_json_body_is_forwarded(client, auth):
    response = await client.post("/v1/projects", headers=auth(), json={"name": "x" * 100})
    assert response.status_code == 200
    assert response.json()["body_bytes"] > 100


async def test_body_over_the_default_limit_is_413(client, auth):
    response = await client.post("/v1/projects", headers=auth(), content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert "x-upstream" not in response.headers


async def test_chunked_body_over_the_limit_is_413(client, auth):
    async def body():
        for _ in range(40):
            yield b"y" * 32768

    response = await client.post("/v1/projects", headers=auth(), content=body())
    assert response.status_code == 413


async def test_upload_routes_have_the_upload_limit(client, auth, gateway):
    """Just over 1 MiB passes on an upload route; a declared 31 MiB is refused before any byte is read."""
    response = await client.post(UPLOAD, headers=auth(), content=b"z" * (1024 * 1024 + 10))
    assert response.status_code == 200
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    token = auth()["Authorization"]
    writer.write(
        f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        f"Content-Length: {31 * 1024 * 1024}\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    assert b" 413 " in status_line


async def test_large_download_is_streamed(client, auth):
    size = 3 * 1024 * 1024 + 7
    async with client.stream("GET", f"{TASKS}?mode=big&size={size}", headers=auth()) as response:
        assert response.status_code == 200
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
    assert received == size


async def test_head_request(client, auth):
    response = await client.head(TASKS, headers=auth())
    assert response.status_code == 200
    assert response.content == b""
