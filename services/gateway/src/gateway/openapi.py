"""One OpenAPI document for the whole public API, merged from every upstream's ``/openapi.json``.

Only operations the route table sends to that same upstream are kept (an upstream's internal or
unrouted paths never leak). Each upstream's last good document is cached and refreshed every
``refresh_seconds``; an upstream that is down keeps its last good document (or is simply absent, and
listed in ``x-baton-upstreams``). Component schemas with the same name and the same content are shared;
a clash is resolved by prefixing the later upstream's schema name and rewriting its references.

Every operation also lists what the gateway itself answers before (or instead of) the upstream: 400 for
a path or headers it refuses, 401 for a missing or invalid token (unless the route is public), 413 for
a body over its limit, 429 with ``Retry-After`` from its rate limits, 502 when the upstream cannot be
reached or breaks off, 504 when it does not answer in time. Where the upstream declares the same status,
the two descriptions and media types are merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

import orjson

from gateway.balancer import Endpoints
from gateway.routes import Route, RouteTable
from gateway.upstream import UpstreamClient
from shared.http import problems

__all__ = ["OpenAPIAggregator", "merge_documents"]

log = logging.getLogger("gateway.openapi")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_TEMPLATE = re.compile(r"\{[^}/]+\}")
_SCHEMA_REF = "#/components/schemas/"
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
_BEARER = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
# How soon an upstream whose document could not be fetched is asked again.
RETRY_MISSING_SECONDS = 5.0
_GATEWAY_ANSWERS = {
    400: "Refused by the gateway: a path or header it does not accept",
    401: "Refused by the gateway: a missing, malformed or invalid bearer token",
    413: "Refused by the gateway: the request body is over its limit",
    429: "Refused by the gateway: too many requests from this address or principal; retry after Retry-After",
    502: "The gateway could not reach the service, or the service broke off its answer",
    504: "The service did not answer the gateway in time",
}


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_SCHEMA_REF):
                name = value[len(_SCHEMA_REF) :]
                out[key] = _SCHEMA_REF + renames.get(name, name)
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def _with_gateway_answers(operation: dict[str, Any], route: Route) -> dict[str, Any]:
    """``operation``'s responses plus the gateway's own answers (see the module docstring)."""
    statuses = [400, 429, 502, 504]
    if not route.public:
        statuses.append(401)
    if "requestBody" in operation:
        statuses.append(413)
    ours = problems(*statuses, described=_GATEWAY_ANSWERS, unavailable=False)
    responses = dict(operation.get("responses") or {})
    for status, answer in sorted(ours.items()):
        key = str(status)
        theirs = responses.get(key)
        if not isinstance(theirs, dict):
            responses[key] = answer
            continue
        merged = dict(theirs)
        description = str(theirs.get("description") or "")
        if answer["description"] not in description:
            merged["description"] = (
                f"{description}; or: {answer['description']}" if description else answer["description"]
            )
        merged["content"] = {**answer["content"], **(theirs.get("content") or {})}
        headers = {**answer.get("headers", {}), **(theirs.get("headers") or {})}
        if headers:
            merged["headers"] = headers
        responses[key] = merged
    return {**operation, "responses": responses}


def _public_paths(name: str, document: dict[str, Any], table: RouteTable) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, item in (document.get("paths") or {}).items():
        if not isinstance(item, dict) or not isinstance(path, str):
            continue
        concrete = _TEMPLATE.sub("x", path)
        kept: dict[str, Any] = {}
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            route, _ = table.resolve(concrete, method.upper())
            if route is None or route.upstream != name:
                continue
            operation = dict(operation)
            operation["security"] = [] if route.public else [{"bearer": []}]
            operation.setdefault("tags", [name])
            operation["x-baton-upstream"] = name
            kept[method] = _with_gateway_answers(operation, route)
        if kept:
            if isinstance(item.get("parameters"), list):
                kept["parameters"] = item["parameters"]
            paths[path] = kept
    return paths


def merge_documents(documents: dict[str, dict[str, Any]], table: RouteTable) -> dict[str, Any]:
    """The public document from the upstreams' documents (by upstream name, in route-table order)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    tags: dict[str, dict[str, Any]] = {}
    for name in sorted(documents):
        document = documents[name]
        own = ((document.get("components") or {}).get("schemas")) or {}
        renames = {
            schema: f"{name.capitalize()}{schema}"
            for schema, body in own.items()
            if schema in schemas and schemas[schema] != body
        }
        if renames:
            document = _rewrite_refs(document, renames)
            own = ((document.get("components") or {}).get("schemas")) or {}
        for schema, body in own.items():
            schemas.setdefault(renames.get(schema, schema), body)
        for path, item in _public_paths(name, document, table).items():
            paths.setdefault(path, {}).update(item)
        for tag in document.get("tags") or []:
            if isinstance(tag, dict) and isinstance(tag.get("name"), str):
                tags.setdefault(tag["name"], tag)
    used_tags = {
        t
        for item in paths.values()
        for op in item.values()
        if isinstance(op, dict)
        for t in op.get("tags", [])
    }
    for tag in sorted(used_tags - tags.keys()):
        tags[tag] = {"name": tag}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Baton API",
            "version": "1",
            "description": "Every public operation of Baton, served through the gateway. Send "
            "`Authorization: Bearer <access token>` except on the operations marked as public "
            "(login, token, logout, discovery).",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items())), "securitySchemes": _BEARER},
        "security": [{"bearer": []}],
        "tags": [tags[t] for t in sorted(tags) if t in used_tags],
    }


