"""The route table: the one place that says which public path goes to which upstream.

Pattern syntax: ``{name}`` is one path segment; a trailing ``/*`` is anything below that prefix; a
trailing ``*`` right after a name is that path or anything below it (``/v1/users*`` matches
``/v1/users`` and ``/v1/users/1/x``, not ``/v1/usersx``). The first matching entry wins, so the
more specific entries come first. ``upstream`` ``None`` is served by the gateway itself.

``public`` routes need no token. ``large_body`` routes carry document uploads and get the upload
body limit instead of the default one. ``methods`` ``None`` means any method (the upstream answers 405).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["GATEWAY", "ROUTES", "Route", "RouteTable", "compile_pattern"]

# ``upstream`` value of the routes the gateway answers itself.
GATEWAY = "gateway"


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of a route pattern (see the module docstring)."""
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    tail = ""
    body = pattern
    if body.endswith("/*"):
        body, tail = body[:-2], "/.*"
    elif body.endswith("*"):
        body, tail = body[:-1], "(?:/.*)?"
    if "*" in body:
        raise ValueError(f"'*' is only allowed at the end of a route pattern: {pattern!r}")
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", body)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts if p)
    return re.compile(regex + tail)


@dataclass(frozen=True)
class Route:
    pattern: str
    upstream: str
    public: bool = False
    methods: frozenset[str] | None = None
    large_body: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_pattern(self.pattern))

    @property
    def name(self) -> str:
        """A stable label for logs and events: ``upstream:pattern``."""
        return f"{self.upstream}:{self.pattern}"

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


def _r(
    pattern: str,
    upstream: str,
    *,
    public: bool = False,
    methods: Iterable[str] | None = None,
    large_body: bool = False,
) -> Route:
    return Route(
        pattern,
        upstream,
        public=public,
        methods=frozenset(methods) if methods is not None else None,
        large_body=large_body,
    )


ROUTES: tuple[Route, ...] = (
    # Served by the gateway itself.
    _r("/healthz", GATEWAY, public=True, methods=("GET", "HEAD")),
    _r("/readyz", GATEWAY, public=True, methods=("GET", "HEAD")),
    _r("/openapi.json", GATEWAY, public=True, methods=("GET", "HEAD")),
    _r("/docs", GATEWAY, public=True, methods=("GET", "HEAD")),
    # identity
    _r("/v1/auth/login", "identity", public=True),
    _r("/v1/auth/token", "identity", public=True),
    _r("/v1/auth/logout", "identity", public=True),
    _r("/v1/auth/*", "identity"),
    _r("/.well-known/*", "identity", public=True),
    _r("/v1/users*", "identity"),
    _r("/v1/clients/{client_id}/agents*", "identity"),
    _r("/v1/clients/{client_id}/members*", "identity"),
    # projects
    _r("/v1/clients*", "projects"),
    _r("/v1/projects", "projects"),
    # documents
    _r("/v1/projects/{project_id}/documents*", "documents", large_body=True),
    _r("/v1/documents*", "documents", large_body=True),
    _r("/v1/search", "documents"),
    _r("/v1/admin/reindex*", "documents"),
    # workflows
    _r("/v1/projects/{project_id}/workflow", "workflows"),
    _r("/v1/projects/{project_id}/sprint-status", "workflows"),
    _r("/v1/tasks*", "workflows"),
    _r("/v1/decisions*", "workflows"),
    _r("/v1/workflow-definitions*", "workflows"),
    # projects (after the more specific /v1/projects/{id}/... entries)
    _r("/v1/projects/{project_id}", "projects", methods=("GET", "HEAD", "PATCH", "DELETE")),
    # audit (the checkpoint-signing public keys are public, so anyone can verify an exported log)
    _r("/v1/audit/public-key", "audit", public=True, methods=("GET", "HEAD")),
    _r("/v1/audit/public-keys", "audit", public=True, methods=("GET", "HEAD")),
    _r("/v1/audit*", "audit"),
)


def _key(path: str) -> str:
    """The first two segments: ``/v1/projects/1/x`` → ``/v1/projects``, ``/healthz`` → ``/healthz``."""
    parts = path.split("/", 3)
    return "/".join(parts[:3])


def _pattern_key(pattern: str) -> str | None:
    """The ``_key`` every path matching ``pattern`` has, or None if its first two segments vary."""
    literal = re.split(r"[{*]", pattern, maxsplit=1)[0]
    if literal == pattern:
        return _key(pattern)
    segments = literal.split("/")
    if len(segments) >= 4:  # "/v1/clients/{id}..." : both first segments are complete
        return f"/{segments[1]}/{segments[2]}"
    if len(segments) == 3 and pattern[len(literal)] == "*" and not literal.endswith("/"):
        return literal  # "/v1/users*"
    return None


class RouteTable:
    """Ordered lookup over ``Route`` entries (indexed by the first two path segments)."""

    def __init__(self, routes: Iterable[Route] = ROUTES) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        keyed = [(_pattern_key(r.pattern), r) for r in self.routes]
        anywhere = [r for k, r in keyed if k is None]
        self._index: dict[str, tuple[Route, ...]] = {}
        for key in {k for k, _ in keyed if k is not None}:
            self._index[key] = tuple(r for k, r in keyed if k == key or k is None)
        self._anywhere = tuple(anywhere)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def resolve(self, path: str, method: str) -> tuple[Route | None, frozenset[str]]:
        """The first route matching ``path`` and ``method``; otherwise ``None`` and the methods that
        some route would accept on that path (empty: no route at all → 404, else 405)."""
        allowed: set[str] = set()
        for route in self._index.get(_key(path), self._anywhere):
            if route.regex.fullmatch(path) is None:
                continue
            if route.methods is None or method in route.methods:
                return route, frozenset()
            allowed |= route.methods
        return None, frozenset(allowed)

    def upstreams(self) -> frozenset[str]:
        return frozenset(r.upstream for r in self.routes if r.upstream != GATEWAY)
