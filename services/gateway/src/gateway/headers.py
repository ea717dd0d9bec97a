"""Which headers cross the gateway, in both directions, and the ones it adds.

Inbound, everything an upstream might trust as said by the gateway is dropped: identity headers
(``X-Principal*``, ``X-User*``, ``X-Forwarded-User``, ``X-Baton-*``), the forwarding headers (the
gateway sets its own ``X-Forwarded-For`` / ``-Proto`` / ``-Host``), ``Forwarded``, ``X-Real-IP``, and the
hop-by-hop headers of RFC 9110 section 7.6.1 plus any header named in ``Connection``. ``Authorization``,
``traceparent`` and everything else pass unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HOP_BY_HOP",
    "ClientAddress",
    "CorsPolicy",
    "Inbound",
    "parse_inbound",
    "response_headers",
    "security_headers",
]

Header = tuple[bytes, bytes]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Dropped from requests besides hop-by-hop: set by the gateway, or by the transport.
_REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"forwarded",
    b"x-real-ip",
    b"x-request-id",
}
_REQUEST_DROP_PREFIXES = (b"x-principal", b"x-user", b"x-baton-", b"x-forwarded-")
# Dropped from responses besides hop-by-hop: the gateway's server writes its own.
_RESPONSE_DROP = HOP_BY_HOP | {b"server", b"date", b"x-request-id"}

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


@dataclass(slots=True)
class Inbound:
    """What the gateway needs from the incoming headers, and the ones it forwards."""

    forward: list[Header]
    authorization: list[bytes]
    request_id: bytes | None
    content_length: int | None
    chunked: bool
    origin: bytes | None
    host: bytes | None
    forwarded_for: bytes | None
    forwarded_proto: bytes | None
    cors_preflight: bool
    cors_request_headers: bytes | None = None
    invalid: str | None = None


def parse_inbound(raw: Iterable[Header]) -> Inbound:
    """One pass over the ASGI header list (names are lower-case bytes)."""
    forward: list[Header] = []
    authorization: list[bytes] = []
    request_id = content_length_raw = origin = host = xff = xfp = connection = None
    chunked = preflight = False
    acrh: bytes | None = None
    invalid: str | None = None
    for name, value in raw:
        if name in _REQUEST_DROP or name.startswith(_REQUEST_DROP_PREFIXES):
            if name == b"content-length":
                if content_length_raw is not None and content_length_raw != value:
                    invalid = "conflicting Content-Length headers"
                content_length_raw = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"x-request-id":
                request_id = value if _REQUEST_ID.fullmatch(value) else None
            elif name == b"host":
                host = value
            elif name == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
            elif name == b"x-forwarded-proto":
                xfp = value
            elif name == b"connection":
                connection = value
            continue
        if name == b"authorization":
            authorization.append(value)
        elif name == b"origin":
            origin = value
        elif name == b"access-control-request-method":
            preflight = True
        elif name == b"access-control-request-headers":
            acrh = value
        forward.append((name, value))
    if connection is not None:
        listed = {t.strip().lower() for t in connection.split(b",")}
        forward = [(n, v) for n, v in forward if n not in listed]
    content_length: int | None = None
    if content_length_raw is not None:
        if content_length_raw.isdigit():
            content_length = int(content_length_raw)
        else:
            invalid = "invalid Content-Length header"
    return Inbound(
        forward=forward,
        authorization=authorization,
        request_id=request_id,
        content_length=content_length,
        chunked=chunked,
        origin=origin,
        host=host,
        forwarded_for=xff,
        forwarded_proto=xfp,
        cors_preflight=preflight,
        cors_request_headers=acrh,
        invalid=invalid,
    )


def response_headers(raw: Sequence[tuple[bytes, bytes]]) -> tuple[list[Header], set[bytes]]:
    """Upstream response headers to pass on (lower-cased names) and the set of names kept."""
    out: list[Header] = []
    names: set[bytes] = set()
    connection: set[bytes] | None = None
    for name, value in raw:
        lower = name.lower()
        if lower in _RESPONSE_DROP:
            if lower == b"connection":
                connection = {t.strip().lower() for t in value.split(b",")}
            continue
        out.append((lower, value))
        names.add(lower)
    if connection:
        out = [(n, v) for n, v in out if n not in connection]
        names -= connection
    return out, names


def security_headers(hsts_seconds: int) -> tuple[list[Header], list[Header]]:
    """(headers for every response, extra headers for responses served over https)."""
    always = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    ]
    https = []
    if hsts_seconds > 0:
        https.append((b"strict-transport-security", f"max-age={hsts_seconds}; includeSubDomains".encode()))
    return always, https


class ClientAddress:
    """The caller's address and scheme, believing ``X-Forwarded-*`` only from trusted proxies."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(t, strict=False) for t in trusted]
        self._known: dict[str, bool] = {}

    def is_trusted(self, peer: str) -> bool:
        if not self._networks:
            return False
        known = self._known.get(peer)
        if known is None:
            try:
                address = ipaddress.ip_address(peer)
                known = any(address in net for net in self._networks)
            except ValueError:
                known = False
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[peer] = known
        return known

    def resolve(
        self, peer: str, scheme: str, forwarded_for: bytes | None, forwarded_proto: bytes | None
    ) -> tuple[str, str, str]:
        """(client ip, scheme, the X-Forwarded-For value to send upstream)."""
        if forwarded_for is None or not self.is_trusted(peer):
            return peer, scheme, peer
        hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",") if h.strip()]
        client = peer
        for hop in reversed(hops):  # the rightmost address a trusted proxy did not add itself
            client = hop
            if not self.is_trusted(hop):
                break
        proto = scheme
        if forwarded_proto is not None:
            value = forwarded_proto.decode("latin-1").split(",")[0].strip().lower()
            if value in ("http", "https"):
                proto = value
        return client, proto, ", ".join([*hops, peer])


class CorsPolicy:
    """CORS from settings. ``*`` in the origins allows any origin (never together with credentials)."""

    _METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    _EXPOSE = b"X-Request-Id, Retry-After, ETag, Location, Content-Disposition, WWW-Authenticate"

    def __init__(self, origins: Iterable[str], *, allow_credentials: bool, max_age: int) -> None:
        self.origins = frozenset(o.rstrip("/").encode("latin-1") for o in origins)
        self.any = b"*" in self.origins
        if self.any and allow_credentials:
            raise ValueError("CORS: '*' cannot be combined with credentials")
        self.allow_credentials = allow_credentials
        self.max_age = str(max_age).encode()

    def allows(self, origin: bytes) -> bool:
        return self.any or origin in self.origins

    def response_headers(self, origin: bytes | None) -> list[Header]:
        if origin is None or not self.origins or not self.allows(origin):
            return []
        out = [
            (b"access-control-allow-origin", b"*" if self.any else origin),
            (b"access-control-expose-headers", self._EXPOSE),
        ]
        if not self.any:
            out.append((b"vary", b"Origin"))
        if self.allow_credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        return out

    def preflight_headers(self, origin: bytes, request_headers: bytes | None) -> list[Header]:
        out = [
            (b"access-control-allow-origin", b"*" if self.any else origin),
            (b"access-control-allow-methods", self._METHODS),
            (b"access-control-max-age", self.max_age),
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        ]
        if request_headers:
            out.append((b"access-control-allow-headers", request_headers))
        if self.allow_credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        return out
