"""A newcomer's whole journey through the gateway, every service its own process.

An admin sets up two clients (tenants) with people and an agent; a product owner of the first client starts
a greenfield full-stack project; the agent (client-credentials token) works the BMAD workflow task by task
(project brief, PRD, front-end spec, architecture, PO validation, sharding, three stories through the
SM → dev → QA cycle, one of them with a QA fix loop) while the product owner answers the workflow's
decisions; the project completes. Then: the sprint status matches the stories, search finds every document
by a paraphrase, the audit log holds the journey's events (in order) and verifies, and the second client's
people and agent see none of it.

The steps are tests of one module, run in order on one shared ``Journey``; a step whose prerequisite failed
is skipped (its own failure is reported where it happened).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from .journey_plan import (
    ALL_ROLES,
    ALL_SCOPES,
    DOCUMENTS,
    FIX_LOOP_STORY,
    PASSWORD,
    STORIES,
    Journey,
    drive,
    in_development,
    retry_until_known,
    workflow_of,
)

pytestmark = pytest.mark.timeout(600)  # the first step waits for the whole platform to start


@pytest.fixture(scope="module")
def journey(platform: Any, helpers: Any) -> Any:
    j = Journey(platform, helpers)
    yield j
    for api in j.api.values():
        api.close()
    print("\njourney timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in j.timings.items()))


@pytest.fixture(autouse=True)
def _step(request: pytest.FixtureRequest, journey: Journey) -> Any:
    """Record each step's outcome and duration on the journey."""
    name = request.node.name.removeprefix("test_")
    start = time.monotonic()
    yield
    journey.timings[name] = time.monotonic() - start
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed:
        journey.done.add(name)
    else:
        journey.failed.add(name)


# -- 1. the admin sets up two tenants ------------------------------------------------------------------------
def test_admin_sets_up_two_clients(journey: Journey) -> None:
    h, p, tag = journey.h, journey.platform, journey.tag
    admin = h.login(p.gateway_url, p.admin_email, p.admin_password, "admin")
    journey.api["admin"] = admin
    me = admin.get("/v1/users/me")
    assert me["is_admin"] is True

    for key, name in (("a", "Acme Gardens"), ("b", "Bluebell Estates")):
        client = admin.post(
            "/v1/clients", 201, json={"name": f"{name} {tag}", "slug": f"{name.split()[0].lower()}-{tag}"}
        )
        assert client["status"] == "active"
        journey.ids[f"client_{key}"] = client["id"]

    people = {
        "po_a": ("a", "product_owner"),
        "member_a": ("a", "member"),
        "auditor_a": ("a", "auditor"),
        "po_b": ("b", "product_owner"),
        "auditor_b": ("b", "auditor"),
    }
    emails: dict[str, str] = {}
    for name, (key, role) in people.items():
        email = f"{name.replace('_', '.')}.{tag}@example.org"
        user = admin.post(
            "/v1/users",
            201,
            json={"email": email, "password": PASSWORD, "display_name": name.replace("_", " ")},
        )
        journey.ids[f"user_{name}"] = user["id"]
        emails[name] = email
        client_id = journey.ids[f"client_{key}"]
        m = retry_until_known(
            lambda c=client_id, u=user["id"], r=role: admin.request(
                "PUT", f"/v1/clients/{c}/members/{u}", json={"role": r}
            ),
            f"membership {name}",
        )
        assert m["role"] == role

    for key in ("a", "b"):
        client_id = journey.ids[f"client_{key}"]
        agent = retry_until_known(
            lambda c=client_id, k=key: admin.request(
                "POST",
                f"/v1/clients/{c}/agents",
                json={"name": f"bmad-agent-{k}", "scopes": ALL_SCOPES, "bmad_roles": ALL_ROLES},
            ),
            f"agent of client {key}",
        )
        assert agent["client_secret"]
        assert agent["client_id"] == client_id
        journey.ids[f"agent_{key}"] = agent["id"]
        journey.api[f"agent_{key}"] = h.agent_login(
            p.gateway_url, agent["id"], agent["client_secret"], f"agent_{key}"
        )

    # Logged in after the memberships exist, so the tokens carry them.
    for name, email in emails.items():
        journey.api[name] = h.login(p.gateway_url, email, PASSWORD, name)
    me_a = journey.po_a.get("/v1/users/me")
    assert {(m["client_id"], m["role"]) for m in me_a["memberships"]} == {
        (journey.ids["client_a"], "product_owner")
    }
    members = journey.po_a.get(f"/v1/clients/{journey.ids['client_a']}/members")
    assert {m["user_id"] for m in members["items"]} == {
        journey.ids["user_po_a"],
        journey.ids["user_member_a"],
        journey.ids["user_auditor_a"],
    }


