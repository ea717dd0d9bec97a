"""Pure pieces: route patterns, token buckets, header rules, not-before values, OpenAPI merging, the
denied-request queue."""

from __future__ import annotations

import asyncio

import pytest
from gateway.denials import PROBLEM_REASON_MAX_BYTES, DenialPublisher, Denied, envelope_for, upstream_reason
from gateway.headers import ClientAddress, CorsPolicy, parse_inbound, response_headers
from gateway.notbefore import NotBeforeStore, kv_key, parse_value
from gateway.openapi import merge_documents
from gateway.ratelimit import TokenBuckets
from gateway.routes import Route, RouteTable, compile_pattern

from shared.events.gateway import RequestDenied
from shared.messaging.envelope import from_nats, to_nats


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/v1/users*", "/v1/users", True),
        ("/v1/users*", "/v1/users/1/x", True),
        ("/v1/users*", "/v1/usersx", False),
        ("/v1/auth/*", "/v1/auth/x", True),
        ("/v1/auth/*", "/v1/auth", False),
        ("/v1/projects/{id}", "/v1/projects/1", True),
        ("/v1/projects/{id}", "/v1/projects/1/2", False),
        ("/v1/projects/{id}", "/v1/projects/", False),
        ("/v1/a.b", "/v1/aXb", False),
    ],
)
def test_patterns(pattern, path, matches):
    assert (compile_pattern(pattern).fullmatch(path) is not None) is matches


def test_bad_patterns_are_refused():
    with pytest.raises(ValueError, match="start with"):
        compile_pattern("v1/x")
    with pytest.raises(ValueError, match="only allowed at the end"):
        compile_pattern("/v1/*/x")


def test_first_match_wins_and_405_lists_methods():
    table = RouteTable([Route("/a/{id}", "x", methods=frozenset({"GET"})), Route("/a*", "y")])
    assert table.resolve("/a/1", "GET")[0].upstream == "x"
    assert table.resolve("/a/1", "POST")[0].upstream == "y"
    table = RouteTable([Route("/a/{id}", "x", methods=frozenset({"GET", "DELETE"}))])
    assert table.resolve("/a/1", "POST") == (None, frozenset({"GET", "DELETE"}))
    assert table.resolve("/b", "GET") == (None, frozenset())


def test_token_bucket():
    now = [100.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0], max_keys=2)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("k") == 0.0
    assert TokenBuckets.retry_after_header(0.01) == "1"
    assert TokenBuckets.retry_after_header(1.2) == "2"
    buckets.take("a")
    buckets.take("b")
    assert len(buckets) == 2  # least recently used key dropped
    assert TokenBuckets(rate=0, burst=1).take("k") == 0.0


def test_inbound_headers():
    inbound = parse_inbound(
        [
            (b"host", b"gw"),
            (b"authorization", b"Bearer t"),
            (b"x-user-id", b"1"),
            (b"x-principal-roles", b"admin"),
            (b"x-baton-subject", b"s"),
            (b"x-forwarded-user", b"u"),
            (b"connection", b"close, x-hop"),
            (b"x-hop", b"1"),
            (b"content-length", b"12"),
            (b"x-request-id", b"bad id with spaces"),
            (b"accept", b"*/*"),
        ]
    )
    assert inbound.forward == [(b"authorization", b"Bearer t"), (b"accept", b"*/*")]
    assert inbound.content_length == 12
    assert inbound.request_id is None
    assert inbound.host == b"gw"
    assert parse_inbound([(b"content-length", b"1"), (b"content-length", b"2")]).invalid
    assert parse_inbound([(b"content-length", b"-1")]).invalid


def test_response_headers_drop_hop_by_hop():
    headers, names = response_headers(
        [
            (b"Connection", b"x-secret"),
            (b"X-Secret", b"1"),
            (b"Server", b"u"),
            (b"ETag", b'"1"'),
            (b"Transfer-Encoding", b"chunked"),
        ]
    )
    assert headers == [(b"etag", b'"1"')]
    assert names == {b"etag"}


def test_client_address_trusts_only_configured_proxies():
    untrusted = ClientAddress([])
    assert untrusted.resolve("10.0.0.1", "http", b"1.2.3.4", b"https") == ("10.0.0.1", "http", "10.0.0.1")
    trusted = ClientAddress(["10.0.0.0/8"])
    assert trusted.resolve("10.0.0.1", "http", b"1.2.3.4, 10.0.0.2", b"https") == (
        "1.2.3.4",
        "https",
        "1.2.3.4, 10.0.0.2, 10.0.0.1",
    )
    assert trusted.resolve("192.0.2.1", "http", b"1.2.3.4", b"https")[0] == "192.0.2.1"


def test_cors_policy():
    policy = CorsPolicy(["https://a.example"], allow_credentials=True, max_age=60)
    assert policy.response_headers(b"https://b.example") == []
    assert (b"access-control-allow-credentials", b"true") in policy.response_headers(b"https://a.example")
    with pytest.raises(ValueError, match="credentials"):
        CorsPolicy(["*"], allow_credentials=True, max_age=60)
    assert CorsPolicy([], allow_credentials=False, max_age=1).response_headers(b"https://a.example") == []


