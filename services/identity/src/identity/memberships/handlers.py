"""Consumer of the projects service's client events (durable ``identity-clients`` on ``BATON_PROJECTS``).

Identity only needs to know which clients exist: memberships and agents can be created for live clients
only, and a deleted client's memberships are dropped and its agents taken out of service (each with its
own event and not-before stamp). Deletion leaves a tombstone, so a reordered ``client.created`` arriving
after ``client.deleted`` does not resurrect the client.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from identity.agents.repository import AgentRepository
from identity.agents.service import disable_agent
from identity.memberships.repository import KnownClientRepository, MembershipRepository
from identity.memberships.service import revoke_membership
from identity.outbox import SERVICE_ACTOR
from shared.events.projects import ClientCreated, ClientDeleted
from shared.messaging.consumer import Handler, typed_handler

__all__ = ["CLIENT_SUBJECTS", "CONSUMER", "client_handlers", "on_client_created", "on_client_deleted"]

CONSUMER = "identity-clients"
CLIENT_SUBJECTS = ("baton.projects.client.created", "baton.projects.client.deleted")


async def on_client_created(session: AsyncSession, event: ClientCreated) -> None:
    await KnownClientRepository(session).learn(event.client_id)


async def on_client_deleted(session: AsyncSession, event: ClientDeleted) -> None:
    await KnownClientRepository(session).tombstone(event.client_id)
    for membership in await MembershipRepository(session).of_client(event.client_id):
        await revoke_membership(session, membership, actor=SERVICE_ACTOR, reason="client_deleted")
    for agent in await AgentRepository(session).live_of_client(event.client_id):
        await disable_agent(session, agent, actor=SERVICE_ACTOR, reason="client_deleted")


def client_handlers() -> Mapping[str, Handler]:
    return {
        ClientCreated.event_type: typed_handler(ClientCreated, on_client_created),
        ClientDeleted.event_type: typed_handler(ClientDeleted, on_client_deleted),
    }
