"""Settings of the projects service: the shared ``BATON_*`` ones, schema and service name ``projects``, plus
``BATON_PROJECTS_*``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import BaseServiceSettings

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATON_", extra="ignore", env_file=None, populate_by_name=True
    )

    service_name: str = "projects"
    # A project naming a workflow this service has not heard of yet waits this long for its announcement.
    workflow_wait_seconds: float = Field(
        2.0,
        validation_alias="BATON_PROJECTS_WORKFLOW_WAIT_SECONDS",
        description="How long a new project naming a workflow definition not announced yet waits for its "
        "announcement (then 422 unknown_workflow)",
        ge=0,
        le=30,
    )
