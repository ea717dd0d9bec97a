"""Settings of the identity service: the shared ``BATON_*`` ones plus ``BATON_IDENTITY_*``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import BaseServiceSettings

__all__ = ["Settings", "SigningAlgorithm"]

SigningAlgorithm = Literal["Ed25519", "RS256"]


def _env(name: str) -> str:
    return f"BATON_IDENTITY_{name}"


class Settings(BaseServiceSettings):
    """Token lifetimes, signing keys, login backoff, the not-before bucket, an optional external issuer,
    and the owner role that runs the migrations.

    Every field can also be passed by name (tests build ``Settings(access_token_ttl_seconds=60)``).
    """

    model_config = SettingsConfigDict(
        env_prefix="BATON_", extra="ignore", env_file=None, populate_by_name=True
    )

    service_name: str = "identity"
    port: int = Field(default=8001, validation_alias=_env("PORT"))

    # Migrations (``python -m identity.migrate``, ``python -m identity.bootstrap --migrate``) run as the
    # schema's owner role and then grant the runtime role its share, as ``python -m shared.migrations``
    # does. Without an owner URL they run with ``BATON_DATABASE_URL`` (then the owner's, as in the
    # migration init container).
    database_owner_url: SecretStr | None = Field(
        default=None,
        validation_alias=_env("DATABASE_OWNER_URL"),
        description="Postgres URL of the schema's owner role, used only to run the migrations",
    )
    database_runtime_role: str | None = Field(
        default=None,
        description="Role granted its privileges after the migrations "
        "(default with an owner URL: the user of BATON_DATABASE_URL)",
    )

    # Tokens. Access tokens live at most 15 minutes (the gateway's not-before covers the rest).
    access_token_ttl_seconds: int = Field(
        default=900, ge=30, le=900, validation_alias=_env("ACCESS_TOKEN_TTL")
    )
    refresh_token_ttl_seconds: int = Field(
        default=30 * 86400, ge=60, le=365 * 86400, validation_alias=_env("REFRESH_TOKEN_TTL")
    )

    # Signing keys: the algorithm of newly generated keys; automatic rotation age (0 = never);
    # how long a new key is published before it signs (so every JWKS cache has seen it).
    signing_algorithm: SigningAlgorithm = Field(default="Ed25519", validation_alias=_env("SIGNING_ALGORITHM"))
    key_rotation_days: int = Field(default=30, ge=0, le=3650, validation_alias=_env("KEY_ROTATION_DAYS"))
    key_publish_ahead_seconds: int = Field(
        default=300, ge=0, le=86400, validation_alias=_env("KEY_PUBLISH_AHEAD")
    )

    # Password hashing cost (Argon2id). Defaults are argon2-cffi's RFC 9106 low-memory profile.
    argon2_time_cost: int = Field(default=3, ge=1, le=20, validation_alias=_env("ARGON2_TIME_COST"))
    argon2_memory_kib: int = Field(
        default=65536, ge=1024, le=4 * 1024 * 1024, validation_alias=_env("ARGON2_MEMORY_KIB")
    )
    argon2_parallelism: int = Field(default=4, ge=1, le=64, validation_alias=_env("ARGON2_PARALLELISM"))

    # Login backoff: after ``*_free_failures`` failures inside the window, each further failure locks
    # for base * 2^(n - free) seconds, capped.
    login_account_free_failures: int = Field(
        default=5, ge=1, validation_alias=_env("LOGIN_ACCOUNT_FREE_FAILURES")
    )
    login_ip_free_failures: int = Field(default=20, ge=1, validation_alias=_env("LOGIN_IP_FREE_FAILURES"))
    login_failure_window_seconds: int = Field(
        default=900, ge=1, validation_alias=_env("LOGIN_FAILURE_WINDOW")
    )
    login_backoff_base_seconds: int = Field(default=2, ge=1, validation_alias=_env("LOGIN_BACKOFF_BASE"))
    login_backoff_max_seconds: int = Field(default=900, ge=1, validation_alias=_env("LOGIN_BACKOFF_MAX"))
    # Proxies in front of identity that append to X-Forwarded-For (the gateway: 1). 0 = use the peer.
    forwarded_for_hops: int = Field(default=1, ge=0, le=5, validation_alias=_env("FORWARDED_FOR_HOPS"))

    # Per-subject not-before, read by the gateway.
    not_before_bucket: str = Field(default="baton_not_before", validation_alias=_env("NOT_BEFORE_BUCKET"))
    not_before_ttl_seconds: int = Field(default=86400, ge=960, validation_alias=_env("NOT_BEFORE_TTL"))

    # Optional external OIDC issuer whose tokens can be exchanged for Baton tokens.
    external_issuer: str | None = Field(default=None, validation_alias=_env("EXTERNAL_ISSUER"))
    external_jwks_url: str | None = Field(default=None, validation_alias=_env("EXTERNAL_JWKS_URL"))
    external_audience: str | None = Field(default=None, validation_alias=_env("EXTERNAL_AUDIENCE"))
    external_subject_claim: str = Field(default="sub", validation_alias=_env("EXTERNAL_SUBJECT_CLAIM"))
    external_email_claim: str = Field(default="email", validation_alias=_env("EXTERNAL_EMAIL_CLAIM"))
    # Create a Baton user (no password, no memberships) the first time a verified email is seen.
    external_auto_create: bool = Field(default=False, validation_alias=_env("EXTERNAL_AUTO_CREATE"))
    external_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256", "Ed25519", "PS256"],
        validation_alias=_env("EXTERNAL_ALGORITHMS"),
    )

    @property
    def external_enabled(self) -> bool:
        return bool(self.external_issuer and self.external_jwks_url and self.external_audience)
