"""HTTP shapes of agents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from shared.http import WHITE_SPACE

__all__ = [
    "AGENT_SCOPES",
    "AgentCreate",
    "AgentRead",
    "AgentUpdate",
    "AgentWithSecret",
    "BmadRole",
    "Scope",
]

Scope = Literal[
    "projects:read",
    "projects:write",
    "documents:read",
    "documents:write",
    "workflows:read",
    "workflows:write",
    "audit:read",
    "search",
]
AGENT_SCOPES: frozenset[str] = frozenset(Scope.__args__)  # type: ignore[attr-defined]
BmadRole = Literal["analyst", "pm", "architect", "po", "sm", "dev", "qa", "ux-expert"]
# Not blank once stripped, and no NUL (Postgres text cannot hold it): both in the documented pattern.
AgentName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=f"^[^\x00]*[^\x00{WHITE_SPACE}][^\x00]*$"
    ),
]


def _distinct_sorted(values: list[str]) -> list[str]:
    return sorted(set(values))


def _distinct_ids(values: list[uuid.UUID] | None) -> list[uuid.UUID] | None:
    return None if values is None else sorted(set(values))


Scopes = Annotated[list[Scope], Field(min_length=1, max_length=8), AfterValidator(_distinct_sorted)]
BmadRoles = Annotated[list[BmadRole], Field(max_length=8), AfterValidator(_distinct_sorted)]
# None = every project of the client; a list narrows the agent to those projects.
ProjectIds = Annotated[list[uuid.UUID] | None, Field(max_length=200), AfterValidator(_distinct_ids)]


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: AgentName
    scopes: Scopes
    project_ids: ProjectIds = None
    bmad_roles: BmadRoles = Field(default_factory=list)


class AgentUpdate(BaseModel):
    """Only the fields sent change; ``"project_ids": null`` widens the agent to every project."""

    model_config = ConfigDict(extra="forbid")

    name: AgentName | None = None
    scopes: Scopes | None = None
    project_ids: ProjectIds = None
    bmad_roles: BmadRoles | None = None
    status: Literal["active", "disabled"] | None = None


class AgentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    scopes: list[str]
    project_ids: list[uuid.UUID] | None
    bmad_roles: list[str]
    status: Literal["active", "disabled"]
    created_at: datetime
    updated_at: datetime
    version: int


class AgentWithSecret(AgentRead):
    """Returned once, on creation and on rotation: the secret is not stored and cannot be shown again."""

    client_secret: str
