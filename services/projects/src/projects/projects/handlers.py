"""Events this service consumes: a finished workflow completes its project.

The workflows service publishes ``baton.workflows.workflow.completed.v1`` (``WorkflowCompleted``) with the
project's id and client; the envelope's tenant is that client. Applying it twice changes nothing: the
consumer's inbox skips a redelivered event, and a project that is already completed (or archived, or
deleted) is left alone when another completion for it arrives. Either outcome (``completed`` or
``early_exit`` through a router branch that ends the workflow) completes the project.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projects.catalog.handlers import DEFINITION_PUBLISHED_SUBJECT, on_definition_published
from projects.projects import service
from shared.events.workflows import WorkflowCompleted
from shared.messaging import ConsumerRunner, Envelope, PoisonMessage, stream_name

__all__ = [
    "WORKFLOW_COMPLETED_SUBJECT",
    "WORKFLOW_CONSUMER",
    "on_workflow_completed",
    "workflow_events_consumer",
]

WORKFLOW_COMPLETED_SUBJECT = WorkflowCompleted.event_subject
WORKFLOW_CONSUMER = "projects-workflows"


async def on_workflow_completed(session: AsyncSession, envelope: Envelope) -> None:
    """Mark the project ``completed`` (emitting ``project.status_changed``), once.

    Bound to the subject, so an unknown version of the event is dead-lettered (``parse_data`` refuses
    it) instead of being acknowledged unread.
    """
    event = envelope.parse_data(WorkflowCompleted)
    if envelope.tenant is not None and envelope.tenant != str(event.client_id):
        raise PoisonMessage("the envelope's tenant is not the event's client")
    try:
        await service.complete_from_workflow(
            session, event.project_id, tenant=str(event.client_id), actor=envelope.actor
        )
    except ValueError as exc:
        # A tenant that does not own the project: retrying cannot help, and applying it would cross tenants.
        raise PoisonMessage(str(exc)) from exc


def workflow_events_consumer(
    session_factory: async_sessionmaker[AsyncSession], nats_url: str, **options: Any
) -> ConsumerRunner:
    """The durable consumer ``projects-workflows`` on ``BATON_WORKFLOWS`` (every version of each event):
    ``workflow.completed`` and ``definition.published`` (the catalog of known workflow ids)."""
    return ConsumerRunner(
        session_factory,
        nats_url,
        consumer=WORKFLOW_CONSUMER,
        stream=stream_name("workflows"),
        subjects=[WORKFLOW_COMPLETED_SUBJECT, DEFINITION_PUBLISHED_SUBJECT],
        handlers={
            WORKFLOW_COMPLETED_SUBJECT: on_workflow_completed,
            DEFINITION_PUBLISHED_SUBJECT: on_definition_published,
        },
        **options,
    )
