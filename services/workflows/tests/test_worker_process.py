"""``python -m workflows.worker`` as its own process: consumes ``project.created`` and
``document.indexed`` from JetStream, relays the workflow events, sweeps expired leases, exits cleanly on
SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from shared.db import new_id
from shared.messaging import ensure_stream, stream_name

from .conftest import document_indexed, project_created
from .test_flow_nats import envelope


async def wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_the_worker_process_runs_the_workflow(svc, clean_jetstream, database_url, nats_url):
    js = clean_jetstream
    for service in ("projects", "documents"):
        await ensure_stream(js, service)
    client, project = new_id(), new_id()
    env = {
        **os.environ,
        "BATON_DATABASE_URL": database_url,
        "BATON_DATABASE_SCHEMA": svc.schema,
        "BATON_NATS_URL": nats_url,
        "BATON_LOG_JSON": "false",
        "BATON_WORKFLOWS_LEASE_SWEEP_SECONDS": "0.2",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workflows.worker",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )

    async def publish(event, service):
        from shared.messaging import to_nats

        subject, headers, body = to_nats(envelope(event, service, client))
        await js.publish(subject, body, headers=headers)

    async def waiting_step():
        r = await svc.http.get(f"/v1/projects/{project}/workflow", headers=svc.admin)
        if r.status_code != 200:
            return None
        items = r.json()["open_tasks"]
        return items[0] if items else None

    try:
        await publish(project_created(client, project), "projects")

        async def started():
            return (await waiting_step() or {}).get("step_id") == "create_project_brief"

        await wait_until(started)
        task = await waiting_step()
        r = await svc.http.post(
            f"/v1/tasks/{task['id']}/claim",
            json={"lease_seconds": 1},
            headers=svc.agent(client, ("analyst",)),
        )
        assert r.status_code == 200

        async def lease_swept():
            rows = [e for e in await svc.outbox() if e["type"].endswith("task_ready.v1")]
            return any(e["data"].get("reason") == "lease_expired" for e in rows)

        await wait_until(lease_swept)
        await publish(document_indexed(project, client, "project-brief"), "documents")

        async def advanced():
            return (await waiting_step() or {}).get("step_id") == "create_prd"

        await wait_until(advanced)

        async def relayed():
            try:
                info = await js.stream_info(stream_name("workflows"))
            except Exception:
                return False
            return info.state.messages == len(await svc.outbox())

        await wait_until(relayed)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()[-2000:]
