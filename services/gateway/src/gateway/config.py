"""Gateway settings: the shared ``BATON_*`` ones plus ``BATON_GATEWAY_*``.

Every gateway field can also be passed by its Python name (``build_app(identity_url=...)``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import BaseServiceSettings

__all__ = ["UPSTREAMS", "Settings", "split_urls"]

# Every upstream the route table may name; each has a ``<name>_url`` setting.
UPSTREAMS = ("identity", "projects", "documents", "workflows", "audit")


_URLS = "Base URL of the service, or several separated by commas, which then take turns"


def _gw(default: Any, name: str, **kw: Any) -> Any:
    """A field read from ``BATON_GATEWAY_<NAME>``."""
    return Field(default, validation_alias=AliasChoices(f"BATON_GATEWAY_{name.upper()}"), **kw)


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATON_", extra="ignore", env_file=None, populate_by_name=True
    )

    service_name: str = "gateway"

    # Upstreams: a base URL (no path), or several separated by commas, which then take turns (see
    # gateway.balancer; an endpoint that refuses connections is set aside for eject_seconds).
    identity_url: str = _gw("http://127.0.0.1:8001", "identity_url", description=_URLS)
    projects_url: str = _gw("http://127.0.0.1:8002", "projects_url", description=_URLS)
    documents_url: str = _gw("http://127.0.0.1:8003", "documents_url", description=_URLS)
    workflows_url: str = _gw("http://127.0.0.1:8004", "workflows_url", description=_URLS)
    audit_url: str = _gw("http://127.0.0.1:8005", "audit_url", description=_URLS)

    eject_seconds: float = _gw(
        5.0,
        "eject_seconds",
        gt=0,
        description="How long an endpoint that refused a connection is tried only after the others",
    )

    connect_timeout_seconds: float = _gw(2.0, "connect_timeout_seconds", gt=0)
    # Longest silence while waiting for (a chunk of) the upstream's response.
    read_timeout_seconds: float = _gw(30.0, "read_timeout_seconds", gt=0)
    # Keep-alive connections per upstream.
    pool_size: int = _gw(64, "pool_size", ge=1, le=10_000)
    # Below the upstreams' own idle timeout (uvicorn: 5 s), so an idle connection is dropped here first
    # rather than found closed when a non-idempotent request (which is never retried) is sent on it.
    keepalive_seconds: float = _gw(4.0, "keepalive_seconds", gt=0)
    # Request and response bodies up to this size are buffered; larger or unsized ones are streamed.
    buffer_bytes: int = _gw(65_536, "buffer_bytes", ge=0)
    # Body limit on document upload routes; every other route uses BATON_MAX_BODY_BYTES (1 MiB).
    upload_max_body_bytes: int = _gw(30 * 1024 * 1024, "upload_max_body_bytes", ge=1024)

    # Token buckets; a rate of 0 turns that limit off.
    rate_per_ip: float = _gw(100.0, "rate_per_ip", ge=0)
    burst_per_ip: int = _gw(200, "burst_per_ip", ge=1)
    rate_per_principal: float = _gw(50.0, "rate_per_principal", ge=0)
    burst_per_principal: int = _gw(100, "burst_per_principal", ge=1)
    rate_limit_max_keys: int = _gw(100_000, "rate_limit_max_keys", ge=100)
    # Peers (IPs or CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are believed (a load balancer).
    trusted_proxies: list[str] = _gw([], "trusted_proxies")

    cors_allowed_origins: list[str] = _gw([], "cors_allowed_origins")
    cors_allow_credentials: bool = _gw(False, "cors_allow_credentials")
    cors_max_age_seconds: int = _gw(600, "cors_max_age_seconds", ge=0)
    hsts_seconds: int = _gw(63_072_000, "hsts_seconds", ge=0)

    # Verified tokens kept (by SHA-256) until they expire.
    token_cache_size: int = _gw(50_000, "token_cache_size", ge=0)
    not_before_bucket: str = _gw("baton_not_before", "not_before_bucket")

    # gateway.request_denied events: bounded queue (dropped and counted when full), batched publishing.
    denied_queue_size: int = _gw(10_000, "denied_queue_size", ge=1)
    denied_batch_size: int = _gw(256, "denied_batch_size", ge=1)
    denied_flush_seconds: float = _gw(0.5, "denied_flush_seconds", gt=0)

    openapi_refresh_seconds: float = _gw(300.0, "openapi_refresh_seconds", gt=0)
    openapi_fetch_timeout_seconds: float = _gw(3.0, "openapi_fetch_timeout_seconds", gt=0)

    @field_validator(*(f"{name}_url" for name in UPSTREAMS))
    @classmethod
    def _check_urls(cls, value: str) -> str:
        split_urls(value)
        return value

    def upstream_urls(self) -> dict[str, tuple[str, ...]]:
        return {name: split_urls(getattr(self, f"{name}_url")) for name in UPSTREAMS}


def split_urls(value: str) -> tuple[str, ...]:
    """The base URLs of a comma-separated setting; each must be ``http://host[:port]`` with no path."""
    urls = tuple(part.strip().rstrip("/") for part in value.split(","))
    for url in urls:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            raise ValueError(f"an upstream URL has a bad port: {url!r}") from None
        if parts.scheme != "http" or not parts.hostname or parts.path or parts.query or parts.fragment:
            raise ValueError(f"an upstream URL must be http://host[:port]: {url!r}")
    if len(set(urls)) != len(urls):
        raise ValueError(f"an upstream URL is listed twice: {value!r}")
    return urls