# -- 2. a product owner creates a greenfield project; its workflow starts ------------------------------------
def test_product_owner_creates_project(journey: Journey) -> None:
    journey.require("admin_sets_up_two_clients")
    project = journey.po_a.post(
        "/v1/projects",
        201,
        json={
            "client_id": journey.ids["client_a"],
            "name": f"Plotshare {journey.tag}",
            "description": "Booking raised beds in community gardens",
            "kind": "greenfield",
            "type": "fullstack",
        },
    )
    assert project["status"] == "active"
    assert project["kind"] == "greenfield"
    assert project["type"] == "fullstack"
    journey.ids["project_a"] = project["id"]
    # The agent (projects:read) and the member see it; the second client gets a project of its own.
    assert journey.agent_a.get(f"/v1/projects/{project['id']}")["id"] == project["id"]
    assert journey.member_a.get(f"/v1/projects/{project['id']}")["id"] == project["id"]
    other = journey.po_b.post(
        "/v1/projects",
        201,
        json={
            "client_id": journey.ids["client_b"],
            "name": f"Other {journey.tag}",
            "kind": "greenfield",
            "type": "service",
        },
    )
    journey.ids["project_b"] = other["id"]


def test_workflow_starts(journey: Journey) -> None:
    journey.require("product_owner_creates_project")
    path = f"/v1/projects/{journey.ids['project_a']}/workflow"

    def started() -> Any:
        r = journey.agent_a.request("GET", path)
        assert r.status_code in (200, 404), r.text
        return r.json() if r.status_code == 200 else None

    wf = journey.poll("the project's workflow instance", started, timeout=60)
    assert wf["definition_id"] == "greenfield-fullstack"
    assert wf["status"] == "running"
    assert wf["project_id"] == journey.ids["project_a"]
    assert wf["client_id"] == journey.ids["client_a"]
    first = wf["open_tasks"]
    assert len(first) == 1
    assert first[0]["roles"] == ["analyst"]
    assert first[0]["produces_kind"] == "project-brief"
    # The analyst task is in the agent's queue.
    ready = journey.agent_a.get("/v1/tasks", params={"role": "analyst", "state": "ready"})["items"]
    assert [t["id"] for t in ready] == [first[0]["id"]]


# -- 3. the agent and the product owner drive the workflow ---------------------------------------------------
def test_planning_phase(journey: Journey) -> None:
    """Brief → PRD → front-end spec → architecture → PO validation → sharding, decisions answered."""
    journey.require("workflow_starts")
    wf = drive(journey, in_development)
    for kind in ("project-brief", "prd", "front-end-spec", "architecture"):
        assert kind in journey.docs, f"no {kind} was produced"
    steps = {s["id"]: s["state"] for s in wf["steps"]}
    for step in ("create_project_brief", "create_prd", "create_front_end_spec", "create_fullstack_architecture",
                 "validate_all_artifacts", "shard_documents"):  # fmt: skip
        assert steps.get(step) == "completed", (step, steps)
    asked = {d["token"] for d in journey.decisions}
    assert {"user_wants_ai_generation", "architecture_suggests_prd_changes", "po_checklist_issues"} <= asked
    # The brief was the agent's: the analyst task is completed with its document.
    brief_task = next(t for t in journey.tasks if t["produces_kind"] == "project-brief")
    done = journey.agent_a.get(f"/v1/tasks/{brief_task['id']}")
    assert done["state"] == "completed"
    assert done["document_id"] == journey.docs["project-brief"]


