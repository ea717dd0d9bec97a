"""Route x caller matrix against the running platform: every route of the gateway's table, called by every
kind of caller through the gateway, each answer compared with the status the specification gives it.

Callers (the columns): anonymous; the platform admin; the ``product_owner``, ``member``, ``viewer`` and
``auditor`` of client A; an outsider (``product_owner`` of client B); one agent of client A per scope, holding
only that scope. Identity refuses an agent without scopes (checked in the setup), so a one-scope agent is
the least an agent can hold, and for each scope the other seven agents are the callers without it.

Expectations come from the issues and the services' documented rules, not from recorded answers. ``Rule``
spells them out per request:
- anonymous: 401 from the gateway, except on public routes (the same answer for everyone there);
- a caller who cannot see client A at all (the outsider): 404 for A's objects, exactly like missing ones;
- platform admins: everything;
- a member of A, or an agent of A, without the right: 403 in every service (``insufficient_role`` or
  ``insufficient_scope``), except where the spec says 422 (projects: fields the caller may not set).
Where the spec is silent and a service documents a rule, the rule is the expectation and its comment names
the source. A cell where the code disagrees with the spec is a strict xfail saying why.

Requests repeat safely: whatever a caller creates has a name of its own, deletions allowed to a caller hit a
fresh object the admin made for that cell (a refused one aims at the shared object with an ``If-Match`` that
never matches, so a wrongly allowed delete changes nothing), a PATCH sends the ``If-Match`` the admin just
read, a task claimed is failed again by its claimer (the step gets a new ready task), and each answered
decision opens the next one. Slow: ``make test-system``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from gateway.routes import ROUTES, RouteTable

from .journey_plan import ALL_ROLES, ALL_SCOPES, retry_until_known

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # the first cell waits for the platform

PASSWORD = "Matrix-passw0rd-1"
SCOPES = tuple(ALL_SCOPES)
USER_ROLES = ("product_owner", "member", "viewer", "auditor")
PRINCIPALS = ("anonymous", "admin", *USER_ROLES, "outsider", *(f"agent:{s}" for s in SCOPES))
SHORT = {"anonymous": "anon", "admin": "admin", "product_owner": "PO", "member": "mem", "viewer": "view",
         "auditor": "aud", "outsider": "out", "agent:projects:read": "pr", "agent:projects:write": "pw",
         "agent:documents:read": "dr", "agent:documents:write": "dw", "agent:workflows:read": "wr",
         "agent:workflows:write": "ww", "agent:audit:read": "ar", "agent:search": "se"}  # fmt: skip
STALE = '"0"'  # an If-Match no version ever has (versions start at 1)
UPSTREAMS = ("identity", "projects", "documents", "workflows", "audit")
SAMPLE_ID = "0190f1d2-0000-7000-8000-0000000000a1"


# -- the policy ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """The expected status of one request for each caller: ``ok`` for those allowed, a refusal for the rest.

    Allowed: admins (``admin``), A's members whose role is in ``roles``, A's agents holding one of
    ``scopes``. Refused: other members of A get ``role_denied``, other agents of A ``scope_denied``, the
    outsider ``outsider``; ``cells`` overrides single callers."""

    ok: int
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    role_denied: int = 403
    scope_denied: int = 403
    outsider: int = 404
    admin: bool = True
    cells: Mapping[str, int] = field(default_factory=dict)

    def __call__(self, who: str) -> int:
        if who in self.cells:
            return self.cells[who]
        if who == "anonymous":
            return 401
        if who == "admin":
            return self.ok if self.admin else 403
        if who == "outsider":
            return self.outsider
        if who in USER_ROLES:
            return self.ok if who in self.roles else self.role_denied
        return self.ok if who.removeprefix("agent:") in self.scopes else self.scope_denied


def _set(*names: str) -> frozenset[str]:
    return frozenset(names)


ANY_ROLE, ANY_SCOPE = _set(*USER_ROLES), _set(*SCOPES)


def public(ok: int) -> Rule:
    return Rule(ok, ANY_ROLE, ANY_SCOPE, outsider=ok, cells={"anonymous": ok})


def admins_only(ok: int) -> Rule:
    """Platform-level actions: every signed-in caller but an admin gets 403 (there is no tenant to hide)."""
    return Rule(ok, outsider=403)


# identity (issue 3; identity's routers): users are the admins' business, a user sees itself; a client's
# agents and members are managed by its product owners; agents act by scope and no scope manages identity.
USERS_ADMIN = admins_only(200)
ME = Rule(200, ANY_ROLE, outsider=200, scope_denied=404)  # documented: "the caller is an agent, not a user"
# PATCH the member's own record with {"status": ...}: the member sees itself but only admins change status
# (documented 403); anyone else does not see that user at all (404, "a user sees itself").
USER_STATUS = Rule(200, role_denied=404, scope_denied=404, outsider=404, cells={"member": 403})
MANAGE_CLIENT = Rule(200, _set("product_owner"))  # agents, members list
MEMBERS_READ = Rule(200, ANY_ROLE)  # "every member of a client may see who else is in it"

# projects (issue 4): members of any role read a client and its projects (the auditor too: policy.py, the spec
# names no exception), agents need projects:read / projects:write; product owners and admins change projects;
# only admins create, archive and delete clients; fields the caller may not set → 422.
PROJECT_READ = Rule(200, ANY_ROLE, _set("projects:read"))
PROJECTS_LIST = replace(PROJECT_READ, outsider=200)  # lists: the outsider gets its own (checked: not A's)
CLIENT_PATCH = Rule(200, _set("product_owner"), role_denied=422, cells={"agent:projects:write": 422})
CLIENT_DELETE = Rule(204)
PROJECT_WRITE = Rule(200, _set("product_owner"), _set("projects:write"))
PROJECT_PATCH = replace(PROJECT_WRITE, role_denied=422)

# documents (issue 5, documents README): product owners and members write, viewers and auditors read; agents
# by documents:read / documents:write; search with search or documents:read.
DOCS_READ = Rule(200, ANY_ROLE, _set("documents:read", "documents:write"))
DOCS_WRITE = Rule(200, _set("product_owner", "member"), _set("documents:write"))
SEARCH = Rule(200, ANY_ROLE, _set("search", "documents:read"), outsider=200)

# workflows (issue 6, workflows' access.py): product owners and members act, viewers and auditors read (as
# they read projects and documents), agents by workflows:read / workflows:write, for lists and definitions
# too; definitions are the platform's, readable by any signed-in person.
WF_SCOPES = _set("workflows:read", "workflows:write")
WF_READ = Rule(200, ANY_ROLE, WF_SCOPES)
WF_ACT = Rule(200, _set("product_owner", "member"), _set("workflows:write"))
WF_LIST = replace(WF_READ, outsider=200)  # the outsider gets its own client's tasks (checked: not A's)

# audit (issue 7): admins, A's auditor and product owner, A's agents with audit:read; the platform chain is
# the admins' alone (404 for everyone else, after the agents' scope check); the producers report holds
# counters only, for admins and anyone who audits some client (audit README).
AUDIT_READ = Rule(200, _set("product_owner", "auditor"), _set("audit:read"))
PLATFORM_CHAIN = Rule(200, role_denied=404, cells={"agent:audit:read": 404})
PRODUCERS = replace(AUDIT_READ, outsider=200)


# -- the rows ------------------------------------------------------------------------------------------------
@dataclass
class Call:
    """What one cell sends besides the row's method and path: ids for the path, and request keywords."""

    ids: dict[str, str] = field(default_factory=dict)
    kw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # ``{name}`` from ``World.ids`` or the cell's ``Call.ids``; query strings allowed
    rule: Rule
    call: Callable[[World, str], Call] | None = None
    after: Callable[[World, str, httpx.Response], None] | None = None
    check: Callable[[World, str, httpx.Response], None] | None = None  # on an allowed answer
    only: tuple[str, ...] = PRINCIPALS
    gap: bool = False  # a documented operation the route table does not route (see ``known``)
    known: Mapping[str, str] = field(default_factory=dict)  # caller ("*": all) -> why the code is wrong

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def _slug(who: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", who.lower()).strip("-")


def _json(make: Callable[[World, str], Any]) -> Callable[[World, str], Call]:
    return lambda w, who: Call(kw={"json": make(w, who)})


def _fresh_etag(w: World, path: str) -> dict[str, str]:
    r = w.admin.request("GET", path)
    assert r.status_code == 200, r.text
    return {"If-Match": r.headers["ETag"]}


def _patch(path: str, make: Callable[[World, str], Any]) -> Callable[[World, str], Call]:
    return lambda w, who: Call(kw={"json": make(w, who), "headers": _fresh_etag(w, path.format(**w.ids))})


def _delete(
    rule: Rule, shared: str, create: Callable[[World], str], read: str
) -> Callable[[World, str], Call]:
    """A fresh object (made by the admin) for a caller allowed to delete; else the shared one, guarded."""

    def call(w: World, who: str) -> Call:
        if rule(who) != 204:
            return Call(ids={"target": w.ids[shared]}, kw={"headers": {"If-Match": STALE}})
        target = create(w)
        return Call(ids={"target": target}, kw={"headers": _fresh_etag(w, read.format(target=target))})

    return call


def _refresh_grant(w: World, who: str) -> Call:
    with w.helpers.http_client(w.base) as c:
        r = c.post("/v1/auth/login", json={"email": w.login_email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return Call(kw={"data": {"grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"]}})


def _ready_task(w: World, who: str) -> Call:
    wf = w.admin.get(f"/v1/projects/{w.ids['project']}/workflow")
    ready = [t["id"] for t in wf["open_tasks"] if t["state"] == "ready"]
    assert ready, wf["open_tasks"]
    return Call(ids={"task": ready[0]}, kw={"json": {}})


def _release(w: World, who: str, r: httpx.Response) -> None:
    if r.status_code == 200:  # give the task back: a failed attempt gets the step a fresh ready task
        w.api[who].post(f"/v1/tasks/{r.json()['id']}/fail", 200, json={"reason": "route matrix"})


def _open_decision(w: World, who: str) -> Call:
    wf = w.admin.get(f"/v1/projects/{w.ids['decisions_project']}/workflow")
    assert wf["open_decisions"], wf
    return Call(ids={"decision": wf["open_decisions"][0]["id"]}, kw={"json": {"answer": "no"}})


def _reindex_job(w: World, who: str) -> Call:
    if "reindex_job" not in w.ids:
        w.ids["reindex_job"] = w.admin.post("/v1/admin/reindex", 202, json={})["id"]
    return Call()


def _lists(key: str, target: str, readers: Rule) -> Callable[[World, str, httpx.Response], None]:
    """A list answered 200 shows ``target`` exactly to the callers ``readers`` lets read it."""

    def check(w: World, who: str, r: httpx.Response) -> None:
        found = w.ids[target] in {str(item[key]) for item in r.json()["items"]}
        assert found == (readers(who) == 200), f"{who}: {target} {'listed' if found else 'not listed'}"

    return check


def _sees_work(w: World, who: str, r: httpx.Response) -> None:
    """The project's tasks are listed exactly to the callers who may read its workflow."""
    listed = bool(r.json()["items"])
    assert listed == (WF_READ(who) == 200), f"{who}: {'sees' if listed else 'does not see'} the tasks"


def _new_project(w: World) -> str:
    body = {"client_id": w.ids["client"], "name": f"Doomed {uuid.uuid4().hex[:8]}", "kind": "greenfield",
            "type": "service"}  # fmt: skip
    return str(w.admin.post("/v1/projects", 201, json=body)["id"])


def _new_client(w: World) -> str:
    slug = f"doomed-{uuid.uuid4().hex[:8]}"
    return str(w.admin.post("/v1/clients", 201, json={"name": slug, "slug": slug})["id"])


def _new_document(w: World) -> str:
    body = {"title": "Doomed", "kind": "reference", "content": f"# Doomed\n\n{uuid.uuid4().hex}\n"}
    return str(w.admin.post(f"/v1/projects/{w.ids['project']}/documents", 201, json=body)["id"])


def _definition(tag: str, prefix: str, questions: int) -> str:
    steps = "".join(
        f"    - agent: pm\n      action: decide question {i}\n      condition: matrix_q{i}\n"
        for i in range(1, questions + 1)
    )
    return (
        f"workflow:\n  id: {prefix}-{tag}\n  name: Route matrix {prefix}\n  sequence:\n{steps}"
        "    - step: workflow_end\n      action: done\n"
    )


GATEWAY_ONLY = ("anonymous", "admin")
ROWS: tuple[Row, ...] = (
    # the gateway's own endpoints (covered trivially)
    Row("GET", "/healthz", public(200), only=GATEWAY_ONLY),
    Row("GET", "/readyz", public(200), only=GATEWAY_ONLY),
    Row("GET", "/openapi.json", public(200), only=GATEWAY_ONLY),
    Row("GET", "/docs", public(200), only=GATEWAY_ONLY),
    # identity
    Row("POST", "/v1/auth/login", public(200), _json(lambda w, who: {"email": w.login_email, "password": PASSWORD})),
    Row("POST", "/v1/auth/token", public(200), _refresh_grant),
    Row("POST", "/v1/auth/logout", public(204), _json(lambda w, who: {"refresh_token": uuid.uuid4().hex})),
    Row("GET", "/.well-known/jwks.json", public(200)),
    Row("GET", "/v1/auth/keys", USERS_ADMIN),
    Row("GET", "/v1/users", USERS_ADMIN),
    Row("POST", "/v1/users", admins_only(201), _json(lambda w, who: {
        "email": f"made.by.{_slug(who)}.{w.tag}@example.org", "password": PASSWORD, "display_name": who})),
    Row("GET", "/v1/users/me", ME),
    Row("PATCH", "/v1/users/{member_user}", USER_STATUS, _json(lambda w, who: {"status": "active"})),
    Row("GET", "/v1/clients/{client}/agents", MANAGE_CLIENT),
    Row("POST", "/v1/clients/{client}/agents", replace(MANAGE_CLIENT, ok=201), _json(lambda w, who: {
        "name": f"made by {who}", "scopes": ["projects:read"]})),
    Row("GET", "/v1/clients/{client}/members", MEMBERS_READ),
    Row("PUT", "/v1/clients/{client}/members/{spare_user}", MANAGE_CLIENT,
        _json(lambda w, who: {"role": "viewer"})),  # already a viewer: no change for anyone
    # projects
    Row("GET", "/v1/clients?limit=100", PROJECTS_LIST, check=_lists("id", "client", PROJECT_READ)),
    Row("POST", "/v1/clients", admins_only(201), _json(lambda w, who: {
        "name": f"Made by {who}", "slug": f"made-{_slug(who)}-{w.tag}"})),
    Row("GET", "/v1/clients/{client}", PROJECT_READ),
    Row("PATCH", "/v1/clients/{client}", CLIENT_PATCH,
        _patch("/v1/clients/{client}", lambda w, who: {"metadata": {"patched_by": who}})),
    Row("DELETE", "/v1/clients/{target}", CLIENT_DELETE,
        _delete(CLIENT_DELETE, "client", _new_client, "/v1/clients/{target}")),
    Row("GET", "/v1/projects?limit=100", PROJECTS_LIST, check=_lists("id", "project", PROJECT_READ)),
    Row("POST", "/v1/projects", replace(PROJECT_WRITE, ok=201), _json(lambda w, who: {
        "client_id": w.ids["client"], "name": f"Made by {who}", "kind": "greenfield", "type": "service"})),
    Row("GET", "/v1/projects/{project}", PROJECT_READ),
    Row("PATCH", "/v1/projects/{project}", PROJECT_PATCH,
        _patch("/v1/projects/{project}", lambda w, who: {"description": f"patched by {who}"})),
    Row("DELETE", "/v1/projects/{target}", replace(PROJECT_WRITE, ok=204),
        _delete(replace(PROJECT_WRITE, ok=204), "project", _new_project, "/v1/projects/{target}")),
    # documents
    Row("GET", "/v1/projects/{project}/documents", DOCS_READ),
    Row("POST", "/v1/projects/{project}/documents", replace(DOCS_WRITE, ok=201), _json(lambda w, who: {
        "title": f"By {who}", "kind": "reference", "content": f"# By {who}\n\nWritten by {who} ({w.tag}).\n"})),
    Row("GET", "/v1/documents/{document}", DOCS_READ),
    Row("PATCH", "/v1/documents/{document}", DOCS_WRITE,
        _patch("/v1/documents/{document}", lambda w, who: {"tags": [_slug(who)]})),
    Row("DELETE", "/v1/documents/{target}", replace(DOCS_WRITE, ok=204),
        _delete(replace(DOCS_WRITE, ok=204), "document", _new_document, "/v1/documents/{target}")),
    Row("POST", "/v1/search", SEARCH, _json(lambda w, who: {
        "query": w.keyword, "mode": "keyword", "project_ids": [w.ids["project"]]}),
        check=_lists("document_id", "document", replace(SEARCH, outsider=404))),
    Row("POST", "/v1/admin/reindex", admins_only(202), _json(lambda w, who: {})),
    Row("GET", "/v1/admin/reindex/{reindex_job}", admins_only(200), _reindex_job),
    # workflows
    Row("GET", "/v1/projects/{project}/workflow", WF_READ),
    Row("GET", "/v1/projects/{project}/sprint-status", WF_READ),
    Row("GET", "/v1/tasks?project_id={project}", WF_LIST, check=_sees_work),
    Row("POST", "/v1/tasks/{task}/claim", WF_ACT, _ready_task, after=_release),
    Row("POST", "/v1/decisions/{decision}", WF_ACT, _open_decision),
    Row("GET", "/v1/workflow-definitions", WF_LIST),
    Row("POST", "/v1/workflow-definitions", admins_only(201), lambda w, who: Call(kw={
        "content": _definition(w.tag, "matrix-upload", 1), "headers": {"Content-Type": "application/yaml"}})),
    # audit
    Row("GET", "/v1/audit/public-key", public(200)),
    Row("GET", "/v1/audit/public-keys", public(200)),
    Row("GET", "/v1/audit/events?client_id={client}", AUDIT_READ),  # issue 7's name (alias of /entries)
    Row("GET", "/v1/audit/entries?client_id=platform", PLATFORM_CHAIN),
    Row("GET", "/v1/audit/producers", PRODUCERS),
)  # fmt: skip


# -- the world the requests are made in ----------------------------------------------------------------------
@dataclass
class World:
    platform: Any
    helpers: Any
    tag: str
    base: str
    api: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    login_email: str = ""
    keyword: str = ""

    @property
    def admin(self) -> Any:
        return self.api["admin"]

    def poll(self, what: str, fn: Callable[[], Any], timeout: float = 90.0) -> Any:
        return self.helpers.poll(what, fn, timeout=timeout, platform=self.platform)

    def created(self, what: str, send: Callable[[], httpx.Response], timeout: float = 60.0) -> Any:
        """The body of ``send()``'s first 201, retried while another service has not caught up."""
        deadline = time.monotonic() + timeout
        while (r := send()).status_code != 201 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert r.status_code == 201, f"{what}: {r.status_code} {r.text[:500]}"
        return r.json()


RESULTS: dict[tuple[str, str], tuple[int, int]] = {}  # (row label, caller) -> (got, expected)


@pytest.fixture(scope="module")
def world(platform: Any, helpers: Any) -> Iterator[World]:
    started = time.monotonic()
    base = platform.gateway_url
    w = World(platform, helpers, uuid.uuid4().hex[:6], base)
    w.api["anonymous"] = helpers.Api(base)
    w.api["admin"] = admin = helpers.login(base, platform.admin_email, platform.admin_password, "admin")
    for key, name in (("client", "A"), ("other_client", "B")):
        slug = f"matrix-{name.lower()}-{w.tag}"
        w.ids[key] = admin.post("/v1/clients", 201, json={"name": f"Matrix {name}", "slug": slug})["id"]

    people = {role: ("client", role) for role in USER_ROLES}
    people |= {"outsider": ("other_client", "product_owner"), "spare": ("client", "viewer"), "login": None}
    emails = {}
    for name, membership in people.items():
        emails[name] = f"{_slug(name)}.matrix.{w.tag}@example.org"
        user = admin.post(
            "/v1/users", 201, json={"email": emails[name], "password": PASSWORD, "display_name": name}
        )
        w.ids[f"{name}_user"] = user["id"]
        if membership is not None:
            client, role = w.ids[membership[0]], membership[1]
            retry_until_known(
                lambda c=client, u=user["id"], r=role: admin.request(
                    "PUT", f"/v1/clients/{c}/members/{u}", json={"role": r}
                ),
                f"membership of {name}",
            )
    w.login_email = emails["login"]
    agents = f"/v1/clients/{w.ids['client']}/agents"
    refused = admin.request("POST", agents, json={"name": "scopeless", "scopes": []})
    assert refused.status_code == 422, f"an agent without scopes: {refused.status_code} {refused.text[:300]}"
    for scope in SCOPES:
        agent = admin.post(
            agents, 201, json={"name": f"matrix {scope}", "scopes": [scope], "bmad_roles": ALL_ROLES}
        )
        w.api[f"agent:{scope}"] = helpers.agent_login(
            base, agent["id"], agent["client_secret"], f"agent:{scope}"
        )
    for name in (*USER_ROLES, "outsider"):  # after the memberships, so the tokens carry them
        w.api[name] = helpers.login(base, emails[name], PASSWORD, name)

    # A project whose workflow has a ready task, one whose workflow asks a question after another, and an
    # indexed document with a word nothing else has.
    yaml = {"Content-Type": "application/yaml"}
    admin.post(
        "/v1/workflow-definitions", 201, content=_definition(w.tag, "matrix-decisions", 24), headers=yaml
    )
    po = w.api["product_owner"]
    for key, kind in (("project", "fullstack"), ("decisions_project", f"matrix-decisions-{w.tag}")):
        body = {
            "client_id": w.ids["client"],
            "name": f"Matrix {key} {w.tag}",
            "kind": "greenfield",
            "type": kind,
        }
        # Retried: a service may learn of the new workflow (or, for documents, the project) by events.
        w.ids[key] = w.created(f"the {key}", lambda b=body: po.request("POST", "/v1/projects", json=b))["id"]
    w.keyword = f"quokka{w.tag}"
    content = f"# Matrix notes\n\n## Fauna\n\nThe {w.keyword} crossed the garden at dawn.\n"
    documents = f"/v1/projects/{w.ids['project']}/documents"
    doc = w.created(
        "the document", lambda: po.request("POST", documents, json={"title": "Notes", "content": content})
    )
    w.ids["document"] = doc["id"]

    def workflow(key: str, part: str) -> Any:
        r = admin.request("GET", f"/v1/projects/{w.ids[key]}/workflow")
        return r.status_code == 200 and r.json()[part]

    w.poll("the project's first task", lambda: workflow("project", "open_tasks"))
    w.poll(
        "the first question of the decisions workflow",
        lambda: workflow("decisions_project", "open_decisions"),
    )
    w.poll(
        "the document to be indexed", lambda: admin.get(f"/v1/documents/{doc['id']}")["status"] == "indexed"
    )
    print(f"\nroute matrix: world ready in {time.monotonic() - started:.1f} s")
    yield w
    for api in w.api.values():
        api.close()
    helpers.report("route x caller matrix", _summary())


# -- the tests -----------------------------------------------------------------------------------------------
class StatusMismatch(AssertionError):
    pass


def _cells() -> Iterator[Any]:
    for row in ROWS:
        for who in row.only:
            reason = row.known.get(who) or row.known.get("*")
            marks = [pytest.mark.xfail(strict=True, raises=StatusMismatch, reason=reason)] if reason else []
            yield pytest.param(row, who, marks=marks, id=f"{row.label} [{who}]")


@pytest.mark.parametrize(("row", "who"), list(_cells()))
def test_cell(world: World, row: Row, who: str) -> None:
    call = row.call(world, who) if row.call else Call()
    path = row.path.format(**{**world.ids, **call.ids})
    response = world.api[who].request(row.method, path, **call.kw)
    if row.after is not None:
        row.after(world, who, response)
    expected = row.rule(who)
    RESULTS[(row.label, who)] = (response.status_code, expected)
    if response.status_code != expected:
        raise StatusMismatch(
            f"{who}: {row.method} {path} → {response.status_code}, the policy says {expected}: "
            f"{response.text[:500]}"
        )
    if row.check is not None and 200 <= expected < 300:
        row.check(world, who, response)


def _pattern_of(method: str, path: str, table: RouteTable) -> str | None:
    concrete = re.sub(r"\{[^}]+\}", SAMPLE_ID, path.split("?", 1)[0])
    route, _ = table.resolve(concrete, method)
    return route.pattern if route is not None else None


def test_every_route_of_the_table_has_a_row() -> None:
    """A route added to the table without a row here fails; so does a row the table does not route,
    unless it is a known gap (whose cells are strict xfails)."""
    table = RouteTable()
    covered = set()
    for row in ROWS:
        pattern = _pattern_of(row.method, row.path, table)
        assert (pattern is None) == row.gap, f"{row.label}: routed to {pattern}, gap={row.gap}"
        if pattern is not None:
            covered.add(pattern)
    assert covered == {route.pattern for route in ROUTES}, "routes without a row in the matrix"
    assert set(PRINCIPALS) == set(SHORT)


@pytest.mark.parametrize("service", UPSTREAMS)
def test_every_operation_of_a_service_is_routed_to_it(platform: Any, service: str) -> None:
    """Each public operation a service documents reaches it through the gateway (no forgotten route)."""
    table = RouteTable()
    doc = httpx.get(f"{platform.stack.base_url(service)}/openapi.json", timeout=30).json()
    wrong, checked = [], 0
    for path, operations in doc["paths"].items():
        if not path.startswith(("/v1/", "/.well-known/")):
            continue
        for method in operations:
            if method.upper() not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                continue
            checked += 1
            concrete = re.sub(r"\{[^}]+\}", SAMPLE_ID, path)
            route, _ = table.resolve(concrete, method.upper())
            if route is None or route.upstream != service:
                wrong.append(f"{method.upper()} {path}")
    assert checked, f"{service} documents no public operation"
    assert wrong == [], f"{service} operations the gateway does not route to it: {wrong}"


def _summary() -> str:
    """One line per request, one column per caller: the status answered; ``!`` where the policy expected
    another (listed below the table, strict xfails included)."""
    width = max(len(row.label) for row in ROWS)
    lines = [" " * width + " " + " ".join(f"{SHORT[p]:>5}" for p in PRINCIPALS)]
    off = []
    for row in ROWS:
        out = []
        for who in PRINCIPALS:
            got = RESULTS.get((row.label, who))
            out.append(f"{'·' if got is None else str(got[0]) + ('!' if got[0] != got[1] else ''):>5}")
            if got is not None and got[0] != got[1]:
                off.append(f"  {row.label} [{who}]: {got[0]}, expected {got[1]}")
        lines.append(f"{row.label:<{width}} " + " ".join(out))
    lines.append(
        f"{len(PRINCIPALS)} callers, {len(ROWS)} requests, {len(RESULTS)} cells; {len(off)} not as expected"
    )
    return "\n".join(lines + off)
