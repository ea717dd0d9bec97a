"""Who may read which chain.

A client's chain: platform admins, the client's ``auditor`` and ``product_owner`` members, and the
client's agents holding ``audit:read`` (``ensure_client_role``: no membership at all → 404, another role
→ 403). The platform chain (events with no tenant, unreadable messages, platform reads): admins only, 404
for everyone else, exactly like a chain that does not exist.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from audit.chain.canonical import PLATFORM_CHAIN
from audit.errors import ChainNotFound, InvalidFilter
from shared.auth import Principal, ensure_client_role

__all__ = ["CHAIN_PATTERN", "READ_ROLES", "READ_SCOPE", "authorize_chain", "resolve_chain"]

READ_ROLES: Final = frozenset({"auditor", "product_owner"})
READ_SCOPE: Final = "audit:read"
# A client id in its usual spelling (not every form ``uuid.UUID`` takes), or ``platform``.
CHAIN_PATTERN: Final = (
    r"^(platform|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)
_CHAIN = re.compile(CHAIN_PATTERN)


def authorize_chain(principal: Principal, chain: str) -> None:
    if chain == PLATFORM_CHAIN:
        if not principal.is_admin:
            raise ChainNotFound()
        return
    ensure_client_role(principal, chain, READ_ROLES, scopes=(READ_SCOPE,))


def resolve_chain(principal: Principal, client_id: str | None, *, required: bool = False) -> str | None:
    """The chain a request targets (authorized), or None for "every chain" (admins only).

    ``client_id`` is a client UUID or ``platform``. Without it, an agent reads its own client and a user
    with exactly one readable client reads that one; otherwise it must be given.
    """
    if client_id is None:
        if principal.is_admin and not required:
            return None
        if principal.kind == "agent" and principal.client_id:
            client_id = principal.client_id
        else:
            readable = [c for c, role in principal.memberships.items() if role in READ_ROLES]
            if len(readable) != 1:
                raise InvalidFilter("client_id is required", code="client_id_required")
            client_id = readable[0]
    if _CHAIN.fullmatch(client_id) is None:
        raise InvalidFilter("client_id must be a client id (UUID) or 'platform'")
    chain = client_id if client_id == PLATFORM_CHAIN else str(uuid.UUID(client_id))
    authorize_chain(principal, chain)
    return chain