def test_story_cycle_until_project_completes(journey: Journey) -> None:
    """Three stories through SM → dev → QA (story 2 with one QA fix loop); the workflow completes."""
    journey.require("planning_phase")
    wf = drive(journey, lambda w: w["status"] != "running", limit=200)
    assert wf["status"] == "completed", wf
    assert wf["outcome"] == "completed", wf
    journey.final_workflow = wf
    worked = Counter((t["step_id"], t["story"]) for t in journey.tasks)
    for n in range(1, len(STORIES) + 1):
        assert worked[("create_story", n)] == 1, worked
        assert worked[("implement_story", n)] == 1, worked
        assert worked[("review_implementation", n)] == (2 if n == FIX_LOOP_STORY else 1), worked
    assert worked[("address_qa_feedback", FIX_LOOP_STORY)] == 1
    assert sum(v for (step, _), v in worked.items() if step == "address_qa_feedback") == 1
    assert [s["status"] for s in wf["stories"]] == ["done"] * len(STORIES)


def test_projects_marks_the_project_completed(journey: Journey) -> None:
    journey.require("story_cycle_until_project_completes")

    def completed() -> Any:
        p = journey.po_a.get(f"/v1/projects/{journey.ids['project_a']}")
        return p if p["status"] == "completed" else None

    project = journey.poll("projects to mark the project completed", completed, timeout=60)
    assert project["version"] >= 2


# -- 4. what the finished project looks like -----------------------------------------------------------------
def test_sprint_status_matches(journey: Journey) -> None:
    journey.require("story_cycle_until_project_completes")
    status = journey.po_a.get(f"/v1/projects/{journey.ids['project_a']}/sprint-status")
    expected = {"epic-1": "done"}
    for n, story in enumerate(STORIES, start=1):
        slug = "-".join(story["story_title"].lower().split())
        expected[f"1-{n}-{slug}"] = "done"
    expected["epic-1-retrospective"] = "optional"
    assert status["development_status"] == expected
    assert status["project"] == f"Plotshare {journey.tag}"
    yaml_text = journey.po_a.expect(
        200, "GET", f"/v1/projects/{journey.ids['project_a']}/sprint-status", params={"format": "yaml"}
    )
    assert "development_status:" in yaml_text
    assert "  epic-1: done" in yaml_text
    wf = journey.final_workflow or workflow_of(journey)
    assert {s["key"] for s in wf["stories"]} == set(expected) - {"epic-1", "epic-1-retrospective"}
    assert {s["document_id"] for s in wf["stories"]} == {
        journey.docs[f"story-{n}"] for n in range(1, len(STORIES) + 1)
    }


def _paraphrases(journey: Journey) -> list[tuple[str, str]]:
    out = [(journey.docs[k], v["paraphrase"]) for k, v in DOCUMENTS.items() if k in journey.docs]
    out += [
        (journey.docs[f"story-{n}"], s["paraphrase"])
        for n, s in enumerate(STORIES, 1)
        if f"story-{n}" in journey.docs
    ]
    return out


def test_search_finds_each_document_by_a_paraphrase(journey: Journey) -> None:
    journey.require("story_cycle_until_project_completes")
    pairs = _paraphrases(journey)
    assert len(pairs) == len(DOCUMENTS) + len(STORIES)
    misses = []
    for doc_id, query in pairs:
        for mode in ("hybrid", "semantic"):
            body = {"query": query, "mode": mode, "limit": 5, "project_ids": [journey.ids["project_a"]]}
            result = journey.po_a.post("/v1/search", 200, json=body)
            hits = [hit["document_id"] for hit in result["items"]]
            assert all(hit["project_id"] == journey.ids["project_a"] for hit in result["items"])
            if not hits or hits[0] != doc_id:
                misses.append((mode, query, doc_id, hits[:3]))
    assert not misses, f"paraphrase searches that did not rank their document first: {misses}"
    # The agent (scope ``search``) finds the same, without naming the project.
    result = journey.agent_a.post(
        "/v1/search", 200, json={"query": DOCUMENTS["prd"]["paraphrase"], "limit": 3}
    )
    assert result["items"]
    assert result["items"][0]["document_id"] == journey.docs["prd"]


