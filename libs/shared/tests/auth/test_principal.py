"""Principal: claim mapping and the authorization helpers services build on."""

import pytest

from shared.auth import InvalidToken, Principal
from shared.auth.testing import TokenFactory


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


def test_raw_token_is_kept_but_never_printed(tokens: TokenFactory) -> None:
    p = tokens.principal("u1")
    assert p.raw_token.count(".") == 2
    assert p.raw_token not in repr(p)
    assert "raw_token" not in repr(p)


def test_principal_is_immutable_and_hashable(tokens: TokenFactory) -> None:
    p = tokens.principal("u1", memberships={"c1": "member"})
    with pytest.raises(AttributeError):
        p.subject = "other"  # type: ignore[misc]
    assert hash(p) == hash(p)


def test_user_ignores_agent_only_claims(tokens: TokenFactory) -> None:
    p = tokens.principal("u1", client_id="c1", project_ids=["p1"])
    assert p.client_id is None
    assert p.project_ids is None
    assert not p.can_read_client("c1")


def test_user_roles(tokens: TokenFactory) -> None:
    p = tokens.principal("u1", memberships={"c1": "viewer", "c2": "product_owner", "c3": "ghost"})
    assert p.role_in("c1") == "viewer"
    assert p.role_in("c9") is None
    assert p.can_read_client("c1")
    assert p.can_read_client("c2")
    assert not p.can_read_client("c3")  # an unknown role grants nothing
    assert not p.can_read_client("c9")
    assert p.can_access_project("c1", "any-project")
    assert not p.can_access_project("c9", "any-project")
    assert not p.has_scope("projects:read")


def test_admin_reads_everything(tokens: TokenFactory) -> None:
    p = tokens.principal("root", admin=True)
    assert p.can_read_client("c1")
    assert p.can_access_project("c1", "p1")


def test_agent_is_confined_to_its_client_and_projects(tokens: TokenFactory) -> None:
    p = tokens.principal(
        "bot",
        kind="agent",
        client_id="c1",
        project_ids=["p1"],
        scopes=["documents:write"],
        bmad_roles=["dev"],
    )
    assert p.is_agent
    assert p.has_scope("documents:write")
    assert not p.has_scope("documents")
    assert p.has_scopes("documents:write")
    assert not p.has_scopes("documents:write", "audit:read")
    assert p.can_read_client("c1")
    assert not p.can_read_client("c2")
    assert p.can_access_project("c1", "p1")
    assert not p.can_access_project("c1", "p2")
    assert not p.can_access_project("c2", "p1")
    assert p.bmad_roles == frozenset({"dev"})


def test_agent_without_project_list_reaches_all_projects_of_its_client(tokens: TokenFactory) -> None:
    p = tokens.principal("bot", kind="agent", client_id="c1")
    assert p.project_ids is None
    assert p.can_access_project("c1", "anything")
    empty = tokens.principal("bot", kind="agent", client_id="c1", project_ids=[])
    assert not empty.can_access_project("c1", "anything")


def test_from_claims_accepts_float_times(tokens: TokenFactory) -> None:
    claims = tokens.claims("u1")
    claims["iat"] = float(claims["iat"]) + 0.5
    p = Principal.from_claims(claims, "t")
    assert p.issued_at == int(claims["iat"])


@pytest.mark.parametrize(
    ("override", "claim"),
    [
        ({"bmad_roles": "pm"}, "bmad_roles"),
        ({"bmad_roles": [""]}, "bmad_roles"),
        ({"memberships": {"c1": 3}}, "memberships"),
        ({"name": ""}, "name"),
        ({"iat": True}, "iat"),
        ({"exp": float("nan")}, "exp"),
        ({"jti": None}, "jti"),
    ],
)
def test_from_claims_rejects_malformed(tokens: TokenFactory, override: dict, claim: str) -> None:
    claims = {**tokens.claims("u1"), **override}
    with pytest.raises(InvalidToken, match=f"'{claim}'"):
        Principal.from_claims(claims, "t")
