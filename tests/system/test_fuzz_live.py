"""API fuzzing against the running platform: schemathesis reads the gateway's merged OpenAPI document from
``/openapi.json`` and sends generated requests over HTTP through the gateways (both replicas) to the
service processes, as callers of several roles.

Checks: every built-in schemathesis check - no 5xx, status codes, content types, headers and bodies as
documented, schema-violating requests rejected, authentication not ignored - except the two that need
state a stateless run does not have (a resource created and then found; valid data accepted, where 404s and
409s for ids that do not exist are business answers): the in-process fuzzing under ``tests/fuzz`` covers
those. Path ids are steered, half the time, to objects that exist (a client, project, document, task),
so generated requests reach the code behind the 404s. Slow: ``make test-system``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import ensure_resource_availability, positive_data_acceptance

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

EXAMPLES = int(os.environ.get("BATON_FUZZ_LIVE_EXAMPLES", "10"))
PASSWORD = "Fuzzing-passw0rd-1"
SENT: Counter[str] = Counter()  # role -> cases sent
STATUSES: Counter[int] = Counter()


@pytest.fixture(scope="module")
def live(platform: Any, helpers: Any) -> dict[str, Any]:
    """Callers of every kind on a tenant of their own, and ids of objects that exist."""
    admin = helpers.login(platform.gateway_url, platform.admin_email, platform.admin_password, "admin")
    tag = uuid.uuid4().hex[:6]
    client = admin.post("/v1/clients", 201, json={"name": f"Fuzzed {tag}", "slug": f"fuzzed-{tag}"})

    def until_known(method: str, path: str, body: dict[str, Any]) -> Any:
        deadline = time.monotonic() + 30
        while True:
            r = admin.request(method, path, json=body)
            if r.status_code != 404 or time.monotonic() > deadline:
                assert r.status_code in (200, 201), r.text
                return r.json()
            time.sleep(0.25)

    callers: dict[str, dict[str, str] | None] = {"anonymous": None, "admin": admin.headers()}
    users: dict[str, Any] = {}
    for role in ("product_owner", "member", "viewer", "auditor"):
        email = f"{role}.fuzz.{tag}@example.org"
        user = admin.post("/v1/users", 201, json={"email": email, "password": PASSWORD, "display_name": role})
        until_known("PUT", f"/v1/clients/{client['id']}/members/{user['id']}", {"role": role})
        users[role] = helpers.login(platform.gateway_url, email, PASSWORD, role)
        callers[role] = users[role].headers()
    agent = until_known(
        "POST",
        f"/v1/clients/{client['id']}/agents",
        {"name": "fuzzed-agent", "scopes": ["projects:read", "documents:read", "documents:write",
                                            "workflows:read", "workflows:write", "search"],
         "bmad_roles": ["analyst", "pm"]},
    )  # fmt: skip
    callers["agent"] = helpers.agent_login(
        platform.gateway_url, agent["id"], agent["client_secret"]
    ).headers()

    po = users["product_owner"]
    project = po.post(
        "/v1/projects", 201, json={"client_id": client["id"], "name": "Fuzzed", "kind": "greenfield",
                                   "type": "fullstack"},
    )  # fmt: skip
    doc = helpers.poll(
        "a document on the new project",
        lambda: (
            (r := po.request(
                "POST", f"/v1/projects/{project['id']}/documents",
                json={"title": "Notes", "kind": "reference", "content": "# Notes\n\nSoil, water, sun.\n"},
            )).status_code in (200, 201) and r.json()
        ),
        timeout=60,
    )  # fmt: skip
    workflow = helpers.poll(
        "the project's workflow",
        lambda: (
            (r := po.request("GET", f"/v1/projects/{project['id']}/workflow")).status_code == 200 and r.json()
        ),
        timeout=60,
    )
    ids = {
        "client_id": client["id"],
        "project_id": project["id"],
        "document_id": doc["id"],
        "task_id": workflow["open_tasks"][0]["id"],
        "user_id": po.get("/v1/users/me")["id"],
        "agent_id": agent["id"],
    }
    config = SchemathesisConfig.from_dict(
        {
            "phases": {"coverage": {"enabled": False}},
            "generation": {"database": "none", "with-security-parameters": False},
        }
    )
    schema = schemathesis.openapi.from_url(f"{platform.gateway_url}/openapi.json", config=config)
    return {"schema": schema, "callers": callers, "ids": ids, "gateways": platform.gateway_urls}


def _fuzz(operation: Any, mode: GenerationMode, live: dict[str, Any]) -> None:
    """``EXAMPLES`` cases of one operation; raises the first failure schemathesis reports."""

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        role = data.draw(st.sampled_from(sorted(live["callers"])), label="caller")
        for name in list(case.path_parameters or {}):
            if name in live["ids"] and data.draw(st.booleans(), label=f"real {name}"):
                case.path_parameters[name] = live["ids"][name]
        gateway = data.draw(st.sampled_from(live["gateways"]), label="gateway")
        response = case.call(base_url=gateway, headers=live["callers"][role], timeout=30)
        SENT[role] += 1
        STATUSES[response.status_code] += 1
        case.validate_response(
            response,
            excluded_checks=[ensure_resource_availability, positive_data_acceptance],
            headers=live["callers"][role],
        )

    run()


def test_gateway_live(live: dict[str, Any], helpers: Any) -> None:
    """Every operation of the merged document, valid and invalid data; every failure is listed."""
    failures: list[str] = []
    operations = unsatisfiable = 0
    for result in live["schema"].get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, live)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup, or one failure
                if mode is GenerationMode.NEGATIVE and "Unable to satisfy assumptions" in str(exc):
                    unsatisfiable += 1  # nothing to break: no parameters, no body
                    continue
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:1500]}")
    counts = (
        f"{operations} operations ({unsatisfiable} without invalid input to send), "
        f"{sum(SENT.values())} cases; callers {dict(SENT)}; statuses {dict(sorted(STATUSES.items()))}"
    )
    print(f"\nlive fuzzing: {counts}")
    helpers.report("live API fuzzing through the gateways", counts)
    assert operations >= 40, f"only {operations} operations in the gateway's document"
    assert set(SENT) >= {"anonymous", "admin", "product_owner", "agent"}
    assert not failures, f"{len(failures)} failing operation(s):\n" + "\n\n".join(failures)
