"""Agent rules: product owners of a client (and admins) manage its agents; secrets are shown once.

Every change that narrows what an agent's tokens claim (scopes, projects, BMAD roles, status, a new
secret) stamps the agent's not-before, so tokens minted before are refused by the gateway.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from identity.agents.models import Agent
from identity.agents.repository import AgentRepository
from identity.agents.schemas import AgentCreate, AgentUpdate
from identity.memberships.repository import ClientNotFound, KnownClientRepository
from identity.notbefore.stamps import next_stamp
from identity.outbox import actor_of, record
from shared.auth import Principal, ensure_client_role
from shared.events.identity import AgentCreated, AgentDisabled, AgentSecretRotated, AgentUpdated
from shared.http import check_if_match
from shared.messaging.envelope import Actor

__all__ = [
    "SECRET_PREFIX",
    "create_agent",
    "delete_agent",
    "disable_agent",
    "get_agent",
    "hash_secret",
    "list_agents",
    "rotate_secret",
    "update_agent",
]

SECRET_PREFIX = "bsk_"
MANAGERS = frozenset({"product_owner"})


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def _manageable_client(session: AsyncSession, client_id: uuid.UUID, principal: Principal) -> None:
    ensure_client_role(principal, str(client_id), MANAGERS)
    if await KnownClientRepository(session).live(client_id) is None:
        raise ClientNotFound()


async def create_agent(
    session: AsyncSession, client_id: uuid.UUID, data: AgentCreate, *, principal: Principal
) -> tuple[Agent, str]:
    await _manageable_client(session, client_id, principal)
    secret = _new_secret()
    agent = Agent(
        client_id=client_id,
        name=data.name,
        scopes=list(data.scopes),
        project_ids=data.project_ids,
        bmad_roles=list(data.bmad_roles),
        secret_hash=hash_secret(secret),
        status="active",
        created_by=uuid.UUID(principal.subject) if principal.kind == "user" else None,
    )
    await AgentRepository(session).add(agent)
    event = AgentCreated(
        agent_id=agent.id,
        client_id=client_id,
        name=agent.name,
        scopes=agent.scopes,
        project_ids=agent.project_ids,
        bmad_roles=agent.bmad_roles,
    )
    await record(session, event, actor=actor_of(principal), tenant=client_id, resource_id=agent.id)
    return agent, secret


async def list_agents(
    session: AsyncSession, client_id: uuid.UUID, *, principal: Principal, limit: int, after: uuid.UUID | None
) -> Sequence[Agent]:
    await _manageable_client(session, client_id, principal)
    return await AgentRepository(session).page(client_id, limit=limit, after=after)


async def get_agent(
    session: AsyncSession, client_id: uuid.UUID, agent_id: uuid.UUID, *, principal: Principal
) -> Agent:
    await _manageable_client(session, client_id, principal)
    return await AgentRepository(session).in_client(client_id, agent_id)


async def update_agent(
    session: AsyncSession,
    client_id: uuid.UUID,
    agent_id: uuid.UUID,
    data: AgentUpdate,
    *,
    principal: Principal,
    if_match: str | None,
) -> Agent:
    await _manageable_client(session, client_id, principal)
    agent = await AgentRepository(session).in_client(client_id, agent_id, for_update=True)
    check_if_match(if_match, agent.version)
    changed: list[str] = []
    for name in ("name", "scopes", "bmad_roles"):
        value = getattr(data, name)
        if value is not None and value != getattr(agent, name):
            setattr(agent, name, list(value) if isinstance(value, list) else value)
            changed.append(name)
    if "project_ids" in data.model_fields_set and data.project_ids != agent.project_ids:
        agent.project_ids = data.project_ids
        changed.append("project_ids")
    disabling = data.status == "disabled" and agent.status == "active"
    if data.status is not None and data.status != agent.status:
        agent.status = data.status
        changed.append("status")
    if not changed:
        return agent
    agent.version += 1
    actor = actor_of(principal)
    rights_changed = bool(set(changed) - {"name"})
    stamp = None
    if rights_changed:
        agent.tokens_valid_after = stamp = next_stamp(agent.tokens_valid_after)
    await session.flush()
    if disabling:
        await record(
            session,
            AgentDisabled(agent_id=agent.id, client_id=client_id, not_before=agent.tokens_valid_after),
            actor=actor,
            tenant=client_id,
            resource_id=agent.id,
        )
    other = [c for c in changed if c != "status" or not disabling]
    if other:
        event = AgentUpdated(agent_id=agent.id, client_id=client_id, changed=other, not_before=stamp)
        await record(session, event, actor=actor, tenant=client_id, resource_id=agent.id)
    return agent


async def rotate_secret(
    session: AsyncSession, client_id: uuid.UUID, agent_id: uuid.UUID, *, principal: Principal
) -> tuple[Agent, str]:
    await _manageable_client(session, client_id, principal)
    agent = await AgentRepository(session).in_client(client_id, agent_id, for_update=True)
    secret = _new_secret()
    agent.secret_hash = hash_secret(secret)
    agent.tokens_valid_after = next_stamp(agent.tokens_valid_after)
    agent.version += 1
    await session.flush()
    event = AgentSecretRotated(agent_id=agent.id, client_id=client_id, not_before=agent.tokens_valid_after)
    await record(session, event, actor=actor_of(principal), tenant=client_id, resource_id=agent.id)
    return agent, secret


async def delete_agent(
    session: AsyncSession, client_id: uuid.UUID, agent_id: uuid.UUID, *, principal: Principal
) -> None:
    await _manageable_client(session, client_id, principal)
    agent = await AgentRepository(session).in_client(client_id, agent_id, for_update=True)
    await disable_agent(session, agent, actor=actor_of(principal), reason="deleted")


async def disable_agent(session: AsyncSession, agent: Agent, *, actor: Actor, reason: str) -> None:
    """Take an agent out of service (``deleted`` or ``client_deleted`` hide it for good)."""
    agent.status = "disabled" if reason == "disabled" else "deleted"
    agent.tokens_valid_after = next_stamp(agent.tokens_valid_after)
    agent.version += 1
    await session.flush()
    event = AgentDisabled(
        agent_id=agent.id,
        client_id=agent.client_id,
        not_before=agent.tokens_valid_after,
        reason=reason,  # type: ignore[arg-type]
    )
    await record(session, event, actor=actor, tenant=agent.client_id, resource_id=agent.id)
