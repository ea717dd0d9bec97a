"""Instances, tasks and decisions through the HTTP API on the real database."""

from __future__ import annotations

import asyncio

import yaml
from sqlalchemy import select
from workflows.instances.models import InstanceRow
from workflows.worker import LeaseSweeper

from shared.db import new_id


async def test_project_created_starts_one_instance_with_the_analyst_task(svc):
    client, project = await svc.created()
    wf = await svc.workflow(project)
    assert wf["definition_id"] == "greenfield-fullstack"
    assert wf["status"] == "running"
    assert wf["current_step"] == "create_project_brief"
    assert wf["current_phase"] == "planning"
    [task] = wf["open_tasks"]
    assert task["roles"] == ["analyst"]
    assert task["state"] == "ready"
    assert task["produces_kind"] == "project-brief"
    assert wf["steps"][0]["state"] == "ready"
    assert wf["steps"][1]["state"] == "not_reached"
    # The same event again, or another project.created for the project: still one instance.
    from workflows.instances import service

    from .conftest import project_created

    async with svc.sessions.begin() as session:
        assert (
            await service.on_project_created(session, project_created(client, project), tenant=str(client))
            is None
        )
    async with svc.sessions() as session:
        assert (
            len((await session.scalars(select(InstanceRow).where(InstanceRow.project_id == project))).all())
            == 1
        )
    assert (await svc.event_types())[:2] == ["started", "task_ready"]


async def test_definition_is_chosen_from_kind_and_type_or_named(svc):
    _, p1 = await svc.created(kind="brownfield", type="service")
    _, p2 = await svc.created(kind="greenfield", type="bmad-method")
    _, p3 = await svc.created(kind="greenfield", type="fullstack", workflow_id="greenfield-ui")
    _, p4 = await svc.created(kind="greenfield", type="greenfield-service")
    got = [(await svc.workflow(p))["definition_id"] for p in (p1, p2, p3, p4)]
    assert got == ["brownfield-service", "bmad-method-greenfield", "greenfield-ui", "greenfield-service"]


async def test_document_indexed_completes_the_task_and_readies_the_next(svc):
    client, project = await svc.created()
    brief = await svc.indexed(project, client, "project-brief")
    wf = await svc.workflow(project)
    done = next(s for s in wf["steps"] if s["id"] == "create_project_brief")
    assert done["state"] == "completed"
    [task] = wf["open_tasks"]
    assert task["step_id"] == "create_prd"
    assert task["roles"] == ["pm"]
    assert task["state"] == "ready"
    assert "Project brief is complete" in task["handoff_prompt"]
    r = await svc.http.get(f"/v1/tasks?project_id={project}&state=completed", headers=svc.user(client))
    [completed] = r.json()["items"]
    assert completed["document_id"] == str(brief)
    assert completed["completed_by"] == "workflows"
    assert (await svc.event_types())[-2:] == ["task_completed", "task_ready"]


async def test_documents_before_the_project_and_duplicates(svc):
    client, project = new_id(), new_id()
    brief = await svc.indexed(project, client, "project-brief")  # out of order: no instance yet
    await svc.indexed(project, client, "project-brief", document_id=brief)  # duplicate
    prd = await svc.indexed(project, client, "prd", version=2)
    await svc.indexed(project, client, "prd", document_id=prd, version=1)  # an older version, late
    await svc.created(client, project_id=project)
    wf = await svc.workflow(project)
    assert wf["current_step"] == "create_front_end_spec"
    states = {s["id"]: s["state"] for s in wf["steps"]}
    assert states["create_project_brief"] == states["create_prd"] == "completed"
    async with svc.sessions() as session:
        from workflows.instances.models import ProjectDocumentRow

        assert (await session.get(ProjectDocumentRow, prd)).version == 2


