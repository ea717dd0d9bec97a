"""Settings of the audit service: the shared ``BATON_*`` ones plus ``BATON_AUDIT_*``.

Every audit-specific field is read from ``BATON_AUDIT_<FIELD>`` and can be passed by its field name in code
(``Settings(gap_grace_seconds=0.5)``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import BaseServiceSettings

__all__ = ["AuditSettings", "Settings"]


def _env(name: str, default: Any, description: str, **kwargs: Any) -> Any:
    return Field(default, validation_alias=f"BATON_AUDIT_{name.upper()}", description=description, **kwargs)


def _env_factory(name: str, factory: Any, description: str) -> Any:
    return Field(
        default_factory=factory, validation_alias=f"BATON_AUDIT_{name.upper()}", description=description
    )


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATON_", extra="ignore", env_file=None, populate_by_name=True
    )

    service_name: str = "audit"

    # Ingestion: one durable pull consumer ``audit-<stream>`` per producing stream.
    stream_prefix: str = _env(
        "stream_prefix", "BATON_", "Streams consumed: those whose name starts with this."
    )
    excluded_streams: list[str] = _env_factory(
        "excluded_streams",
        lambda: ["BATON_AUDIT"],
        "Streams never consumed (JSON list); the audit's own by default.",
    )
    discovery_interval_seconds: float = _env(
        "discovery_interval_seconds", 10.0, "How often new producing streams are looked for.", gt=0
    )
    fetch_batch: int = _env(
        "fetch_batch", 200, "Messages fetched (and appended in one transaction) at once.", ge=1, le=5000
    )
    fetch_timeout_seconds: float = _env("fetch_timeout_seconds", 1.0, "Longest wait of one fetch.", gt=0)
    ack_wait_seconds: float = _env(
        "ack_wait_seconds", 30.0, "Redelivery delay of a message whose consumer died before acking.", gt=0
    )
    raw_fallback_after_deliveries: int = _env(
        "raw_fallback_after_deliveries",
        10,
        "A readable message still not appended after this many deliveries is stored raw and flagged.",
        ge=2,
    )
    max_payload_bytes: int = _env(
        "max_payload_bytes",
        64 * 1024,
        "Largest payload kept in an entry (canonical JSON); larger ones keep size, digest and a preview.",
        ge=1024,
        le=4 * 1024 * 1024,
    )

    # Gap healing and the per-producer reconciliation report.
    gap_grace_seconds: float = _env(
        "gap_grace_seconds",
        5.0,
        "How long a gap in a producer's sequence may stay open before a replay.",
        ge=0,
    )
    gap_check_interval_seconds: float = _env(
        "gap_check_interval_seconds", 1.0, "How often gaps are checked.", gt=0
    )
    replay_timeout_seconds: float = _env(
        "replay_timeout_seconds", 5.0, "Wait for a relay's replay answer.", gt=0
    )
    replay_retry_seconds: float = _env(
        "replay_retry_seconds", 10.0, "Delay before asking again for a gap a replay did not close.", ge=0
    )
    replay_max_range: int = _env(
        "replay_max_range", 500, "Most sequences asked for in one replay.", ge=1, le=10_000
    )
    reconcile_interval_seconds: float = _env(
        "reconcile_interval_seconds", 60.0, "How often producers are reconciled and the report logged.", gt=0
    )

    # Checkpoints: every N entries or T seconds per chain, whichever comes first.
    checkpoint_every_entries: int = _env(
        "checkpoint_every_entries", 1000, "A chain is checkpointed after this many new entries...", ge=1
    )
    checkpoint_every_seconds: float = _env(
        "checkpoint_every_seconds", 60.0, "...or this long after its last checkpoint, if it grew.", gt=0
    )
    checkpoint_check_interval_seconds: float = _env(
        "checkpoint_check_interval_seconds", 1.0, "How often chains are checked for a due checkpoint.", gt=0
    )
    signing_key: SecretStr | None = _env(
        "signing_key",
        None,
        "Ed25519 private key (base64url 32-byte seed) signing checkpoints; unset: derived from BATON_SECRET_KEY.",
    )
    previous_public_keys: list[str] = _env_factory(
        "previous_public_keys",
        list,
        "Retired public keys (base64url, JSON list) old checkpoints still verify with.",
    )

    # Retention.
    retention_months: int = _env(
        "retention_months",
        0,
        "Whole months of entries kept; older month partitions are dropped. 0: keep all.",
        ge=0,
    )
    maintenance_interval_seconds: float = _env(
        "maintenance_interval_seconds",
        3600.0,
        "How often partitions are prepared and retention applied.",
        gt=0,
    )
    verify_interval_seconds: float = _env(
        "verify_interval_seconds",
        3600.0,
        "How often the worker verifies every chain and exports the outcome as metrics. 0: never.",
        ge=0,
    )

    # Reading.
    audit_reads: bool = _env("audit_reads", True, "Record every read of the log as an entry.")
    max_query_days: int = _env("max_query_days", 400, "Widest time range a query may ask for.", ge=1)
    query_timeout_seconds: float = _env(
        "query_timeout_seconds",
        10.0,
        "Statement timeout of a query (a broader one is refused with 400).",
        gt=0,
    )


# The components take the service settings; the name says which part they read.
AuditSettings = Settings
