"""Settings of the projects service: the shared ``BATON_*`` ones, schema and service name ``projects``."""

from __future__ import annotations

from shared.settings import BaseServiceSettings

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    service_name: str = "projects"
