"""Domain errors of clients and projects, rendered once as problem+json by ``shared.errors``.

Not-found details are fixed strings without ids: a resource the caller may not see must produce the
same body as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.errors import Conflict, NotFound, ValidationFailed

__all__ = [
    "ClientArchived",
    "ClientNotFound",
    "ClientSlugTaken",
    "EmptyUpdate",
    "FieldsNotWritable",
    "InvalidStatusTransition",
    "ProjectNameTaken",
    "ProjectNotFound",
    "UnknownWorkflow",
]


class ClientNotFound(NotFound):
    code = "client_not_found"

    def __init__(self) -> None:
        super().__init__("Client not found")


class ProjectNotFound(NotFound):
    code = "project_not_found"

    def __init__(self) -> None:
        super().__init__("Project not found")


class ClientSlugTaken(Conflict):
    code = "client_slug_taken"

    def __init__(self) -> None:
        super().__init__("Another client already uses this slug")


class ProjectNameTaken(Conflict):
    code = "project_name_taken"

    def __init__(self) -> None:
        super().__init__("This client already has a project with this name")


class ClientArchived(Conflict):
    code = "client_archived"

    def __init__(self) -> None:
        super().__init__("The client is archived; restore it before adding projects")


class InvalidStatusTransition(Conflict):
    code = "invalid_status_transition"

    def __init__(self, current: str, target: str) -> None:
        super().__init__(
            f"A project cannot go from '{current}' to '{target}'", current=current, target=target
        )


class FieldsNotWritable(ValidationFailed):
    """The body names fields this caller may not set: rejected as a whole, never silently dropped."""

    code = "fields_not_writable"

    def __init__(self, fields: Iterable[str], reason: str = "You may not set these fields") -> None:
        names = sorted(fields)
        errors: list[dict[str, Any]] = [
            {"loc": ["body", name], "msg": reason, "type": "not_writable"} for name in names
        ]
        super().__init__(f"{reason}: {', '.join(names)}", errors=errors)


class EmptyUpdate(ValidationFailed):
    code = "empty_update"

    def __init__(self) -> None:
        super().__init__("The request changes nothing; send at least one field")


class UnknownWorkflow(ValidationFailed):
    """``type`` or ``workflow_id`` names a workflow the workflows service never announced: no workflow
    would ever start for the project, so it is refused instead of created."""

    code = "unknown_workflow"

    def __init__(self, refs: dict[str, str]) -> None:
        fields = sorted(refs)
        named = ", ".join(f"{name} '{refs[name]}'" for name in fields)
        hint = "GET /v1/workflow-definitions lists the workflow definitions (agents: with a workflows scope)"
        errors: list[dict[str, Any]] = [
            {
                "loc": ["body", name],
                "msg": f"No workflow definition '{refs[name]}'; {hint}",
                "type": "unknown_workflow",
            }
            for name in fields
        ]
        super().__init__(f"No workflow definition for {named}; {hint}", errors=errors)