# -- 5. the audit log ---------------------------------------------------------------------------------------
def _audit_entries(api: Any, client_id: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"client_id": client_id, "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/audit/entries", params=params)
        entries += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return entries


def test_audit_log_has_the_journey(journey: Journey) -> None:
    journey.require("projects_marks_the_project_completed")
    if not journey.platform.has("audit"):
        pytest.skip("the audit service is not installed in this checkout")
    client_a, project_a = journey.ids["client_a"], journey.ids["project_a"]

    def caught_up() -> Any:
        entries = _audit_entries(journey.auditor_a, client_a)
        actions = {e["action"] for e in entries}
        done = (
            "baton.projects.project.status_changed.v1" in actions
            and "baton.workflows.workflow.completed.v1" in actions
        )
        return entries if done else None

    entries = journey.poll(
        "the audit log to hold the journey's last events", caught_up, timeout=60, interval=1.0
    )
    actions = Counter(e["action"] for e in entries)
    expected = [
        "baton.projects.client.created.v1",
        "baton.identity.membership.granted.v1",
        "baton.identity.agent.created.v1",
        "baton.projects.project.created.v1",
        "baton.workflows.workflow.started.v1",
        "baton.workflows.workflow.task_claimed.v1",
        "baton.workflows.workflow.task_completed.v1",
        "baton.workflows.workflow.task_skipped.v1",
        "baton.workflows.workflow.decision_made.v1",
        "baton.documents.document.indexed.v1",
        "baton.workflows.workflow.completed.v1",
        "baton.projects.project.status_changed.v1",
    ]
    missing = [a for a in expected if actions[a] == 0]
    assert not missing, f"audit entries missing: {missing}; present: {sorted(actions)}"
    # Exactly the journey's own actions, each once.
    worked = [t for t in journey.tasks if not (t["optional"] and "qa" not in t["roles"])]
    skipped = len(journey.tasks) - len(worked)
    assert actions["baton.workflows.workflow.decision_made.v1"] == len(journey.decisions)
    assert actions["baton.workflows.workflow.task_claimed.v1"] == len(worked)
    assert actions["baton.workflows.workflow.task_completed.v1"] == len(worked)
    assert actions["baton.workflows.workflow.task_skipped.v1"] == skipped
    assert actions["baton.workflows.workflow.started.v1"] == 1
    assert actions["baton.workflows.workflow.completed.v1"] == 1
    assert actions["baton.documents.document.indexed.v1"] == len(journey.docs)
    assert actions["baton.projects.project.created.v1"] == 1
    assert len({e["event_id"] for e in entries}) == len(entries), "an event recorded twice"
    assert actions["baton.identity.membership.granted.v1"] == 3
    # Every entry is this client's, sequences are gap-free, the chain links.
    assert all(e["chain"] == client_a and e["client_id"] == client_a for e in entries)
    assert [e["sequence"] for e in entries] == list(
        range(entries[0]["sequence"], entries[0]["sequence"] + len(entries))
    )
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    # In order: each producer's events in its own sequence, and the journey's causal order in time.
    by_producer: dict[str, list[int]] = {}
    for e in entries:
        if e["source"]["producer_sequence"] is not None:
            by_producer.setdefault(e["source"]["producer"], []).append(e["source"]["producer_sequence"])
    for producer, seqs in by_producer.items():
        assert seqs == sorted(seqs), f"{producer}'s events out of order in the chain"

    def first(action: str, **match: Any) -> dict[str, Any]:
        for e in entries:
            if e["action"] == action and all(e["resource"].get(k) == v for k, v in match.items()):
                return e
        raise AssertionError(f"no {action} {match}")

    chain = [
        first("baton.projects.project.created.v1"),
        first("baton.workflows.workflow.started.v1"),
        first("baton.documents.document.indexed.v1"),
        first("baton.workflows.workflow.completed.v1"),
        first("baton.projects.project.status_changed.v1"),
    ]
    times = [e["occurred_at"] for e in chain]
    assert times == sorted(times), [(e["action"], e["occurred_at"]) for e in chain]
    assert any(project_a in str(e["payload"]) for e in chain[:2])
    verify = journey.auditor_a.get("/v1/audit/verify", params={"client_id": client_a})
    assert verify["ok"] is True, verify
    assert verify["first_bad"] is None, verify
    assert verify["entries_checked"] >= len(entries)
    export = journey.auditor_a.expect(200, "GET", "/v1/audit/export", params={"client_id": client_a})
    assert export.count("\n") >= len(entries)