async def test_task_listing_filters_scope_and_pages(svc):
    client, p1 = await svc.created()
    _, p2 = await svc.created(client)
    other, p3 = await svc.created()
    r = await svc.http.get("/v1/tasks?role=analyst&state=ready", headers=svc.user(client, "viewer"))
    assert {t["project_id"] for t in r.json()["items"]} == {str(p1), str(p2)}
    r = await svc.http.get("/v1/tasks?limit=1", headers=svc.user(client))
    assert len(r.json()["items"]) == 1
    assert r.json()["next_cursor"]
    r2 = await svc.http.get(f"/v1/tasks?limit=1&cursor={r.json()['next_cursor']}", headers=svc.user(client))
    assert r2.json()["items"][0]["id"] != r.json()["items"][0]["id"]
    assert r2.json()["next_cursor"] is None
    r = await svc.http.get("/v1/tasks?role=pm", headers=svc.user(client))
    assert r.json()["items"] == []
    r = await svc.http.get("/v1/tasks", headers=svc.agent(client, ("analyst",), project_ids=[p2]))
    assert [t["project_id"] for t in r.json()["items"]] == [str(p2)]
    r = await svc.http.get("/v1/tasks", headers=svc.admin)
    assert len(r.json()["items"]) == 3
    body = svc.problem(
        await svc.http.get("/v1/tasks?role=wizard", headers=svc.user(client)), 422, "unknown_role"
    )
    assert "known roles" in body["detail"]
    assert "analyst" in body["detail"]
    r = await svc.http.get("/v1/tasks?role=tea", headers=svc.user(client))  # v6 name of the QA role
    assert r.status_code == 200
    # Exactly the names the OpenAPI document lists.
    svc.problem(await svc.http.get("/v1/tasks?role=PM", headers=svc.user(client)), 422, "unknown_role")
    svc.problem(await svc.http.get(f"/v1/tasks?client_id={other}", headers=svc.user(client)), 404)
    svc.problem(await svc.http.get("/v1/tasks?state=bogus", headers=svc.user(client)), 422)
    svc.problem(await svc.http.get("/v1/tasks?cursor=%%%", headers=svc.user(client)), 400)
    assert p3


async def test_who_may_see_and_act(svc):
    client, project = await svc.created()
    other = new_id()
    task = (await svc.waiting(project))["id"]
    # Callers who cannot see the project: 404, exactly like a missing one.
    for headers in (
        svc.user(other, "product_owner"),
        svc.agent(other, ("analyst",)),
        svc.agent(client, ("analyst",), project_ids=[new_id()]),
    ):
        body = svc.problem(await svc.http.get(f"/v1/projects/{project}/workflow", headers=headers), 404)
        assert body["code"] == "workflow_not_found"
        svc.problem(await svc.http.post(f"/v1/tasks/{task}/claim", headers=headers), 404, "task_not_found")
    # An agent of the client without a workflows scope sees the project but may not read: 403, naming it.
    scopeless = svc.agent(client, ("analyst",), scopes=("projects:read",))
    for request in (
        svc.http.get(f"/v1/projects/{project}/workflow", headers=scopeless),
        svc.http.get(f"/v1/projects/{project}/sprint-status", headers=scopeless),
        svc.http.get(f"/v1/tasks/{task}", headers=scopeless),
        svc.http.get("/v1/tasks", headers=scopeless),
        svc.http.get("/v1/decisions", headers=scopeless),
        svc.http.get("/v1/workflow-definitions", headers=scopeless),
    ):
        r = await request
        svc.problem(r, 403, "insufficient_scope")
        assert 'scope="workflows:read"' in r.headers["WWW-Authenticate"]
    # Acting, the challenge names the scope acting needs (not the reading one, which would not do).
    r = await svc.http.post(f"/v1/tasks/{task}/claim", headers=scopeless)
    svc.problem(r, 403, "insufficient_scope")
    assert 'scope="workflows:write"' in r.headers["WWW-Authenticate"]
    # The client's auditor reads the workflow (as it reads the projects and documents) but does not act.
    auditor = svc.user(client, "auditor")
    assert (await svc.http.get(f"/v1/projects/{project}/workflow", headers=auditor)).status_code == 200
    assert task in {t["id"] for t in (await svc.http.get("/v1/tasks", headers=auditor)).json()["items"]}
    svc.problem(await svc.http.post(f"/v1/tasks/{task}/claim", headers=auditor), 403, "insufficient_role")
    missing = svc.problem(await svc.http.post(f"/v1/tasks/{new_id()}/claim", headers=svc.user(client)), 404)
    hidden = svc.problem(await svc.http.post(f"/v1/tasks/{task}/claim", headers=svc.user(other)), 404)

    def same(body, task_id):
        kept = {k: v for k, v in body.items() if k not in ("instance", "request_id")}
        return {**kept, "detail": kept["detail"].replace(str(task_id), "<id>")}

    assert same(missing, missing["instance"].split("/")[3]) == same(hidden, task)
    assert (
        await svc.http.get(f"/v1/projects/{project}/workflow", headers=svc.user(client, "viewer"))
    ).status_code == 200
    svc.problem(
        await svc.http.post(f"/v1/tasks/{task}/claim", headers=svc.user(client, "viewer")),
        403,
        "insufficient_role",
    )
    svc.problem(
        await svc.http.post(
            f"/v1/tasks/{task}/claim", headers=svc.agent(client, ("analyst",), scopes=("workflows:read",))
        ),
        403,
        "insufficient_scope",
    )
    body = svc.problem(
        await svc.http.post(f"/v1/tasks/{task}/claim", headers=svc.agent(client, ("pm", "wizard"))),
        403,
        "role_not_allowed",
    )
    assert "analyst" in body["detail"]
    assert "pm" in body["detail"]
    r = await svc.http.post(f"/v1/tasks/{task}/claim", headers=svc.agent(client, ("analyst",)))
    assert r.status_code == 200
    assert r.json()["state"] == "claimed"
    assert r.headers["ETag"]


