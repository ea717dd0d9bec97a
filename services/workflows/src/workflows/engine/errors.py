"""Domain errors of the engine; rendered once as problem+json by ``shared.errors``."""

from __future__ import annotations

from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed

__all__ = [
    "DecisionClosed",
    "DecisionNotFound",
    "DocumentAlreadyUsed",
    "DocumentKindMismatch",
    "DocumentNotIndexed",
    "DocumentRequired",
    "InvalidAnswer",
    "RoleNotAllowed",
    "TaskClaimedByOther",
    "TaskClosed",
    "TaskNotFound",
    "TaskNotOptional",
    "TaskNotReady",
    "WorkflowCompleted",
]


class TaskNotFound(NotFound):
    code = "task_not_found"


class DecisionNotFound(NotFound):
    code = "decision_not_found"


class TaskNotReady(Conflict):
    code = "task_not_ready"


class TaskClaimedByOther(Conflict):
    code = "task_already_claimed"


class TaskClosed(Conflict):
    code = "task_closed"


class TaskNotOptional(Conflict):
    code = "task_not_optional"


class DecisionClosed(Conflict):
    code = "decision_closed"


class WorkflowCompleted(Conflict):
    code = "workflow_completed"


class DocumentNotIndexed(Conflict):
    code = "document_not_indexed"


class DocumentAlreadyUsed(Conflict):
    code = "document_already_used"


class RoleNotAllowed(Forbidden):
    code = "role_not_allowed"


class DocumentRequired(ValidationFailed):
    code = "document_required"


class DocumentKindMismatch(ValidationFailed):
    code = "document_kind_mismatch"


class InvalidAnswer(ValidationFailed):
    code = "invalid_answer"
