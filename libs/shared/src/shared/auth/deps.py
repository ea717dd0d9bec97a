"""FastAPI dependencies: bearer token → ``Principal``, and the coarse checks routers declare.

The app factory stores a ``TokenVerifier`` on ``app.state.token_verifier``. Object-level decisions
(which project, which document) stay in each service's router/service code, using ``ensure_client_role``
and ``ensure_project_access`` so that a resource the caller may not see is a 404 like a missing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Annotated

from fastapi import Depends, Request

from shared.auth.exceptions import bearer_challenge
from shared.auth.principal import Principal
from shared.auth.verify import TokenVerifier
from shared.errors import Forbidden, NotFound, Unauthorized

__all__ = [
    "AdminPrincipal",
    "CurrentPrincipal",
    "OptionalPrincipal",
    "bearer_token",
    "ensure_client_role",
    "ensure_project_access",
    "get_optional_principal",
    "get_principal",
    "get_token_verifier",
    "insufficient_role",
    "insufficient_scope",
    "project_refusal",
    "require_admin",
    "require_any_scope",
    "require_scopes",
]


def get_token_verifier(request: Request) -> TokenVerifier:
    verifier = getattr(request.app.state, "token_verifier", None)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("app.state.token_verifier is not set to a TokenVerifier")
    return verifier


def bearer_token(request: Request) -> str | None:
    """The bearer credential, None when there is no ``Authorization`` header; ``Unauthorized`` when
    the header is there but is not exactly one ``Bearer <token>``."""
    values = request.headers.getlist("authorization")
    if not values:
        return None
    scheme, _, credential = values[0].strip().partition(" ")
    credential = credential.strip()
    if len(values) > 1 or scheme.lower() != "bearer" or not credential or " " in credential:
        raise Unauthorized(
            "The Authorization header must be 'Bearer <token>'",
            code="invalid_authorization_header",
            headers=bearer_challenge(),
        )
    return credential


async def _verify(request: Request, token: str) -> Principal:
    principal = await get_token_verifier(request).verify(token)
    request.state.principal = principal
    return principal


async def get_principal(request: Request) -> Principal:
    """The authenticated caller; 401 without a token or with an invalid one."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("A bearer token is required", headers=bearer_challenge())
    return await _verify(request, token)


async def get_optional_principal(request: Request) -> Principal | None:
    """The caller if a token was sent, else None. A token that was sent but is invalid is still a 401."""
    token = bearer_token(request)
    if token is None:
        return None
    return await _verify(request, token)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("Platform administrators only", code="admin_required")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]


def insufficient_scope(
    scopes: Collection[str], detail: str = "The token lacks a required scope"
) -> Forbidden:
    """The 403 for an agent that may see the object but whose token lacks ``scopes`` (RFC 6750 §3.1)."""
    challenge = 'Bearer error="insufficient_scope"'
    if scopes:
        challenge += f', scope="{" ".join(sorted(scopes))}"'
    return Forbidden(detail, code="insufficient_scope", headers={"WWW-Authenticate": challenge})


def insufficient_role(detail: str = "Your role in this client does not allow this") -> Forbidden:
    """The 403 for a member of the client whose role does not allow the action."""
    return Forbidden(detail, code="insufficient_role")


def require_scopes(*scopes: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: agents must hold every scope; users and admins pass (their role decides at the
    object level). Use as ``Depends(require_scopes("documents:write"))``."""
    if not scopes:
        raise ValueError("require_scopes needs at least one scope")

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.kind == "agent" and not principal.is_admin and not principal.has_scopes(*scopes):
            raise insufficient_scope(scopes)
        return principal

    return dependency


def project_refusal(
    principal: Principal, client_id: str, project_id: str, *, hidden: Exception, scope: str, doing: str
) -> Exception:
    """Why ``principal`` may not do ``doing`` (``"reading documents"``...) on a project, for a caller already
    judged not allowed: ``hidden`` (a 404 like a missing object) if it cannot see the project at all; else a
    403, ``insufficient_scope`` naming ``scope`` for an agent, ``insufficient_role`` for a member."""
    if not principal.can_access_project(client_id, project_id):
        return hidden
    if principal.kind == "agent" and principal.role_in(client_id) is None:
        return insufficient_scope((scope,), f"The token does not allow {doing}")
    return insufficient_role(f"Your role in this client does not allow {doing}")


def require_any_scope(*scopes: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: agents must hold at least one of ``scopes`` (the challenge names the first, the
    least one needs); users and admins pass."""
    if not scopes:
        raise ValueError("require_any_scope needs at least one scope")

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.kind == "agent" and not principal.is_admin and not set(scopes) & principal.scopes:
            raise insufficient_scope(scopes[:1])
        return principal

    return dependency


def ensure_client_role(
    principal: Principal,
    client_id: str,
    roles: Collection[str],
    *,
    scopes: Collection[str] = (),
) -> None:
    """Allow admins, and members of ``client_id`` whose role is in ``roles``.

    No membership at all → ``NotFound`` (the client's existence does not leak); a membership with
    another role → ``Forbidden``. An agent without membership but belonging to ``client_id`` passes
    only if ``scopes`` is given and it holds all of them (agents act by scope, not by role).
    """
    if principal.is_admin:
        return
    role = principal.role_in(client_id)
    if role is not None:
        if role not in roles:
            raise insufficient_role()
        return
    if principal.kind == "agent" and principal.client_id == client_id:
        if not scopes or not principal.has_scopes(*scopes):
            raise insufficient_scope(scopes)
        return
    raise NotFound()


def ensure_project_access(principal: Principal, client_id: str, project_id: str) -> None:
    """``NotFound`` unless the principal can reach this project (agents may be narrowed to projects)."""
    if not principal.can_access_project(client_id, project_id):
        raise NotFound()
