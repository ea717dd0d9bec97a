"""Building API views from stored rows and the engine's state."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from workflows.engine.operations import Engine
from workflows.engine.state import Decision, Task
from workflows.instances.models import DecisionRow, InstanceRow, TaskRow
from workflows.instances.schemas import DecisionRead, InstanceRead, StepRead, StoryRead, TaskRead

__all__ = ["decision_read", "decision_row_read", "instance_read", "task_read", "task_row_read"]

HISTORY_LIMIT = 200


def task_read(
    task: Task, *, instance_id: uuid.UUID, project_id: uuid.UUID, client_id: uuid.UUID, now: datetime
) -> TaskRead:
    data = task.model_dump()
    data["state"] = task.effective_state(now).value
    if data["state"] == "ready":
        data["claimed_by"] = None
        data["lease_expires_at"] = None
    data.update(instance_id=instance_id, project_id=project_id, client_id=client_id)
    return TaskRead.model_validate(data)


def task_row_read(row: TaskRow, now: datetime) -> TaskRead:
    return task_read(
        Task.model_validate(row.data),
        instance_id=row.instance_id,
        project_id=row.project_id,
        client_id=row.client_id,
        now=now,
    )


def decision_read(
    decision: Decision, *, instance_id: uuid.UUID, project_id: uuid.UUID, client_id: uuid.UUID
) -> DecisionRead:
    data: dict[str, Any] = decision.model_dump()
    data.update(instance_id=instance_id, project_id=project_id, client_id=client_id)
    return DecisionRead.model_validate(data)


def decision_row_read(row: DecisionRow) -> DecisionRead:
    return decision_read(
        Decision.model_validate(row.data),
        instance_id=row.instance_id,
        project_id=row.project_id,
        client_id=row.client_id,
    )


def instance_read(row: InstanceRow, engine: Engine) -> InstanceRead:
    st = engine.state
    ids = {"instance_id": row.id, "project_id": row.project_id, "client_id": row.client_id}
    steps: list[StepRead] = []
    if st.sequence is not None:
        for step in engine.seq.steps:
            steps.append(
                StepRead(
                    id=step.id,
                    name=step.name,
                    kind=step.kind.value,
                    phase=step.phase,
                    roles=list(step.roles),
                    condition=step.condition or step.phase_condition,
                    optional=step.optional,
                    produces_kind=step.produces_document_kind,
                    state=st.step_states.get(step.id, "not_reached"),
                    visits=st.visits.get(step.id, 0),
                )
            )
    history = [h.model_dump(mode="json") for h in st.history[-HISTORY_LIMIT:]]
    return InstanceRead(
        id=row.id,
        project_id=row.project_id,
        client_id=row.client_id,
        project_name=row.project_name,
        definition_id=row.definition_id,
        definition_version=row.definition_version,
        sequence=st.sequence,
        status=row.status,
        outcome=row.outcome,
        current_phase=engine.current_phase(),
        current_step=engine.current_step(),
        version=row.version,
        steps=steps,
        open_tasks=[task_read(t, **ids, now=engine.now) for t in engine.open_tasks()],
        open_decisions=[decision_read(d, **ids) for d in st.decisions.values() if d.state == "open"],
        stories=[
            StoryRead(key=s.key, epic=s.epic, number=s.number, status=s.status, document_id=s.document_id)
            for s in st.stories
        ],
        history=history,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )
