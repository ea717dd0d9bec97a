"""Access-token verification and authorization helpers shared by the gateway and every service.

Test helpers (``TokenFactory``) live in ``shared.auth.testing`` and are not imported here.
"""

from shared.auth.deps import (
    AdminPrincipal,
    CurrentPrincipal,
    OptionalPrincipal,
    bearer_token,
    ensure_client_role,
    ensure_project_access,
    get_optional_principal,
    get_principal,
    get_token_verifier,
    insufficient_role,
    insufficient_scope,
    project_refusal,
    require_admin,
    require_any_scope,
    require_scopes,
)
from shared.auth.exceptions import InvalidToken, KeySetUnavailable, bearer_challenge
from shared.auth.jwks import MAX_JWKS_BYTES, JWKSCache, parse_jwks
from shared.auth.principal import BMAD_ROLES, CLIENT_ROLES, ClientRole, Principal, PrincipalKind
from shared.auth.verify import (
    ACCEPTED_TOKEN_TYPES,
    MAX_TOKEN_BYTES,
    SUPPORTED_ALGORITHMS,
    NotBeforeLookup,
    TokenVerifier,
)

__all__ = [
    "ACCEPTED_TOKEN_TYPES",
    "BMAD_ROLES",
    "CLIENT_ROLES",
    "MAX_JWKS_BYTES",
    "MAX_TOKEN_BYTES",
    "SUPPORTED_ALGORITHMS",
    "AdminPrincipal",
    "ClientRole",
    "CurrentPrincipal",
    "InvalidToken",
    "JWKSCache",
    "KeySetUnavailable",
    "NotBeforeLookup",
    "OptionalPrincipal",
    "Principal",
    "PrincipalKind",
    "TokenVerifier",
    "bearer_challenge",
    "bearer_token",
    "ensure_client_role",
    "ensure_project_access",
    "get_optional_principal",
    "get_principal",
    "get_token_verifier",
    "insufficient_role",
    "insufficient_scope",
    "parse_jwks",
    "project_refusal",
    "require_admin",
    "require_any_scope",
    "require_scopes",
]
