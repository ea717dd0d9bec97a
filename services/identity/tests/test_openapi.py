"""Each operation of identity's OpenAPI document declares exactly the error statuses it can answer with.

Clients (and the gateway's merged document) read the declared statuses as the contract: an operation that
lists a 409 it never returns sends client authors after conflicts that cannot happen.
"""

from __future__ import annotations

from typing import Any

import pytest
from identity.config import Settings
from identity.main import build_app

from shared.errors import PROBLEM_CONTENT_TYPE

# Every operation → the error statuses it declares (success statuses left out).
ERRORS: dict[tuple[str, str], set[int]] = {
    ("POST", "/v1/auth/login"): {400, 401, 413, 422, 429, 503},
    ("POST", "/v1/auth/token"): {400, 401, 413, 503},
    ("POST", "/v1/auth/logout"): {400, 413, 422, 503},
    ("GET", "/.well-known/jwks.json"): {503},
    ("GET", "/.well-known/openid-configuration"): set(),
    ("GET", "/v1/auth/keys"): {401, 403, 503},
    ("POST", "/v1/auth/keys/rotate"): {400, 401, 403, 413, 422, 503},
    ("GET", "/v1/users"): {400, 401, 403, 422, 503},
    ("POST", "/v1/users"): {400, 401, 403, 409, 413, 422, 503},
    ("GET", "/v1/users/me"): {401, 404, 503},
    ("GET", "/v1/users/{user_id}"): {401, 404, 422, 503},
    ("PATCH", "/v1/users/{user_id}"): {400, 401, 403, 404, 409, 412, 413, 422, 503},
    ("GET", "/v1/clients/{client_id}/members"): {400, 401, 403, 404, 422, 503},
    ("PUT", "/v1/clients/{client_id}/members/{user_id}"): {400, 401, 403, 404, 409, 413, 422, 503},
    ("DELETE", "/v1/clients/{client_id}/members/{user_id}"): {401, 403, 404, 409, 422, 503},
    ("GET", "/v1/clients/{client_id}/agents"): {400, 401, 403, 404, 422, 503},
    ("POST", "/v1/clients/{client_id}/agents"): {400, 401, 403, 404, 413, 422, 503},
    ("GET", "/v1/clients/{client_id}/agents/{agent_id}"): {401, 403, 404, 422, 503},
    ("PATCH", "/v1/clients/{client_id}/agents/{agent_id}"): {400, 401, 403, 404, 412, 413, 422, 503},
    ("DELETE", "/v1/clients/{client_id}/agents/{agent_id}"): {401, 403, 404, 422, 503},
    ("POST", "/v1/clients/{client_id}/agents/{agent_id}/rotate-secret"): {401, 403, 404, 422, 503},
}
# The token endpoint answers its errors in RFC 6749's shape, not as problems.
OAUTH_ERRORS = {("POST", "/v1/auth/token"): {400, 401}}


@pytest.fixture(scope="module")
def operations() -> dict[tuple[str, str], dict[str, Any]]:
    settings = Settings(environment="test", database_url="postgresql+asyncpg://unused@localhost/unused")
    doc = build_app(settings, configure_observability=False).openapi()
    return {(method.upper(), path): op for path, item in doc["paths"].items() for method, op in item.items()}


def _errors(operation: dict[str, Any]) -> set[int]:
    return {int(status) for status in operation["responses"] if int(status) >= 400}


def test_every_operation_is_listed(operations: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert set(operations) == set(ERRORS)


@pytest.mark.parametrize("key", sorted(ERRORS), ids=lambda key: f"{key[0]} {key[1]}")
def test_operation_declares_exactly_its_errors(
    operations: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str]
) -> None:
    operation = operations[key]
    assert _errors(operation) == ERRORS[key]
    for status in ERRORS[key] - OAUTH_ERRORS.get(key, set()):
        content = operation["responses"][str(status)]["content"]
        assert set(content) == {PROBLEM_CONTENT_TYPE}, status


def test_reading_oneself_declares_no_conflict_or_precondition(
    operations: dict[tuple[str, str], dict[str, Any]],
) -> None:
    me = _errors(operations[("GET", "/v1/users/me")])
    assert not me & {403, 409, 412, 413, 422}
    assert {401, 404} <= me


def test_logins_declare_wrong_credentials_and_the_backoff(
    operations: dict[tuple[str, str], dict[str, Any]],
) -> None:
    login = operations[("POST", "/v1/auth/login")]["responses"]
    assert {"401", "429"} <= set(login)
    assert login["429"]["headers"]["Retry-After"]["required"] is True
    token = operations[("POST", "/v1/auth/token")]["responses"]
    for status in ("400", "401"):
        schema = token[status]["content"]["application/json"]["schema"]
        assert schema["required"] == ["error"]
