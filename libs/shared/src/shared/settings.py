"""Settings every Baton service shares, read from ``BATON_*`` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEV_SECRET", "BaseServiceSettings", "Environment", "settings_env_vars"]

Environment = Literal["development", "test", "production"]

# The one well-known placeholder; accepted only where nothing real is at stake.
DEV_SECRET = "baton-development-secret-change-me"

# The consumers' inbox pruning (shared.messaging.inbox.InboxPruning.from_settings).
InboxRetentionDays = Annotated[
    float,
    Field(
        gt=0,
        le=36_500,
        allow_inf_nan=False,
        description="Days a consumer's inbox keeps applied event ids (> 0); a re-created consumer starts there",
    ),
]
InboxPruneIntervalSeconds = Annotated[
    float,
    Field(ge=0, allow_inf_nan=False, description="Seconds between a worker's inbox prunes, ±10% (0: never)"),
]


class BaseServiceSettings(BaseSettings):
    """Common configuration. A service subclasses this and adds ``BATON_<SERVICE>_...`` fields."""

    model_config = SettingsConfigDict(env_prefix="BATON_", extra="ignore", env_file=None)

    environment: Environment = Field(
        default="development", description="`production` refuses default or short secrets"
    )
    service_name: str = Field(default="baton", description="Name in logs, traces and the event source")
    log_level: str = Field(default="INFO", description="Python log level")
    log_json: bool = Field(default=True, description="One JSON object per log line")

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/baton",
        description="Postgres URL of the service's own role",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200, description="Connections kept per process")
    # The Postgres schema a service owns; empty means "same as service_name".
    database_schema: str = Field(default="", description="Schema the service owns (default: its name)")

    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated")
    # JetStream replicas for the streams a service declares (3 in production).
    nats_stream_replicas: int = Field(default=1, ge=1, le=5, description="Replicas of declared streams")

    # Token verification (gateway and every service, defense in depth).
    jwt_issuer: str = Field(default="http://127.0.0.1:8000", description="Exact `iss` of accepted tokens")
    jwt_audience: str = Field(default="baton", description="Required `aud` of accepted tokens")
    jwks_url: str = Field(
        default="http://127.0.0.1:8001/.well-known/jwks.json",
        description="Where the signing keys are fetched; several URLs separated by commas are tried in turn",
    )
    jwt_algorithms: list[str] = Field(
        default_factory=lambda: ["Ed25519", "RS256"], description="Accepted signature algorithms (JSON list)"
    )
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=30, description="Clock skew tolerated on exp/nbf")
    jwks_cache_seconds: int = Field(default=300, ge=1, description="How long a fetched key set is fresh")
    jwks_refresh_cooldown_seconds: float = Field(
        default=30.0, ge=0, description="Minimum time between refetches on unknown `kid`s"
    )
    # How long a cached key set is still used while the issuer cannot be reached.
    jwks_stale_max_seconds: int = Field(
        default=3600, ge=0, description="How long cached keys serve while the issuer is down"
    )

    # Secret material (private key encryption, etc.); must be changed outside development.
    secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET), description="Encrypts private key material (16+ characters)"
    )

    worker_health_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of a worker's /healthz, /readyz and /metrics (off when unset)",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of an API process's Prometheus /metrics (off when unset)",
    )
    # The services' workers hand each consumer runner ``InboxPruning.from_settings(settings)``.
    inbox_retention_days: InboxRetentionDays = 14.0
    inbox_prune_interval_seconds: InboxPruneIntervalSeconds = 3600.0
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body accepted")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP endpoint for traces (off when unset)"
    )

    @property
    def schema_name(self) -> str:
        return self.database_schema or self.service_name

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> BaseServiceSettings:
        if self.environment == "production":
            for name, value in self._secret_fields():
                # an optional secret left empty (e.g. a provider's key that is not in use) is not a default
                if value == "" and name != "secret_key":
                    continue
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
            # a plain field-name choice (for keyword construction) is not an environment variable
            names = [n for n in names if n.startswith(prefix)] or names
        else:
            names = [prefix + (info.alias or name).upper()]
        default: object = info.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = "(secret)"
        for env in names:
            out[env] = (name, default, info.description or "")
    return out