def test_not_before_values():
    assert kv_key("0190f1d2-0000-7000-8000-000000000001") == "0190f1d2-0000-7000-8000-000000000001"
    assert kv_key("auth0|abc@x.io") == "auth0_abc_x_io"
    assert parse_value(b"1700000000") == 1700000000
    assert parse_value(b"1700000000.2") == 1700000001
    assert parse_value(b"nan") is None
    assert parse_value(b"soon") is None
    assert NotBeforeStore().lookup("anyone") is None
    assert NotBeforeStore().revokes("anyone", 0) is False


def test_openapi_merge_drops_unrouted_and_foreign_paths():
    documents = {
        "projects": {
            "paths": {
                "/v1/projects/{id}": {"get": {"responses": {}}, "post": {"responses": {}}},
                "/v1/tasks": {"get": {"responses": {}}},  # routed to workflows, not projects
                "/internal": {"get": {"responses": {}}},
            }
        }
    }
    merged = merge_documents(documents, RouteTable())
    assert list(merged["paths"]) == ["/v1/projects/{id}"]
    assert list(merged["paths"]["/v1/projects/{id}"]) == ["get"]  # POST is not routed


def test_openapi_merge_adds_the_gateways_own_answers():
    problem = "application/problem+json"
    oauth = {"description": "OAuth error", "content": {"application/json": {"schema": {"type": "object"}}}}
    documents = {
        "identity": {
            "paths": {
                "/v1/auth/token": {"post": {"requestBody": {}, "responses": {"200": {}, "400": oauth}}},
                "/v1/users/{user_id}": {"get": {"responses": {"404": {"description": "No such user"}}}},
            }
        }
    }
    paths = merge_documents(documents, RouteTable())["paths"]
    token = paths["/v1/auth/token"]["post"]["responses"]
    # Public: no 401 of the gateway's; a body: 413. The upstream's OAuth 400 keeps its media type.
    assert sorted(token) == ["200", "400", "413", "429", "502", "504"]
    assert set(token["400"]["content"]) == {"application/json", problem}
    assert token["400"]["description"].startswith("OAuth error; or: ")
    assert token["429"]["headers"]["Retry-After"]["required"] is True
    user = paths["/v1/users/{user_id}"]["get"]["responses"]
    assert sorted(user) == ["400", "401", "404", "429", "502", "504"]  # no body, no 413
    assert list(user["401"]["content"]) == [problem]


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (b"application/problem+json", b'{"code": "insufficient_role"}', "insufficient_role"),
        (b"Application/Problem+JSON; charset=utf-8", b'{"code": "token_revoked"}', "token_revoked"),
        (b"application/json", b'{"code": "insufficient_role"}', "upstream_403"),
        (None, b'{"code": "insufficient_role"}', "upstream_403"),
        (b"application/problem+json", None, "upstream_403"),  # streamed: not read
        (b"application/problem+json", b"{not json", "upstream_403"),
        (b"application/problem+json", b'["code"]', "upstream_403"),
        (b"application/problem+json", b'{"code": 7}', "upstream_403"),
        (b"application/problem+json", b'{"code": "has spaces"}', "upstream_403"),
        (b"application/problem+json", b'{"code": "' + b"x" * 65 + b'"}', "upstream_403"),
        (
            b"application/problem+json",
            b'{"code": "big", "detail": "' + b"x" * PROBLEM_REASON_MAX_BYTES + b'"}',
            "upstream_403",
        ),
    ],
)
def test_upstream_reason(content_type, body, reason):
    assert upstream_reason(403, content_type, body) == reason


def _denied(i: int = 0) -> Denied:
    return Denied(
        401, "invalid_token", "GET", "/v1/x", "workflows:/v1/x", f"r{i}", None, None, None, "1.2.3.4", 1.7e9
    )


async def test_denial_queue_is_bounded_and_counts_drops():
    publisher = DenialPublisher(max_queue=2, batch_size=10)
    for i in range(5):
        publisher.record(_denied(i))
    assert publisher.stats() == {"queued": 2, "published": 0, "dropped": 3, "failed": 0}
    await asyncio.sleep(0)


def test_denial_envelope_round_trip():
    denied = Denied(
        429, "rate_limited", "POST", "/v1/tasks", None, "rid", "a1", "agent", "c1", "1.2.3.4", 1.7e9
    )
    envelope = envelope_for(denied)
    subject, headers, body = to_nats(envelope)
    assert subject == "baton.gateway.request.denied"
    assert headers["Nats-Msg-Id"] == envelope.id
    assert envelope.tenant == "c1"
    assert envelope.actor.subject == "a1"

    class Msg:
        pass

    msg = Msg()
    msg.subject, msg.headers, msg.data = subject, headers, body
    data = from_nats(msg).parse_data(RequestDenied)
    assert data.status == 429
    assert data.subject == "a1"
    assert data.principal_kind == "agent"