class OpenAPIAggregator:
    def __init__(
        self,
        client: UpstreamClient,
        table: RouteTable,
        upstreams: dict[str, Endpoints],
        *,
        refresh_seconds: float = 300.0,
        timeout_seconds: float = 3.0,
    ) -> None:
        self._client = client
        self._table = table
        self._upstreams = {name: upstreams[name] for name in sorted(table.upstreams())}
        self._refresh_seconds = refresh_seconds
        self._timeout = timeout_seconds
        self._documents: dict[str, dict[str, Any]] = {}
        self._status: dict[str, str] = dict.fromkeys(self._upstreams, "never fetched")
        self._merged: bytes | None = None
        self._refreshed_at: float | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> dict[str, str]:
        return dict(self._status)

    async def document(self) -> bytes:
        """The merged document (JSON bytes), refreshed first when it is older than the period."""
        now = time.monotonic()
        if (
            self._merged is None
            or self._refreshed_at is None
            or now - self._refreshed_at > self._refresh_seconds
        ):
            await self.refresh()
        assert self._merged is not None
        return self._merged

    def _due(self) -> bool:
        if self._merged is None or self._refreshed_at is None:
            return True
        age = time.monotonic() - self._refreshed_at
        return age > self._refresh_seconds or (self._missing() and age > RETRY_MISSING_SECONDS)

    def _missing(self) -> bool:
        return any(status != "ok" for status in self._status.values())

    async def document_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(await self.document())
        return result

    async def refresh(self) -> None:
        async with self._lock:
            names = list(self._upstreams)
            bodies = await asyncio.gather(*(self._fetch(self._upstreams[n]) for n in names))
            for name, body in zip(names, bodies, strict=True):
                document = None
                if body is not None:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        document = orjson.loads(body)
                if isinstance(document, dict):
                    self._documents[name] = document
                    self._status[name] = "ok"
                elif name in self._documents:
                    self._status[name] = "unavailable (serving the last good document)"
                else:
                    self._status[name] = "unavailable"
            merged = merge_documents(self._documents, self._table)
            merged["x-baton-upstreams"] = dict(self._status)
            self._merged = orjson.dumps(merged)
            self._refreshed_at = time.monotonic()

    async def _fetch(self, endpoints: Endpoints) -> bytes | None:
        """The upstream's document from the first of its endpoints that serves it."""
        for url in endpoints.order():
            body = await self._client.get(
                url + "/openapi.json", timeout=self._timeout, max_bytes=MAX_DOCUMENT_BYTES
            )
            if body is not None:
                return body
        return None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-openapi")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("refreshing the merged OpenAPI document failed")
            await asyncio.sleep(
                min(self._refresh_seconds, RETRY_MISSING_SECONDS)
                if self._missing()
                else self._refresh_seconds
            )
