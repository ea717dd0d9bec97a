"""Engine effects → the workflow events other services read (``shared.events.workflows``)."""

from __future__ import annotations

import uuid
from typing import Any

from shared.events.catalog import Event
from shared.events.workflows import (
    WorkflowCompleted,
    WorkflowDecisionMade,
    WorkflowDecisionRequested,
    WorkflowStarted,
    WorkflowStoryStatusChanged,
    WorkflowTaskClaimed,
    WorkflowTaskCompleted,
    WorkflowTaskFailed,
    WorkflowTaskReady,
    WorkflowTaskSkipped,
)
from workflows.engine.state import Effect
from workflows.instances.models import InstanceRow

__all__ = ["event_for"]


def _task_fields(task: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_id": task["id"],
        "step_id": task["step_id"],
        "name": task["name"][:300],
        "roles": task["roles"],
        "produces_kind": task.get("produces_kind"),
        "epic": task.get("epic"),
        "story": task.get("story"),
        "attempt": task.get("attempt", 1),
    }


def event_for(effect: Effect, row: InstanceRow) -> tuple[Event, str] | None:
    """The event for one effect and the id of the resource it is about; None for internal effects."""
    base: dict[str, Any] = {
        "instance_id": row.id,
        "project_id": row.project_id,
        "client_id": row.client_id,
        "version": row.version,
    }
    data = effect.data
    task: dict[str, Any] = data.get("task") or {}
    decision: dict[str, Any] = data.get("decision") or {}
    match effect.type:
        case "started":
            return (
                WorkflowStarted(
                    **base, definition_id=row.definition_id, definition_version=row.definition_version
                ),
                str(row.id),
            )
        case "task_ready":
            return (
                WorkflowTaskReady(
                    **base, **_task_fields(task), optional=task["optional"], reason=data.get("reason")
                ),
                task["id"],
            )
        case "task_claimed":
            return (
                WorkflowTaskClaimed(
                    **base,
                    **_task_fields(task),
                    claimed_by=task["claimed_by"],
                    lease_expires_at=task["lease_expires_at"],
                ),
                task["id"],
            )
        case "task_completed":
            doc = data.get("document_id")
            return (
                WorkflowTaskCompleted(
                    **base,
                    **_task_fields(task),
                    completed_by=task.get("completed_by") or "workflows",
                    document_id=uuid.UUID(doc) if doc else None,
                ),
                task["id"],
            )
        case "task_skipped":
            return (
                WorkflowTaskSkipped(
                    **base,
                    **_task_fields(task),
                    skipped_by=task.get("completed_by") or "",
                    reason=data.get("reason"),
                ),
                task["id"],
            )
        case "task_failed":
            return (
                WorkflowTaskFailed(
                    **base,
                    **_task_fields(task),
                    failed_by=task.get("completed_by") or "",
                    reason=data.get("reason"),
                ),
                task["id"],
            )
        case "decision_requested":
            return (
                WorkflowDecisionRequested(
                    **base,
                    decision_id=decision["id"],
                    kind=decision["kind"],
                    token=decision["token"],
                    question=decision["question"],
                    options=decision["options"],
                    step_id=decision.get("step_id"),
                    roles=decision.get("roles", []),
                    epic=decision.get("epic"),
                    story=decision.get("story"),
                ),
                decision["id"],
            )
        case "decision_made":
            return (
                WorkflowDecisionMade(
                    **base,
                    decision_id=decision["id"],
                    kind=decision["kind"],
                    token=decision["token"],
                    answer=decision["answer"],
                    answered_by=decision["answered_by"],
                    step_id=decision.get("step_id"),
                ),
                decision["id"],
            )
        case "story_status_changed":
            return (
                WorkflowStoryStatusChanged(
                    **base,
                    story_key=data["story_key"],
                    epic=data["epic"],
                    story=data["story"],
                    from_status=data.get("from_status"),
                    to_status=data["to_status"],
                ),
                str(row.id),
            )
        case "completed":
            return (
                WorkflowCompleted(
                    **base, definition_id=row.definition_id, outcome=data["outcome"], route=data.get("route")
                ),
                str(row.id),
            )
    return None
