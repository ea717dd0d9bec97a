"""Settings of the workflows service: the shared ``BATON_*`` ones plus ``BATON_WORKFLOWS_*``."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field

from shared.settings import BaseServiceSettings

__all__ = ["Settings"]


def _own(default: Any, name: str, description: str, **kwargs: Any) -> Any:
    """A ``BATON_WORKFLOWS_<NAME>`` setting (also settable by field name in code and tests)."""
    return Field(
        default,
        validation_alias=AliasChoices(f"BATON_WORKFLOWS_{name.upper()}", name),
        description=description,
        **kwargs,
    )


class Settings(BaseServiceSettings):
    service_name: str = "workflows"
    lease_seconds: int = _own(
        900, "lease_seconds", "How long a claim holds a task when the claimer names no lease", ge=1, le=86_400
    )
    max_lease_seconds: int = _own(
        14_400, "max_lease_seconds", "The longest lease a claimer may ask for", ge=1, le=604_800
    )
    lease_sweep_seconds: float = _own(
        15.0, "lease_sweep_seconds", "How often the worker returns expired claims to ready", gt=0, le=3600
    )
    load_builtin: bool = _own(
        True, "load_builtin", "Store the built-in BMAD workflow definitions at startup (idempotent)"
    )
