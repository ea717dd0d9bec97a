"""``/v1/workflow-definitions``: built-ins at startup, reading, uploads (admins), versions, 422s."""

from __future__ import annotations

from sqlalchemy import func, select
from workflows.definitions.models import DefinitionVersionRow
from workflows.definitions.service import load_builtin

YAML = {"Content-Type": "application/yaml"}

CUSTOM = """\
workflow:
  id: tiny-flow
  name: Tiny
  sequence:
    - agent: analyst
      creates: project-brief.md
    - agent: pm
      creates: prd.md
      requires: project-brief.md
"""


async def version_count(svc) -> int:
    async with svc.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(DefinitionVersionRow)) or 0)


async def test_builtins_are_loaded_once(svc):
    r = await svc.http.get("/v1/workflow-definitions", headers=svc.user("c"))
    assert r.status_code == 200
    ids = [d["id"] for d in r.json()["items"]]
    assert ids == sorted(
        [
            "bmad-method-brownfield",
            "bmad-method-greenfield",
            "brownfield-fullstack",
            "brownfield-service",
            "brownfield-ui",
            "greenfield-fullstack",
            "greenfield-service",
            "greenfield-ui",
        ]
    )
    assert await version_count(svc) == 8
    assert await load_builtin(svc.sessions) == 0  # a restart (or a second replica) adds nothing
    assert await version_count(svc) == 8


async def test_pagination_and_authentication(svc):
    r = await svc.http.get("/v1/workflow-definitions?limit=3", headers=svc.user("c"))
    page1 = r.json()
    assert len(page1["items"]) == 3
    assert page1["next_cursor"]
    r = await svc.http.get(
        f"/v1/workflow-definitions?limit=10&cursor={page1['next_cursor']}", headers=svc.user("c")
    )
    assert next(d["id"] for d in r.json()["items"]) > page1["items"][-1]["id"]
    assert r.json()["next_cursor"] is None
    svc.problem(await svc.http.get("/v1/workflow-definitions"), 401)
    # A cursor that decodes but names no position (base64 of {"x":1}) is refused like any bad one.
    foreign = await svc.http.get("/v1/workflow-definitions?cursor=eyJ4IjoxfQ", headers=svc.user("c"))
    svc.problem(foreign, 400, "invalid_cursor")


async def test_get_one_with_steps_versions_and_diagram(svc):
    r = await svc.http.get("/v1/workflow-definitions/greenfield-fullstack", headers=svc.user("c"))
    assert r.status_code == 200
    body = r.json()
    assert body["version"] == 1
    assert body["versions"][0]["origin"] == "builtin"
    assert body["content_hash"].startswith("sha256:")
    assert body["flow_diagram"].startswith("```mermaid")
    steps = body["model"]["sequences"][0]["steps"]
    assert steps[0]["roles"] == ["analyst"]
    assert steps[0]["creates"][0]["kind"] == "project-brief"
    assert "workflow:" in body["source"]
    svc.problem(
        await svc.http.get("/v1/workflow-definitions/nope", headers=svc.user("c")),
        404,
        "workflow_definition_not_found",
    )
    svc.problem(
        await svc.http.get("/v1/workflow-definitions/greenfield-fullstack?version=9", headers=svc.user("c")),
        404,
    )


# v2 puts a UX step between the brief and the PRD: after the brief, v1 asks the PM, v2 the UX expert.
CUSTOM_V2 = CUSTOM.replace("name: Tiny", "name: Tiny v2").replace(
    "    - agent: pm\n",
    "    - agent: ux-expert\n      creates: front-end-spec.md\n      requires: project-brief.md\n"
    "    - agent: pm\n",
)


