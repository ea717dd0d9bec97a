"""Who may read and write which project's documents, from the token alone.

- Platform admins: everything.
- Users, by their membership role in the project's client: ``product_owner`` and ``member`` write,
  ``viewer`` and ``auditor`` read.
- Agents, within their own client (and only the ``project_ids`` they are narrowed to, if any), by scope:
  ``documents:write`` writes, ``documents:read`` reads, ``search`` (or ``documents:read``) searches.

A caller who cannot see a project at all (not a member of its client, not an agent of it, an agent
narrowed to other projects) gets 404 for it and its documents, exactly like a missing one. A caller who can
see it but lacks the right gets 403: ``insufficient_scope`` for an agent without the scope (RFC 6750),
``insufficient_role`` for a member whose role only reads. The same rule as every service's
(``shared.auth.ensure_client_role``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from shared.auth import Principal, project_refusal
from shared.errors import NotFound

__all__ = [
    "READ_ROLES",
    "WRITE_ROLES",
    "ReadScope",
    "can_read",
    "can_write",
    "ensure_read",
    "ensure_write",
    "readable_scope",
]

READ_ROLES = frozenset({"product_owner", "member", "viewer", "auditor"})
WRITE_ROLES = frozenset({"product_owner", "member"})
_SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset({"documents:read", "documents:write"}),
    "write": frozenset({"documents:write"}),
    "search": frozenset({"search", "documents:read"}),
}
Need = Literal["read", "write", "search"]


def _allows(principal: Principal, client_id: uuid.UUID, project_id: uuid.UUID | None, need: Need) -> bool:
    if principal.is_admin:
        return True
    client = str(client_id)
    role = principal.role_in(client)
    if role is not None:
        return role in (WRITE_ROLES if need == "write" else READ_ROLES)
    if principal.kind != "agent" or principal.client_id != client:
        return False
    if principal.project_ids is not None and (
        project_id is None or str(project_id) not in principal.project_ids
    ):
        return False
    return bool(_SCOPES[need] & principal.scopes)


def can_read(principal: Principal, client_id: uuid.UUID, project_id: uuid.UUID) -> bool:
    return _allows(principal, client_id, project_id, "read")


def can_write(principal: Principal, client_id: uuid.UUID, project_id: uuid.UUID) -> bool:
    return _allows(principal, client_id, project_id, "write")


# The least scope an agent needs for each kind of access (named in the 403's challenge).
_LEAST_SCOPE: dict[str, str] = {"read": "documents:read", "write": "documents:write", "search": "search"}


def _ensure(
    principal: Principal, client_id: uuid.UUID, project_id: uuid.UUID, what: NotFound, need: Need
) -> None:
    if not _allows(principal, client_id, project_id, need):
        doing = "changing documents" if need == "write" else "reading documents"
        raise project_refusal(
            principal, str(client_id), str(project_id), hidden=what, scope=_LEAST_SCOPE[need], doing=doing
        )


def ensure_read(principal: Principal, client_id: uuid.UUID, project_id: uuid.UUID, what: NotFound) -> None:
    """404 (``what``, naming the resource asked for) if the caller cannot see the project; 403 if it can
    but may not read documents."""
    _ensure(principal, client_id, project_id, what, "read")


def ensure_write(principal: Principal, client_id: uuid.UUID, project_id: uuid.UUID, what: NotFound) -> None:
    """404 (``what``) if the caller cannot see the project; 403 if it can but may not change documents."""
    _ensure(principal, client_id, project_id, what, "write")


@dataclass(frozen=True)
class ReadScope:
    """What a search may look at: every client (admins) or some, and for agents maybe some projects."""

    all_clients: bool
    client_ids: frozenset[uuid.UUID]
    project_ids: frozenset[uuid.UUID] | None  # None: every project of those clients

    @property
    def empty(self) -> bool:
        return not self.all_clients and (not self.client_ids or self.project_ids == frozenset())


def _uuids(values: object) -> set[uuid.UUID]:
    out: set[uuid.UUID] = set()
    for value in values if isinstance(values, set | frozenset | list | tuple) else ():
        try:
            out.add(uuid.UUID(str(value)))
        except ValueError:
            continue
    return out


def readable_scope(principal: Principal) -> ReadScope:
    """The clients (and projects) whose documents ``principal`` may search."""
    if principal.is_admin:
        return ReadScope(True, frozenset(), None)
    clients = _uuids([client for client, role in principal.memberships.items() if role in READ_ROLES])
    agent_reach = (
        principal.kind == "agent"
        and principal.client_id is not None
        and principal.client_id not in principal.memberships
        and bool(_SCOPES["search"] & principal.scopes)
    )
    if agent_reach:
        agent_clients = _uuids([principal.client_id])
        if principal.project_ids is not None:
            # A narrowed agent: only its projects, and no other client besides.
            return ReadScope(False, frozenset(agent_clients), frozenset(_uuids(principal.project_ids)))
        clients |= agent_clients
    return ReadScope(False, frozenset(clients), None)
