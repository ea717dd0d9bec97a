"""``/v1/auth/login``, ``/v1/auth/token`` (RFC 6749) and ``/v1/auth/logout``.

These routes take no bearer token. Their transactions keep recorded rejections (see ``transactions``):
a failed login still counts toward the backoff and a reused refresh token still revokes its family.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import FormData

from identity.context import ContextDep
from identity.external.service import exchange_external_token
from identity.tokens import service
from identity.tokens.errors import OAuthError
from identity.tokens.schemas import LoginRequest, LogoutRequest, TokenResponse
from identity.transactions import keeping_rejections
from shared.http import SessionDep, problems, session_factory

__all__ = ["client_ip", "router"]

router = APIRouter(prefix="/v1/auth", tags=["auth"])

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_PARAM = 4096
_PARAM: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": _MAX_PARAM}


def _grant(grant_type: str, required: list[str], optional: list[str]) -> dict[str, Any]:
    """One grant's form: its ``grant_type`` and the parameters it needs (extra ones are ignored)."""
    properties: dict[str, Any] = {"grant_type": {"type": "string", "enum": [grant_type]}}
    properties.update(dict.fromkeys([*required, *optional], _PARAM))
    return {"type": "object", "required": ["grant_type", *required], "properties": properties}


_FORM_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "oneOf": [
                        # The client authenticates with these or with HTTP Basic (client_secret_basic).
                        _grant("client_credentials", [], ["client_id", "client_secret", "scope"]),
                        _grant("refresh_token", ["refresh_token"], []),
                        _grant(TOKEN_EXCHANGE, ["subject_token", "subject_token_type"], []),
                    ]
                }
            }
        },
    }
}
_OAUTH_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
            }
        }
    }
}


def client_ip(request: Request) -> str | None:
    """The caller's address: the entry the trusted proxies appended to X-Forwarded-For, else the peer."""
    hops: int = request.app.state.identity.settings.forwarded_for_hops
    forwarded = [
        p.strip() for p in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if p.strip()
    ]
    if hops > 0 and len(forwarded) >= hops:
        return forwarded[-hops][:64]
    return request.client.host if request.client else None


def _token_response(body: TokenResponse) -> JSONResponse:
    return JSONResponse(body.model_dump(exclude_none=True), headers=_NO_STORE)


def _oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="baton"'
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


@router.post(
    "/login",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses=problems(
        400,
        401,
        413,
        422,
        429,
        described={
            401: "Wrong email or password",
            429: "Too many failed logins; retry after Retry-After",
            503: "No signing key is available yet, or the database is unavailable",
        },
    ),
)
async def login(body: LoginRequest, request: Request, ctx: ContextDep) -> JSONResponse:
    async with keeping_rejections(session_factory(request)) as session:
        result = await service.password_login(
            session, ctx, body.email, body.password, client_ip=client_ip(request)
        )
    return _token_response(result)


def _param(form: FormData, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise OAuthError("invalid_request", f"The parameter {name} is repeated")
    if not values:
        return None
    value = values[0]
    if not isinstance(value, str) or len(value) > _MAX_PARAM:
        raise OAuthError("invalid_request", f"The parameter {name} is not valid")
    return value or None


def _required(form: FormData, name: str) -> str:
    value = _param(form, name)
    if value is None:
        raise OAuthError("invalid_request", f"The parameter {name} is required")
    return value


def _client_credentials(request: Request, form: FormData) -> tuple[str, str]:
    """client_secret_basic (RFC 6749 2.3.1, form-encoded parts) or client_secret_post, not both."""
    header = request.headers.get("authorization")
    posted_id, posted_secret = _param(form, "client_id"), _param(form, "client_secret")
    if header is not None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or posted_secret is not None:
            raise OAuthError("invalid_request", "Use exactly one client authentication method")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "Malformed Basic credentials") from None
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise OAuthError("invalid_client", "Malformed Basic credentials")
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if posted_id is not None and posted_id != client_id:
            raise OAuthError("invalid_request", "client_id does not match the Basic credentials")
        return client_id, secret
    if posted_id is None or posted_secret is None:
        raise OAuthError("invalid_client", "Client authentication is required")
    return posted_id, posted_secret


async def _read_form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "The body must be application/x-www-form-urlencoded")
    try:
        return await request.form(max_files=0, max_fields=20)
    except Exception:  # a body the form parser refuses is the client's fault, whatever the parser raised
        raise OAuthError("invalid_request", "The form body cannot be parsed") from None


@router.post(
    "/token",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    openapi_extra=_FORM_SCHEMA,
    responses={
        400: _OAUTH_ERROR,
        401: _OAUTH_ERROR,
        **problems(413, described={503: "No signing key is available yet, or the database is unavailable"}),
    },
)
async def token(request: Request, ctx: ContextDep) -> JSONResponse:
    """OAuth 2.0 token endpoint: ``client_credentials`` (agents), ``refresh_token`` (users) and RFC 8693
    token exchange of an external issuer's token. Errors follow RFC 6749 section 5.2."""
    try:
        form = await _read_form(request)
        grant_type = _required(form, "grant_type")
        ip = client_ip(request)
        async with keeping_rejections(session_factory(request)) as session:
            if grant_type == "refresh_token":
                result = await service.refresh_grant(
                    session, ctx, _required(form, "refresh_token"), client_ip=ip
                )
            elif grant_type == "client_credentials":
                client_id, secret = _client_credentials(request, form)
                result = await service.client_credentials_grant(
                    session, ctx, client_id, secret, scope=_param(form, "scope"), client_ip=ip
                )
            elif grant_type == TOKEN_EXCHANGE:
                result = await exchange_external_token(
                    session,
                    ctx,
                    _required(form, "subject_token"),
                    _required(form, "subject_token_type"),
                    client_ip=ip,
                )
            else:
                raise OAuthError("unsupported_grant_type", "This grant type is not supported")
    except OAuthError as exc:
        return _oauth_error(exc)
    return _token_response(result)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=problems(400, 413, 422))
async def logout(body: LogoutRequest, session: SessionDep) -> Response:
    """Revoke the refresh token's whole session (its family). Always 204: it never says what existed."""
    await service.logout(session, body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=_NO_STORE)
