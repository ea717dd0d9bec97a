"""Settings every Baton service shares, read from ``BATON_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEV_SECRET", "BaseServiceSettings", "Environment", "settings_env_vars"]

Environment = Literal["development", "test", "production"]

# The one well-known placeholder; accepted only where nothing real is at stake.
DEV_SECRET = "baton-development-secret-change-me"


class BaseServiceSettings(BaseSettings):
    """Common configuration. A service subclasses this and adds ``BATON_<SERVICE>_...`` fields."""

    model_config = SettingsConfigDict(env_prefix="BATON_", extra="ignore", env_file=None)

    environment: Environment = "development"
    service_name: str = "baton"
    log_level: str = "INFO"
    log_json: bool = True

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/baton"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # The Postgres schema a service owns; empty means "same as service_name".
    database_schema: str = ""

    nats_url: str = "nats://127.0.0.1:4222"
    # JetStream replicas for the streams a service declares (3 in production).
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)

    # Token verification (gateway and every service, defense in depth).
    jwt_issuer: str = "http://127.0.0.1:8000"
    jwt_audience: str = "baton"
    jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["Ed25519", "RS256"])
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=30)
    jwks_cache_seconds: int = Field(default=300, ge=1)
    jwks_refresh_cooldown_seconds: float = Field(default=30.0, ge=0)
    # How long a cached key set is still used while the issuer cannot be reached.
    jwks_stale_max_seconds: int = Field(default=3600, ge=0)

    # Secret material (private key encryption, etc.); must be changed outside development.
    secret_key: SecretStr = SecretStr(DEV_SECRET)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    otel_exporter_otlp_endpoint: str | None = None

    @property
    def schema_name(self) -> str:
        return self.database_schema or self.service_name

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> BaseServiceSettings:
        if self.environment == "production":
            for name, value in self._secret_fields():
                if value == DEV_SECRET or len(value) < 16:
                    raise ValueError(
                        f"BATON_{name.upper()} must be set to a real secret (16+ characters) in production"
                    )
        return self

    def _secret_fields(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out.append((name, value.get_secret_value()))
        return out


def settings_env_vars(cls: type[BaseSettings]) -> dict[str, tuple[str, object, str]]:
    """Every environment variable ``cls`` reads → (field name, default, description).

    The configuration reference and the Kubernetes manifest checks are generated from this, so a setting
    and its documentation or deployment cannot drift apart.
    """
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    out: dict[str, tuple[str, object, str]] = {}
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            names = [alias.upper()]
        elif alias is not None and hasattr(alias, "choices"):
            names = [str(c).upper() for c in alias.choices if isinstance(c, str)]
        else:
            names = [prefix + (info.alias or name).upper()]
        default: object = info.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = "(secret)"
        for env in names:
            out[env] = (name, default, info.description or "")
    return out