async def test_two_concurrent_claims_exactly_one_wins(svc):
    client, project = await svc.created()
    task = (await svc.waiting(project))["id"]
    agents = [svc.agent(client, ("analyst",), sub=f"agent-{n}") for n in range(5)]
    responses = await asyncio.gather(*(svc.http.post(f"/v1/tasks/{task}/claim", headers=h) for h in agents))
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409, 409]
    loser = next(r for r in responses if r.status_code == 409)
    assert loser.json()["code"] == "task_already_claimed"
    claims = [e for e in await svc.outbox() if e["type"].endswith("task_claimed.v1")]
    assert len(claims) == 1


async def test_claim_lease_expires_and_another_agent_takes_over(svc):
    client, project = await svc.created()
    task = (await svc.waiting(project))["id"]
    a = svc.agent(client, ("analyst",), sub="agent-a")
    b = svc.agent(client, ("analyst",), sub="agent-b")
    r = await svc.http.post(f"/v1/tasks/{task}/claim", json={"lease_seconds": 2}, headers=a)
    assert r.status_code == 200
    svc.problem(await svc.http.post(f"/v1/tasks/{task}/claim", headers=b), 409, "task_already_claimed")
    await asyncio.sleep(2.2)
    listed = (await svc.http.get(f"/v1/tasks?project_id={project}&state=ready", headers=b)).json()["items"]
    assert [t["id"] for t in listed] == [task]
    assert listed[0]["claimed_by"] is None
    assert await LeaseSweeper(svc.sessions, 1).sweep_once() == 1  # the worker announces it ready again
    ready = [e for e in await svc.outbox() if e["type"].endswith("task_ready.v1")]
    assert ready[-1]["data"]["reason"] == "lease_expired"
    r = await svc.http.post(f"/v1/tasks/{task}/claim", headers=b)
    assert r.status_code == 200
    assert r.json()["claimed_by"] == "agent-b"
    doc = await svc.indexed(project, client, "prd")  # a stray document: no effect on this task
    svc.problem(
        await svc.http.post(f"/v1/tasks/{task}/complete", json={"document_id": str(doc)}, headers=a),
        409,
        "task_already_claimed",
    )