# -- 6. the other client sees none of it ---------------------------------------------------------------------
def _is_not_found(r: Any) -> bool:
    return r.status_code == 404 and r.headers.get("content-type", "").startswith("application/problem+json")


def _problem_shape(r: Any, ident: str) -> dict[str, Any]:
    """A 404 body without what differs per request (request id, instance) and with the id masked."""
    body = {k: v for k, v in r.json().items() if k not in ("request_id", "instance", "trace_id")}
    return {k: v.replace(ident, "<id>") if isinstance(v, str) else v for k, v in body.items()}


def test_hidden_is_exactly_like_missing(journey: Journey) -> None:
    """Another client's object is a 404 with the same body as an id that does not exist at all."""
    journey.require("story_cycle_until_project_completes")
    ids = journey.ids
    paths = {
        "/v1/projects/{}": ids["project_a"],
        "/v1/projects/{}/workflow": ids["project_a"],
        "/v1/projects/{}/sprint-status": ids["project_a"],
        "/v1/projects/{}/documents": ids["project_a"],
        "/v1/documents/{}": journey.docs["prd"],
        "/v1/tasks/{}": journey.tasks[0]["id"],
        "/v1/decisions/{}": journey.decisions[0]["id"],
        "/v1/clients/{}": ids["client_a"],
    }
    differences = []
    for template, hidden in paths.items():
        missing = str(uuid.uuid4())
        for who in ("po_b", "agent_b"):
            api = getattr(journey, who)
            a, b = api.request("GET", template.format(hidden)), api.request("GET", template.format(missing))
            if not (_is_not_found(a) and _is_not_found(b)):
                differences.append(f"{who} {template}: {a.status_code} vs {b.status_code}")
            elif _problem_shape(a, hidden) != _problem_shape(b, missing):
                differences.append(f"{who} {template}: {a.text[:300]} vs {b.text[:300]}")
    assert not differences, "\n".join(differences)


