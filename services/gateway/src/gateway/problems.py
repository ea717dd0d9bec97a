"""Problem+json responses written straight to ASGI ``send`` (the proxy path has no framework).

The body has the same shape as ``shared.errors.problem_response`` renders for every service.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Send

from shared.errors import PROBLEM_CONTENT_TYPE, TYPE_BASE, BatonError

__all__ = ["MethodNotAllowed", "problem_body", "send_error", "send_problem"]

Header = tuple[bytes, bytes]
_CONTENT_TYPE = PROBLEM_CONTENT_TYPE.encode()


class MethodNotAllowed(BatonError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


def problem_body(
    status: int, code: str, title: str, detail: str, *, path: str, request_id: str, **extra: Any
) -> bytes:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "instance": path,
        "request_id": request_id,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return orjson.dumps(body)


async def send_problem(
    send: Send,
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    path: str,
    request_id: bytes,
    headers: list[Header],
    head_only: bool = False,
) -> None:
    body = problem_body(status, code, title, detail, path=path, request_id=request_id.decode("latin-1"))
    response_headers = [
        (b"content-type", _CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


async def send_error(
    send: Send,
    error: BatonError,
    *,
    path: str,
    request_id: bytes,
    headers: list[Header],
    head_only: bool = False,
) -> None:
    """Render a shared domain error (status, code, title, detail and its own headers)."""
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send_problem(
        send,
        error.status,
        error.instance_code,
        error.title,
        error.detail,
        path=path,
        request_id=request_id,
        headers=[*headers, *extra],
        head_only=head_only,
    )
