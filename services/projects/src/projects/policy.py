"""Who may read and change clients and projects. Pure functions of the ``Principal``; no I/O.

- Platform admins: everything.
- Users: read a client and its projects with any client role (``product_owner``, ``member``, ``viewer``,
  ``auditor``); ``product_owner`` also creates and changes projects and edits the client's name,
  contact and metadata. Only admins create, archive, restore, re-slug and delete clients.
- Agents act within their own ``client_id`` by scope: ``projects:read`` to read, ``projects:write`` to
  create and change projects (the routers check the scope first). An agent narrowed to ``project_ids``
  sees and changes only those projects and cannot create new ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from shared.auth import CLIENT_ROLES, Principal

__all__ = [
    "PROJECT_WRITER_ROLES",
    "READ_SCOPE",
    "WRITE_SCOPE",
    "can_create_project",
    "can_manage_projects",
    "can_read_client",
    "can_read_project",
    "client_fields_writable",
    "project_fields_writable",
    "readable_client_ids",
    "visible_project_ids",
]

READ_SCOPE = "projects:read"
WRITE_SCOPE = "projects:write"
PROJECT_WRITER_ROLES = frozenset({"product_owner"})
CLIENT_ADMIN_FIELDS = frozenset({"name", "slug", "status", "contact", "metadata"})
CLIENT_OWNER_FIELDS = frozenset({"name", "contact", "metadata"})
PROJECT_MUTABLE_FIELDS = frozenset({"name", "description", "status"})


def _uuids(values: Iterable[str]) -> frozenset[uuid.UUID]:
    out: set[uuid.UUID] = set()
    for value in values:
        try:
            out.add(uuid.UUID(value))
        except (ValueError, AttributeError, TypeError):
            continue  # a malformed id in a token names nothing here
    return frozenset(out)


def readable_client_ids(principal: Principal) -> frozenset[uuid.UUID] | None:
    """Clients whose data the caller may read; None means all (platform admins)."""
    if principal.is_admin:
        return None
    ids = [cid for cid, role in principal.memberships.items() if role in CLIENT_ROLES]
    if principal.kind == "agent" and principal.client_id is not None:
        ids.append(principal.client_id)
    return _uuids(ids)


def visible_project_ids(principal: Principal) -> frozenset[uuid.UUID] | None:
    """The projects an agent is narrowed to; None when not narrowed (users, admins, unnarrowed agents)."""
    if principal.is_admin or principal.kind != "agent" or principal.project_ids is None:
        return None
    return _uuids(principal.project_ids)


def can_read_client(principal: Principal, client_id: uuid.UUID) -> bool:
    return principal.can_read_client(str(client_id))


def can_read_project(principal: Principal, client_id: uuid.UUID, project_id: uuid.UUID) -> bool:
    return principal.can_access_project(str(client_id), str(project_id))


def can_manage_projects(principal: Principal, client_id: uuid.UUID) -> bool:
    """Create, change and delete the projects of ``client_id`` (object reach is checked separately)."""
    if principal.is_admin:
        return True
    if principal.role_in(str(client_id)) in PROJECT_WRITER_ROLES:
        return True
    return (
        principal.kind == "agent"
        and principal.client_id == str(client_id)
        and principal.has_scope(WRITE_SCOPE)
    )


def can_create_project(principal: Principal, client_id: uuid.UUID) -> bool:
    """A narrowed agent could not see what it creates, so it may not create."""
    if visible_project_ids(principal) is not None:
        return False
    return can_manage_projects(principal, client_id)


def client_fields_writable(principal: Principal, client_id: uuid.UUID) -> frozenset[str]:
    if principal.is_admin:
        return CLIENT_ADMIN_FIELDS
    if principal.kind == "user" and principal.role_in(str(client_id)) == "product_owner":
        return CLIENT_OWNER_FIELDS
    return frozenset()


def project_fields_writable(principal: Principal, client_id: uuid.UUID) -> frozenset[str]:
    return PROJECT_MUTABLE_FIELDS if can_manage_projects(principal, client_id) else frozenset()