async def test_complete_checks_the_document(svc):
    client, project = await svc.created()
    task = (await svc.waiting(project))["id"]
    pm = svc.user(client, "member")
    svc.problem(await svc.http.post(f"/v1/tasks/{task}/complete", headers=pm), 422, "document_required")
    svc.problem(
        await svc.http.post(f"/v1/tasks/{task}/complete", json={"document_id": str(new_id())}, headers=pm),
        409,
        "document_not_indexed",
    )
    other_client, other_project = await svc.created()
    foreign = await svc.indexed(other_project, other_client, "project-brief")
    svc.problem(
        await svc.http.post(f"/v1/tasks/{task}/complete", json={"document_id": str(foreign)}, headers=pm),
        409,
        "document_not_indexed",
    )
    prd = await svc.indexed(project, client, "prd")
    svc.problem(
        await svc.http.post(f"/v1/tasks/{task}/complete", json={"document_id": str(prd)}, headers=pm),
        422,
        "document_kind_mismatch",
    )
    svc.problem(await svc.http.post(f"/v1/tasks/{task}/skip", headers=pm), 409, "task_not_optional")
    svc.problem(await svc.http.post(f"/v1/tasks/{task}/complete", json={"extra": 1}, headers=pm), 422)
    r = await svc.http.post(f"/v1/tasks/{task}/claim", headers=svc.agent(client, ("analyst",)))
    assert r.status_code == 200
    svc.problem(await svc.http.post(f"/v1/tasks/{task}/complete", headers=pm), 409, "task_already_claimed")
    brief = await svc.indexed(project, client, "project-brief")
    r = await svc.http.post(
        f"/v1/tasks/{task}/complete",
        json={"document_id": str(brief)},
        headers=svc.agent(client, ("analyst",)),
    )
    assert r.status_code == 200
    assert r.json()["state"] == "completed"
    # Who did what, in order. The indexing completed the claimed task before its holder named the
    # document (that retry adds nothing), and none of the refused attempts above left a trace.
    assert await svc.history(project) == [
        ("started", None, None),
        ("task_ready", "create_project_brief", None),
        ("document_recorded", None, None),  # the PRD that arrived early
        ("task_claimed", "create_project_brief", "agent-analyst"),
        ("document_recorded", None, None),
        ("task_completed", "create_project_brief", "workflows"),
        ("task_ready", "create_prd", None),
        ("task_completed", "create_prd", "workflows"),  # the early PRD completes the PM's task at once
        ("task_ready", "create_front_end_spec", None),
    ]


async def test_decisions_answered_by_people_or_agents_with_write(svc):
    client, project = await svc.created()
    for kind in ("project-brief", "prd", "front-end-spec"):
        await svc.indexed(project, client, kind)
    decision = await svc.waiting(project)
    assert decision["kind"] == "condition"
    assert decision["token"] == "user_wants_ai_generation"
    # Asked once, announced once, with what the asker needs to answer it; nobody has answered yet.
    [requested] = await svc.events("decision_requested")
    assert requested["subject"] == decision["id"]
    assert requested["data"]["decision_id"] == decision["id"]
    assert requested["data"]["project_id"] == str(project)
    assert requested["data"]["kind"] == "condition"
    assert requested["data"]["token"] == "user_wants_ai_generation"
    assert requested["data"]["question"].startswith("Generate an AI UI prompt")
    assert requested["data"]["question"] == decision["question"]
    assert requested["data"]["options"] == ["yes", "no"]
    assert requested["data"]["step_id"] == "create_v0_prompt"
    assert requested["data"]["roles"] == ["ux-expert"]
    assert await svc.events("decision_made") == []
    r = await svc.http.get(
        f"/v1/decisions?project_id={project}&state=open", headers=svc.user(client, "viewer")
    )
    assert [d["id"] for d in r.json()["items"]] == [decision["id"]]
    url = f"/v1/decisions/{decision['id']}"
    svc.problem(await svc.http.post(url, json={"answer": "no"}, headers=svc.user(client, "viewer")), 403)
    svc.problem(
        await svc.http.post(
            url, json={"answer": "no"}, headers=svc.agent(client, scopes=("workflows:read",))
        ),
        403,
    )
    svc.problem(
        await svc.http.post(url, json={"answer": "perhaps"}, headers=svc.user(client)), 422, "invalid_answer"
    )
    svc.problem(
        await svc.http.post(url, json={"answer": "no"}, headers={**svc.user(client), "If-Match": '"999"'}),
        412,
    )
    svc.problem(await svc.http.post(url, json={"answer": "no"}, headers=svc.user(other := new_id())), 404)
    assert other
    etag = (await svc.http.get(f"/v1/projects/{project}/workflow", headers=svc.user(client))).headers["ETag"]
    r = await svc.http.post(
        url, json={"answer": "no"}, headers={**svc.agent(client, ("ux-expert",)), "If-Match": etag}
    )
    assert r.status_code == 200
    assert r.json()["answer"] == "no"
    assert r.json()["answered_by"] == "agent-ux-expert"
    svc.problem(
        await svc.http.post(url, json={"answer": "yes"}, headers=svc.user(client)), 409, "decision_closed"
    )
    # The refused answers (wrong value, stale ETag, viewer, read-only agent, second answer) made nothing.
    [made] = await svc.events("decision_made")
    assert made["data"]["decision_id"] == decision["id"]
    assert made["data"]["token"] == "user_wants_ai_generation"
    assert made["data"]["step_id"] == "create_v0_prompt"
    assert made["data"]["answer"] == "no"
    assert made["data"]["answered_by"] == "agent-ux-expert"
    assert made["actor"]["subject"] == "agent-ux-expert"
    assert made["actor"]["kind"] == "agent"
    assert len(await svc.events("decision_requested", decision_id=decision["id"])) == 1
    types = await svc.event_types()
    assert types.index("decision_requested") < types.index("decision_made")
    assert (await svc.waiting(project))["step_id"] == "create_fullstack_architecture"
    # The history tells it in order: the indexing completed each document task, the agent answered
    # (the refused answers left no trace), and the answer skipped the conditional step.
    assert await svc.history(project) == [
        ("started", None, None),
        ("task_ready", "create_project_brief", None),
        ("document_recorded", None, None),
        ("task_completed", "create_project_brief", "workflows"),
        ("task_ready", "create_prd", None),
        ("document_recorded", None, None),
        ("task_completed", "create_prd", "workflows"),
        ("task_ready", "create_front_end_spec", None),
        ("document_recorded", None, None),
        ("task_completed", "create_front_end_spec", "workflows"),
        ("decision_requested", "create_v0_prompt", None),
        ("decision_made", "create_v0_prompt", "agent-ux-expert"),
        ("step_skipped", "create_v0_prompt", None),
        ("task_ready", "create_fullstack_architecture", None),
    ]
    entries = (await svc.workflow(project))["history"]
    assert [e["detail"]["kind"] for e in entries if e["event"] == "document_recorded"] == [
        "project-brief",
        "prd",
        "front-end-spec",
    ]
    made_entry = next(e for e in entries if e["event"] == "decision_made")
    assert (made_entry["decision_id"], made_entry["detail"]["answer"]) == (decision["id"], "no")