async def test_upload_versions_and_running_instances_keep_theirs(svc):
    r = await svc.http.post("/v1/workflow-definitions", content=CUSTOM, headers={**svc.admin, **YAML})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    assert r.json()["versions"][0]["origin"] == "upload"
    # The same content again: nothing new.
    r = await svc.http.post("/v1/workflow-definitions", content=CUSTOM, headers={**svc.admin, **YAML})
    assert r.status_code == 200
    assert r.json()["latest_version"] == 1
    client, older = await svc.created(workflow_id="tiny-flow")
    assert [s["id"] for s in (await svc.workflow(older))["steps"]] == [
        "create_project_brief",
        "create_prd",
        "workflow_end",
    ]
    r = await svc.http.post("/v1/workflow-definitions", json={"source": CUSTOM_V2}, headers=svc.admin)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    assert r.json()["name"] == "Tiny v2"
    assert [s["id"] for s in r.json()["model"]["sequences"][0]["steps"]] == [
        "create_project_brief",
        "create_front_end_spec",
        "create_prd",
        "workflow_end",
    ]
    _, newer = await svc.created(client, workflow_id="tiny-flow")
    assert (await svc.workflow(older))["definition_version"] == 1
    assert (await svc.workflow(newer))["definition_version"] == 2

    # Both write their brief: the instance started on v1 goes on to v1's PM step, the new one to the
    # UX step only v2 has.
    for project in (older, newer):
        await svc.indexed(project, client, "project-brief")
    old_next, new_next = await svc.waiting(older), await svc.waiting(newer)
    assert (old_next["step_id"], old_next["roles"]) == ("create_prd", ["pm"])
    assert (new_next["step_id"], new_next["roles"]) == ("create_front_end_spec", ["ux-expert"])
    assert [s["id"] for s in (await svc.workflow(older))["steps"]] == [
        "create_project_brief",
        "create_prd",
        "workflow_end",
    ]
    # The PRD ends v1; v2 still wants its PRD after the spec.
    await svc.indexed(older, client, "prd")
    done = await svc.workflow(older)
    assert (done["status"], done["outcome"]) == ("completed", "completed")
    await svc.indexed(newer, client, "front-end-spec")
    assert (await svc.waiting(newer))["step_id"] == "create_prd"
    await svc.indexed(newer, client, "prd")
    assert (await svc.workflow(newer))["status"] == "completed"
    assert "create_front_end_spec" not in {s["id"] for s in done["steps"]}


async def test_only_admins_upload(svc):
    svc.problem(
        await svc.http.post(
            "/v1/workflow-definitions", content=CUSTOM, headers={**svc.user("c", "product_owner"), **YAML}
        ),
        403,
        "admin_required",
    )
    svc.problem(await svc.http.post("/v1/workflow-definitions", content=CUSTOM, headers=YAML), 401)


async def test_malformed_uploads_are_422_naming_line_and_step_and_store_nothing(svc):
    before = await version_count(svc)
    broken = "workflow:\n  id: broken\n  sequence:\n    - agent: pm\n      creates: [prd.md\n"
    body = svc.problem(
        await svc.http.post("/v1/workflow-definitions", content=broken, headers={**svc.admin, **YAML}),
        422,
        "invalid_workflow_definition",
    )
    assert body["problems"][0]["line"] == 6
    assert "not valid YAML" in body["problems"][0]["reason"]
    shape = "workflow:\n  id: shapes\n  sequence:\n    - agent: pm\n      creates: prd.md\n    - [1, 2]\n"
    body = svc.problem(
        await svc.http.post("/v1/workflow-definitions", content=shape, headers={**svc.admin, **YAML}), 422
    )
    assert body["problems"] == [{"line": 6, "step": "step 2", "reason": body["problems"][0]["reason"]}]
    assert "unknown step shape" in body["problems"][0]["reason"]
    assert "line 6, step 2" in body["detail"]
    role = "workflow:\n  id: roles\n  sequence:\n    - agent: game-wizard\n      creates: prd.md\n"
    body = svc.problem(
        await svc.http.post("/v1/workflow-definitions", content=role, headers={**svc.admin, **YAML}), 422
    )
    assert "unknown agent role 'game-wizard'" in body["problems"][0]["reason"]
    svc.problem(
        await svc.http.post("/v1/workflow-definitions", content=b"\xff\xfe", headers={**svc.admin, **YAML}),
        422,
    )
    svc.problem(
        await svc.http.post(
            "/v1/workflow-definitions", content=b"x", headers={**svc.admin, "Content-Type": "image/png"}
        ),
        415,
    )
    svc.problem(await svc.http.post("/v1/workflow-definitions", json={"src": "x"}, headers=svc.admin), 422)
    not_json = {**svc.admin, "Content-Type": "application/json"}
    svc.problem(await svc.http.post("/v1/workflow-definitions", content=b"{oops", headers=not_json), 400)
    assert await version_count(svc) == before


async def test_openapi_lists_every_endpoint(svc):
    r = await svc.http.get("/openapi.json")
    paths = set(r.json()["paths"])
    assert {
        "/v1/workflow-definitions",
        "/v1/workflow-definitions/{definition_id}",
        "/v1/projects/{project_id}/workflow",
        "/v1/projects/{project_id}/sprint-status",
        "/v1/tasks",
        "/v1/tasks/{task_id}/claim",
        "/v1/tasks/{task_id}/complete",
        "/v1/tasks/{task_id}/skip",
        "/v1/tasks/{task_id}/fail",
        "/v1/decisions",
        "/v1/decisions/{decision_id}",
    } <= paths
