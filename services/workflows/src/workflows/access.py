"""Who may read and who may act on a project's workflow, from the token alone.

- People: ``product_owner`` and ``member`` of the project's client act (claim, complete, answer);
  ``viewer`` and ``auditor`` read (as they read the client's projects and documents). Platform admins do
  anything.
- Agents: belong to one client, maybe narrowed to some projects; ``workflows:read`` reads,
  ``workflows:write`` acts. Which tasks an agent may claim also depends on its ``bmad_roles`` (the engine
  checks that).
- A project the caller cannot see at all is a 404, exactly like a missing one; a caller who can see it but
  lacks the right gets 403 (``insufficient_scope`` for agents, ``insufficient_role`` for members), as in
  every service (``shared.auth.ensure_client_role``). Listing tasks and reading definitions need one of the
  two scopes too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from shared.auth import Principal, insufficient_scope, project_refusal
from workflows.definitions.vocabulary import canonical_role
from workflows.engine.state import Actor

__all__ = [
    "ACT_ROLES",
    "READ_ROLES",
    "READ_SCOPE",
    "SCOPES",
    "WRITE_SCOPE",
    "actor_of",
    "can_act",
    "can_read",
    "ensure_act",
    "ensure_read",
    "readable_clients",
]

READ_SCOPE = "workflows:read"
WRITE_SCOPE = "workflows:write"
READ_ROLES = frozenset({"product_owner", "member", "viewer", "auditor"})
SCOPES = (READ_SCOPE, WRITE_SCOPE)
ACT_ROLES = frozenset({"product_owner", "member"})


def can_read(principal: Principal, client_id: uuid.UUID | str, project_id: uuid.UUID | str) -> bool:
    client, project = str(client_id), str(project_id)
    if principal.is_admin:
        return True
    if principal.kind == "agent":
        return (
            principal.client_id == client
            and (principal.has_scope(READ_SCOPE) or principal.has_scope(WRITE_SCOPE))
            and principal.can_access_project(client, project)
        )
    return principal.role_in(client) in READ_ROLES


def ensure_read(
    principal: Principal,
    client_id: uuid.UUID | str,
    project_id: uuid.UUID | str,
    *,
    not_found: Callable[[], Exception],
) -> None:
    """404 if the caller cannot see the project; 403 if it can but may not read its workflow."""
    if not can_read(principal, client_id, project_id):
        raise project_refusal(
            principal, str(client_id), str(project_id), hidden=not_found(), scope=READ_SCOPE,
            doing="reading workflows",
        )  # fmt: skip


def ensure_act(
    principal: Principal,
    client_id: uuid.UUID | str,
    project_id: uuid.UUID | str,
    *,
    not_found: Callable[[], Exception],
) -> None:
    """404 if the caller cannot see the project; 403 if it may not act on it."""
    if not can_act(principal, client_id, project_id):
        raise project_refusal(
            principal, str(client_id), str(project_id), hidden=not_found(), scope=WRITE_SCOPE,
            doing="acting on workflows",
        )  # fmt: skip


def can_act(principal: Principal, client_id: uuid.UUID | str, project_id: uuid.UUID | str) -> bool:
    if principal.is_admin:
        return True
    if not can_read(principal, client_id, project_id):
        return False
    if principal.kind == "agent":
        return principal.has_scope(WRITE_SCOPE)
    return principal.role_in(str(client_id)) in ACT_ROLES


def readable_clients(principal: Principal) -> list[str] | None:
    """Clients whose workflows the caller may list; None means every client (admins). An agent without
    either workflows scope is refused (403), as it would be on any one project."""
    if principal.is_admin:
        return None
    if principal.kind == "agent":
        if not (principal.has_scope(READ_SCOPE) or principal.has_scope(WRITE_SCOPE)):
            raise insufficient_scope((READ_SCOPE,), "The token does not allow reading workflows")
        return [principal.client_id] if principal.client_id else []
    return [c for c, role in principal.memberships.items() if role in READ_ROLES]


def actor_of(principal: Principal) -> Actor:
    """The engine's view of the caller; agent roles are mapped to canonical BMAD roles (``tea`` → qa)."""
    roles = frozenset(r for r in (canonical_role(x) for x in principal.bmad_roles) if r is not None)
    kind = "agent" if principal.kind == "agent" else "user"
    return Actor(subject=principal.subject, kind=kind, roles=roles, name=principal.display_name)