async def test_sprint_status_as_yaml_or_json(svc):
    client, project = await svc.created(kind="greenfield", type="service")
    for kind in ("project-brief", "prd", "architecture"):
        await svc.indexed(project, client, kind)
    user = svc.user(client)

    async def answer(value):
        d = await svc.waiting(project)
        [asked] = await svc.events("decision_requested", decision_id=d["id"])
        assert {k: asked["data"][k] for k in ("kind", "token", "question", "options", "step_id")} == {
            k: d[k] for k in ("kind", "token", "question", "options", "step_id")
        }
        assert asked["data"]["question"].endswith("?")
        assert await svc.events("decision_made", decision_id=d["id"]) == []
        r = await svc.http.post(f"/v1/decisions/{d['id']}", json={"answer": value}, headers=user)
        assert r.status_code == 200, r.text
        [made] = await svc.events("decision_made", decision_id=d["id"])
        assert (made["data"]["answer"], made["data"]["answered_by"]) == (value, "user-member")
        assert (made["data"]["token"], made["data"]["step_id"]) == (d["token"], d["step_id"])
        assert made["actor"]["kind"] == "user"

    async def complete(**body):
        t = await svc.waiting(project)
        r = await svc.http.post(f"/v1/tasks/{t['id']}/complete", json=body, headers=user)
        assert r.status_code == 200, r.text

    await answer("no")  # architecture suggests PRD changes?
    await complete()  # PO validates
    await answer("no")  # issues?
    await complete()  # shard
    tokens = [e["data"]["token"] for e in await svc.events("decision_requested")]
    assert tokens == ["architecture_suggests_prd_changes", "po_checklist_issues"]
    assert len(await svc.events("decision_made")) == 2
    # What people did, in order, among the engine's own entries.
    assert [(e, step, who) for e, step, who in await svc.history(project) if who != "workflows" and who] == [
        ("decision_made", "update_prd", "user-member"),
        ("task_completed", "validate_all_artifacts", "user-member"),
        ("decision_made", "update_any_flagged_documents", "user-member"),
        ("task_completed", "shard_documents", "user-member"),
    ]
    story = await svc.indexed(project, client, "story", title="User Authentication")
    r = await svc.http.get(
        f"/v1/projects/{project}/sprint-status", headers={**user, "Accept": "application/yaml"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/yaml")
    parsed = yaml.safe_load(r.text)
    assert parsed["development_status"] == {
        "epic-1": "in-progress",
        "1-1-user-authentication": "ready-for-dev",
        "epic-1-retrospective": "optional",
    }
    assert parsed["project"] == "Plant Tracker"
    r = await svc.http.get(f"/v1/projects/{project}/sprint-status", headers=user)
    assert r.json()["development_status"]["1-1-user-authentication"] == "ready-for-dev"
    assert story
