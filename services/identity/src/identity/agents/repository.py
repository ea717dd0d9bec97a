"""Queries on agents."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select

from identity.agents.models import Agent
from shared.db import Repository
from shared.errors import NotFound

__all__ = ["AgentNotFound", "AgentRepository"]


class AgentNotFound(NotFound):
    code = "agent_not_found"


class AgentRepository(Repository[Agent]):
    model = Agent
    not_found = AgentNotFound

    async def in_client(
        self, client_id: uuid.UUID, agent_id: uuid.UUID, *, for_update: bool = False
    ) -> Agent:
        """A live (not deleted) agent of ``client_id``; ``AgentNotFound`` otherwise."""
        stmt = select(Agent).where(
            Agent.id == agent_id, Agent.client_id == client_id, Agent.status != "deleted"
        )
        if for_update:
            stmt = stmt.with_for_update()
        agent = (await self.session.execute(stmt)).scalar_one_or_none()
        if agent is None:
            raise AgentNotFound()
        return agent

    async def page(self, client_id: uuid.UUID, *, limit: int, after: uuid.UUID | None) -> Sequence[Agent]:
        stmt = (
            select(Agent)
            .where(Agent.client_id == client_id, Agent.status != "deleted")
            .order_by(Agent.id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(Agent.id > after)
        return (await self.session.execute(stmt)).scalars().all()

    async def live_of_client(self, client_id: uuid.UUID) -> Sequence[Agent]:
        stmt = (
            select(Agent)
            .where(Agent.client_id == client_id, Agent.status != "deleted")
            .order_by(Agent.id)
            .with_for_update()
        )
        return (await self.session.execute(stmt)).scalars().all()
