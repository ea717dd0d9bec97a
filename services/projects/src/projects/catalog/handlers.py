"""``definition.published`` (``WorkflowDefinitionPublished``) → the catalog of known workflow ids.

Consumed by the ``projects-workflows`` consumer next to ``workflow.completed``. Applying an announcement
twice, or an older version after a newer one, changes nothing.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from projects.catalog import service
from shared.events.workflows import WorkflowDefinitionPublished
from shared.messaging import Envelope, PoisonMessage

__all__ = ["DEFINITION_PUBLISHED_SUBJECT", "on_definition_published"]

DEFINITION_PUBLISHED_SUBJECT = WorkflowDefinitionPublished.event_subject


async def on_definition_published(session: AsyncSession, envelope: Envelope) -> None:
    """Record the definition, keeping the highest version. Bound to the subject, so an unknown version of
    the event is dead-lettered (``parse_data`` refuses it) instead of being acknowledged unread."""
    event = envelope.parse_data(WorkflowDefinitionPublished)
    if envelope.tenant is not None:
        # Definitions belong to the platform; one claimed by a tenant is not what workflows publishes.
        raise PoisonMessage("a workflow definition announcement must not carry a tenant")
    await service.record_definition(session, event.definition_id, event.version, event.name)
