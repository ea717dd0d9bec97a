"""Pure rules, no I/O: who may do what, bounded metadata, the workflow a new project asks for."""

from __future__ import annotations

import uuid

import pytest
from projects import policy
from projects.fields import MAX_METADATA_BYTES, check_metadata
from projects.projects.schemas import ProjectCreate, ProjectUpdate
from projects.projects.service import STATUS_TRANSITIONS
from pydantic import ValidationError

A, B = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def principal(tokens):
    return tokens.principal


def test_readable_clients(principal):
    assert policy.readable_client_ids(principal("admin", admin=True)) is None
    user = principal("u", memberships={str(A): "viewer", str(B): "stranger-role", "junk": "member"})
    assert policy.readable_client_ids(user) == {A}  # unknown roles and malformed ids grant nothing
    agent = principal("bot", kind="agent", client_id=str(B), scopes=["projects:read"])
    assert policy.readable_client_ids(agent) == {B}


def test_agents_narrowed_to_projects(principal):
    p1 = uuid.uuid4()
    narrowed = principal(
        "bot", kind="agent", client_id=str(A), project_ids=[str(p1)], scopes=["projects:write"]
    )
    assert policy.visible_project_ids(narrowed) == {p1}
    assert policy.can_read_project(narrowed, A, p1)
    assert not policy.can_read_project(narrowed, A, uuid.uuid4())
    assert policy.can_manage_projects(narrowed, A)
    assert not policy.can_create_project(narrowed, A)
    # project_ids on a user token mean nothing: a user's reach comes from memberships.
    user = principal("u", memberships={str(A): "product_owner"}, extra_claims={"project_ids": [str(p1)]})
    assert policy.visible_project_ids(user) is None
    assert policy.can_create_project(user, A)


def test_who_manages_projects(principal):
    assert policy.can_manage_projects(principal("a", admin=True), A)
    assert policy.can_manage_projects(principal("po", memberships={str(A): "product_owner"}), A)
    assert not policy.can_manage_projects(principal("po", memberships={str(A): "product_owner"}), B)
    for role in ("member", "viewer", "auditor"):
        assert not policy.can_manage_projects(principal("u", memberships={str(A): role}), A)
    reader = principal("bot", kind="agent", client_id=str(A), scopes=["projects:read"])
    writer = principal("bot", kind="agent", client_id=str(A), scopes=["projects:write"])
    assert not policy.can_manage_projects(reader, A)
    assert policy.can_manage_projects(writer, A)
    assert not policy.can_manage_projects(writer, B)


def test_client_fields_by_caller(principal):
    assert policy.client_fields_writable(principal("a", admin=True), A) >= {"slug", "status"}
    owner = principal("po", memberships={str(A): "product_owner"})
    assert policy.client_fields_writable(owner, A) == {"name", "contact", "metadata"}
    assert policy.client_fields_writable(owner, B) == frozenset()
    agent = principal("bot", kind="agent", client_id=str(A), scopes=["projects:write"])
    assert policy.client_fields_writable(agent, A) == frozenset()


def test_metadata_bounds():
    assert check_metadata({"a": [1, 2.5, None, True, {"b": "c"}]})
    too_big = {"k": "x" * MAX_METADATA_BYTES}
    for bad in (too_big, {"k": float("nan")}, {"k": float("inf")}, {"k": "\x00"}, {"k" * 65: 1}):
        with pytest.raises(ValueError):
            check_metadata(bad)
    multibyte = {"k": "é" * (MAX_METADATA_BYTES // 2)}  # bytes, not characters, are counted
    with pytest.raises(ValueError):
        check_metadata(multibyte)


@pytest.mark.parametrize(
    ("type_", "workflow_id", "chosen"),
    [
        ("fullstack", None, None),
        ("ui", None, None),
        ("brownfield-service", None, "brownfield-service"),
        ("service", "method-brownfield", "method-brownfield"),
    ],
)
def test_workflow_choice(type_, workflow_id, chosen):
    data = ProjectCreate(client_id=A, name="n", kind="brownfield", type=type_, workflow_id=workflow_id)
    assert data.chosen_workflow() == chosen


def test_patch_schema_refuses_nulls_and_reports_only_sent_fields():
    assert ProjectUpdate(name="x").changes() == {"name": "x"}
    with pytest.raises(ValidationError):
        ProjectUpdate.model_validate({"description": None})


def test_status_transitions_are_closed():
    statuses = {"active", "paused", "completed", "archived"}
    assert set(STATUS_TRANSITIONS) == statuses
    for source, targets in STATUS_TRANSITIONS.items():
        assert targets <= statuses
        assert source not in targets
    assert "paused" not in STATUS_TRANSITIONS["archived"]
