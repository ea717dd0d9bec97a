"""Domain errors and their single rendering as RFC 9457 ``application/problem+json``.

Code below the router raises these; ``install_error_handlers`` maps them to HTTP in one place.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "BadRequest",
    "BatonError",
    "Conflict",
    "Forbidden",
    "Gone",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "PreconditionRequired",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "ValidationFailed",
    "install_error_handlers",
    "problem_response",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://baton.dev/problems/"
log = logging.getLogger("shared.errors")


class BatonError(Exception):
    """Base of every domain error. ``code`` is stable and documented; ``status`` is its HTTP mapping."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.instance_code = code or self.code
        self.headers = headers or {}
        self.extra = extra


class BadRequest(BatonError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(BatonError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(BatonError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(BatonError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(BatonError):
    status, code, title = 409, "conflict", "Conflict"


class Gone(BatonError):
    status, code, title = 410, "gone", "Gone"


class PreconditionFailed(BatonError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class PayloadTooLarge(BatonError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(BatonError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(BatonError):
    status, code, title = 422, "validation_failed", "Validation failed"


class PreconditionRequired(BatonError):
    status, code, title = 428, "precondition_required", "Precondition required"


class RateLimited(BatonError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **kw: Any) -> None:
        headers = {"Retry-After": str(max(1, int(retry_after)))}
        super().__init__(detail, headers=headers, **kw)
        self.retry_after = retry_after


class UpstreamUnavailable(BatonError):
    status, code, title = 502, "upstream_unavailable", "Bad gateway"


class ServiceUnavailable(BatonError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


class UpstreamTimeout(BatonError):
    status, code, title = 504, "upstream_timeout", "Gateway timeout"


_STATUS_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    411: ("length_required", "Length required"),
    412: ("precondition_failed", "Precondition failed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_failed", "Validation failed"),
    429: ("rate_limited", "Too many requests"),
    500: ("internal_error", "Internal server error"),
    502: ("upstream_unavailable", "Bad gateway"),
    503: ("service_unavailable", "Service unavailable"),
    504: ("upstream_timeout", "Gateway timeout"),
}


def _request_id(request: Request | None) -> str | None:
    if request is None:
        return None
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else request.headers.get("x-request-id")


def problem_response(
    status: int,
    *,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Render one problem document. The same shape for every error of every service."""
    default_code, default_title = _STATUS_CODES.get(status, ("error", "Error"))
    code = code or default_code
    body: dict[str, Any] = {
        "type": TYPE_BASE + code.replace("_", "-"),
        "title": title or default_title,
        "status": status,
        "code": code,
        "detail": detail or title or default_title,
    }
    if request is not None:
        body["instance"] = request.url.path
    rid = _request_id(request)
    if rid:
        body["request_id"] = rid
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


def _jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        out.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return out


def _database_unavailable(exc: Exception, sqlstate: str) -> bool:
    # 08: connection exception; 57: operator intervention (shutdown, starting up); 53: out of resources.
    return (
        sqlstate.startswith(("08", "53", "57"))
        or isinstance(exc, InterfaceError)
        or bool(getattr(exc, "connection_invalidated", False))
    )


def _unavailable(
    request: Request,
    exc: Exception,
    detail: str = "A backing service is unavailable; retry shortly",
    retry_after: int = 2,
) -> JSONResponse:
    """503 with ``Retry-After``: a failure the same request, sent again a little later, gets past."""
    log.warning("%s on %s %s: %r", detail, request.method, request.url.path, exc)
    return problem_response(503, detail=detail, request=request, headers={"Retry-After": str(retry_after)})


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, framework errors and anything unexpected to problem+json."""

    async def on_baton_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BatonError)
        if exc.status >= 500:
            log.warning("request failed: %s %s", exc.instance_code, exc.detail)
        return problem_response(
            exc.status,
            code=exc.instance_code,
            title=exc.title,
            detail=exc.detail,
            request=request,
            headers=exc.headers or None,
            **exc.extra,
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(
            422,
            detail="The request is not valid",
            request=request,
            errors=_jsonable_errors(exc),
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            exc.status_code, detail=detail, request=request, headers=dict(exc.headers or {}) or None
        )

    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        """Input Postgres refuses (NUL bytes, out-of-range numbers, a required value set to null) is the
        caller's fault: 422. A database that is restarting, unreachable or out of connections is ours, and
        temporary: 503 with ``Retry-After``; so is a transaction Postgres undid (deadlock, serialization
        failure), which the same request, sent again, completes."""
        sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "")
        if isinstance(exc, DataError) or sqlstate.startswith("22") or sqlstate == "23502":
            return problem_response(422, detail="A value in the request cannot be stored", request=request)
        if _database_unavailable(exc, sqlstate):
            return _unavailable(request, exc)
        if sqlstate.startswith("40"):  # a deadlock or serialization failure: Postgres undid it all
            return _unavailable(request, exc, "The request met a concurrent one and was undone; retry it", 1)
        return await on_unhandled(request, exc)

    async def on_unreachable(request: Request, exc: Exception) -> JSONResponse:
        """A backing server refused or dropped the connection (raised below SQLAlchemy's wrapping)."""
        return _unavailable(request, exc)

    async def on_unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(500, detail="An unexpected error occurred", request=request)

    app.add_exception_handler(BatonError, on_baton_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(PoolTimeout, on_unreachable)
    app.add_exception_handler(OSError, on_unreachable)
    app.add_exception_handler(Exception, on_unhandled)