def test_other_client_sees_nothing(journey: Journey) -> None:
    journey.require("story_cycle_until_project_completes")
    ids, docs = journey.ids, journey.docs
    client_a, project_a = ids["client_a"], ids["project_a"]
    task_id = journey.tasks[0]["id"]
    decision_id = journey.decisions[0]["id"]
    doc_ids = list(docs.values())
    a_ids = {client_a, project_a, task_id, decision_id, *doc_ids}
    leaks: list[str] = []

    for who in ("po_b", "auditor_b", "agent_b"):
        api = getattr(journey, who)

        def not_found(method: str, path: str, who: str = who, api: Any = api, **kw: Any) -> None:
            r = api.request(method, path, **kw)
            if not _is_not_found(r):
                leaks.append(f"{who}: {method} {path} → {r.status_code} {r.text[:200]}")

        not_found("GET", f"/v1/clients/{client_a}")
        not_found("GET", f"/v1/projects/{project_a}")
        not_found(
            "PATCH", f"/v1/projects/{project_a}", json={"name": "taken over"}, headers={"If-Match": '"1"'}
        )
        not_found("GET", f"/v1/projects/{project_a}/documents")
        not_found(
            "POST",
            f"/v1/projects/{project_a}/documents",
            json={"title": "x", "kind": "reference", "content": "x"},
        )
        for doc in doc_ids:
            not_found("GET", f"/v1/documents/{doc}")
            not_found("GET", f"/v1/documents/{doc}/content")
            not_found("GET", f"/v1/documents/{doc}/versions")
        not_found("GET", f"/v1/projects/{project_a}/workflow")
        not_found("GET", f"/v1/projects/{project_a}/sprint-status")
        not_found("GET", f"/v1/tasks/{task_id}")
        not_found("POST", f"/v1/tasks/{task_id}/claim", json={})
        not_found("GET", f"/v1/decisions/{decision_id}")
        not_found("POST", f"/v1/decisions/{decision_id}", json={"answer": "no"})
        not_found("GET", "/v1/audit/entries", params={"client_id": client_a})
        not_found("GET", "/v1/audit/verify", params={"client_id": client_a})
        not_found("GET", "/v1/audit/export", params={"client_id": client_a})
        if who != "agent_b":
            not_found("GET", f"/v1/clients/{client_a}/members")

        # Lists: only the caller's own things.
        for path, params in (
            ("/v1/projects", {}),
            ("/v1/clients", {}),
            ("/v1/tasks", {}),
            ("/v1/decisions", {}),
            ("/v1/projects", {"q": "Plotshare"}),
        ):
            r = api.request("GET", path, params=params)
            if r.status_code == 200:
                found = a_ids & {str(i.get("id")) for i in r.json()["items"]} | (
                    {client_a} & {str(i.get("client_id")) for i in r.json()["items"]}
                )
                if found:
                    leaks.append(f"{who}: GET {path} {params} lists {found}")
            elif r.status_code != 403:
                leaks.append(f"{who}: GET {path} {params} → {r.status_code} {r.text[:200]}")
        for path in ("/v1/projects", "/v1/tasks", "/v1/decisions"):
            r = api.request("GET", path, params={"client_id": client_a})
            if r.status_code == 200 and r.json()["items"]:
                leaks.append(f"{who}: GET {path}?client_id=A lists {len(r.json()['items'])} items")
            elif r.status_code not in (200, 403, 404):
                leaks.append(f"{who}: GET {path}?client_id=A → {r.status_code}")

        # Search, every mode, with and without naming A's project.
        for _, query in _paraphrases(journey):
            for mode in ("hybrid", "semantic", "keyword"):
                for extra in ({}, {"project_ids": [project_a]}):
                    r = api.request("POST", "/v1/search", json={"query": query, "mode": mode, **extra})
                    if r.status_code == 200:
                        # B has no documents at all: any hit is someone else's.
                        hits = {h["document_id"] for h in r.json()["items"]} | {
                            h["project_id"] for h in r.json()["items"]
                        }
                        if hits:
                            leaks.append(f"{who}: search {mode} {extra} finds {hits} (A's: {hits & a_ids})")
                    elif r.status_code not in (403, 404):
                        leaks.append(f"{who}: search {mode} {extra} → {r.status_code} {r.text[:200]}")

    # B's own audit chain (its export included) carries nothing of A's.
    r = journey.auditor_b.request("GET", "/v1/audit/export", params={"client_id": ids["client_b"]})
    assert r.status_code == 200, r.text
    found = {i for i in a_ids if i in r.text}
    if found:
        leaks.append(f"auditor_b: B's audit export mentions A's ids {found}")
    # B's own project is where it should be.
    assert [p["id"] for p in journey.po_b.get("/v1/projects")["items"]] == [ids["project_b"]]
    assert not leaks, "cross-tenant leaks:\n" + "\n".join(leaks)
