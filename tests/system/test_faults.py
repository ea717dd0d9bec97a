"""Fault injection: the platform keeps every promise it made while its processes and servers die.

A load generator drives the journey's write API through the gateways at a steady rate (create a project,
upload its project brief, which completes the project's first workflow task by events), while, in turn,
every API and worker process of every replica is killed with SIGKILL and started again, then nats-server
(same store) and Postgres (when the test session's servers are embedded and so restartable), and then the
links from the platform to Postgres and to NATS go slow (latency), are cut (TCP resets) and go silent
(a blackhole that heals, through the fault proxies). A supervisor restarts any
process that exits on its own, like an orchestrator would. Afterwards, with everything healed:

- every write the API acknowledged (2xx) is there: projects, documents (indexed);
- no workflow is stuck: every acknowledged project has its workflow, waiting on a task or decision, and
  every project whose brief was acknowledged has moved past the analyst's task;
- every event in any service's outbox was published and appears exactly once in the audit log;
- every audit chain verifies.

A summary table is printed. Bounded in time; loopback only; it stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PASSWORD = "Faults-passw0rd-1"
RATE_PER_SECOND = 3.0  # load generator actions
MAX_IN_FLIGHT = 16
GAP_SECONDS = 3.0  # load between two faults
LINK_LATENCY_MS = 200.0
LINK_FAULT_SECONDS = 6.0  # how long a slow or silent link lasts
HEAL_TIMEOUT = 90.0
BRIEF = (
    "# Project brief {n}\n\nA tool for {topic}. The users are volunteers; the goal is a fair queue and fewer "
    "lost paper lists.\n"
)


@dataclass
class Load:
    """What the load generator sent and what the platform acknowledged."""

    sent: int = 0
    acknowledged: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # status or error → count
    projects: dict[str, str] = field(default_factory=dict)  # acknowledged project id → name
    briefs: dict[str, tuple[str, str]] = field(default_factory=dict)  # project id → (document id, sha256)
    pending_briefs: list[str] = field(default_factory=list)  # projects whose brief is not acknowledged yet
    notes: dict[str, tuple[str, str]] = field(default_factory=dict)  # reference doc id → (project id, sha256)
    counter: int = 0

    def fail(self, what: str) -> None:
        self.failed[what] = self.failed.get(what, 0) + 1


@dataclass
class Faults:
    injected: list[str] = field(default_factory=list)
    crash_restarts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


async def _setup_tenant(platform: Any, helpers: Any) -> tuple[Any, str]:
    admin = helpers.login(platform.gateway_url, platform.admin_email, platform.admin_password, "admin")
    tag = uuid.uuid4().hex[:6]
    client = admin.post("/v1/clients", 201, json={"name": f"Faulty {tag}", "slug": f"faulty-{tag}"})
    email = f"po.faults.{tag}@example.org"
    user = admin.post("/v1/users", 201, json={"email": email, "password": PASSWORD, "display_name": "PO"})
    deadline = time.monotonic() + 30
    while True:
        r = admin.request(
            "PUT", f"/v1/clients/{client['id']}/members/{user['id']}", json={"role": "product_owner"}
        )
        if r.status_code in (200, 201) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    assert r.status_code in (200, 201), r.text
    admin.close()
    return helpers.login(platform.gateway_url, email, PASSWORD, "po"), client["id"]


async def _upload_brief(http: httpx.AsyncClient, load: Load, project_id: str, n: int) -> None:
    content = BRIEF.format(n=n, topic=f"sharing garden plots, batch {n}")
    r = await http.post(
        f"/v1/projects/{project_id}/documents",
        json={"title": f"Brief {n}", "kind": "project-brief", "content": content},
    )
    if r.status_code in (200, 201):
        load.acknowledged += 1
        load.briefs[project_id] = (r.json()["id"], hashlib.sha256(content.encode()).hexdigest())
    else:
        load.pending_briefs.append(project_id)  # again later (e.g. 404: documents has not heard of it yet)
        load.fail(f"upload {r.status_code}")


async def _create_project(http: httpx.AsyncClient, load: Load, client_id: str, n: int) -> None:
    name = f"Load project {n} {uuid.uuid4().hex[:6]}"
    r = await http.post(
        "/v1/projects", json={"client_id": client_id, "name": name, "kind": "greenfield", "type": "fullstack"}
    )
    if r.status_code == 201:
        load.acknowledged += 1
        load.projects[r.json()["id"]] = name
        load.pending_briefs.append(r.json()["id"])
    else:
        load.fail(f"create {r.status_code}")


async def _upload_note(http: httpx.AsyncClient, load: Load, n: int) -> None:
    """A reference document on an acknowledged project (writes that need only documents to be up)."""
    project_id = list(load.projects)[n % len(load.projects)]
    content = f"# Meeting note {n}\n\nThe committee discussed watering rotas and compost, item {n}.\n"
    r = await http.post(
        f"/v1/projects/{project_id}/documents",
        json={"title": f"Note {n}", "kind": "reference", "content": content},
    )
    if r.status_code in (200, 201):
        load.acknowledged += 1
        load.notes[r.json()["id"]] = (project_id, hashlib.sha256(content.encode()).hexdigest())
    else:
        load.fail(f"note {r.status_code}")


async def _one_action(http: httpx.AsyncClient, load: Load, client_id: str) -> None:
    """In turn: a reference note on a known project, a pending brief, a new project (whichever applies)."""
    load.counter += 1
    n = load.counter
    load.sent += 1
    try:
        if n % 3 == 0 and load.projects:
            await _upload_note(http, load, n)
        elif n % 3 == 1 and load.pending_briefs:
            await _upload_brief(http, load, load.pending_briefs.pop(0), n)
        else:
            await _create_project(http, load, client_id, n)
    except httpx.HTTPError as exc:  # unknown outcome: not acknowledged, so not checked either way
        load.fail(type(exc).__name__)


async def _generate(http: httpx.AsyncClient, load: Load, client_id: str, stop: asyncio.Event) -> None:
    in_flight: set[asyncio.Task[None]] = set()
    interval = 1.0 / RATE_PER_SECOND
    next_at = time.monotonic()
    while not stop.is_set():
        if len(in_flight) < MAX_IN_FLIGHT:
            task = asyncio.create_task(_one_action(http, load, client_id))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        else:
            load.fail("skipped: too many in flight")
        next_at += interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    if in_flight:
        await asyncio.wait(in_flight, timeout=30)


async def _supervise(platform: Any, faults: Faults, stop: asyncio.Event) -> None:
    """Restart processes that exited on their own (a worker giving up while Postgres or NATS is away)."""
    stack = platform.stack
    while not stop.is_set():
        if faults.lock.acquire(blocking=False):
            try:
                for key, proc in list(stack.processes.items()):
                    if proc.poll() is not None:
                        faults.crash_restarts[key] = faults.crash_restarts.get(key, 0) + 1
                        stack.respawn(key)
            finally:
                faults.lock.release()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def _kill_and_restart(platform: Any, faults: Faults, key: str) -> None:
    with faults.lock:
        platform.stack.kill(key)
        platform.stack.respawn(key)
    faults.injected.append(f"kill -9 {key}")


def _proxy_fault(platform: Any, faults: Faults, name: str, mode: str, latency_ms: float = 0.0) -> None:
    platform.proxies[name].set(mode, latency_ms)
    if mode != "pass":
        faults.injected.append(f"{name} link: {mode}{f' {latency_ms:.0f} ms' if latency_ms else ''}")


async def _inject(platform: Any, faults: Faults) -> None:
    for key in list(platform.stack.processes):  # every API and worker of every replica, in turn
        await asyncio.to_thread(_kill_and_restart, platform, faults, key)
        await asyncio.sleep(GAP_SECONDS)
    if platform.nats is not None and platform.nats.can_restart:
        await asyncio.to_thread(platform.nats.restart, kill=True)
        faults.injected.append("kill -9 nats-server (same store)")
        await asyncio.sleep(GAP_SECONDS)
    if platform.postgres is not None and platform.postgres.can_restart:
        await asyncio.to_thread(platform.postgres.restart, kill=True)
        faults.injected.append("kill -9 postgres")
        await asyncio.sleep(GAP_SECONDS)
    # The network between the platform and its backing servers: slow, cut, then silent for a while.
    for name in sorted(platform.proxies):
        for mode, latency_ms, hold in (
            ("latency", LINK_LATENCY_MS, LINK_FAULT_SECONDS),
            ("reset", 0.0, 0.5),
            ("blackhole", 0.0, LINK_FAULT_SECONDS),
        ):
            await asyncio.to_thread(_proxy_fault, platform, faults, name, mode, latency_ms)
            await asyncio.sleep(hold)
            await asyncio.to_thread(_proxy_fault, platform, faults, name, "pass")
            await asyncio.sleep(GAP_SECONDS)


# -- checks after healing ---------------------------------------------------------------------------------
async def _outbox_vs_audit(platform: Any) -> dict[str, Any]:
    """Every outbox row of every service (audit's own excluded: it is not ingested) vs. the audit log."""
    conn = await platform.db()
    try:
        schemas = [
            r["table_schema"]
            for r in await conn.fetch(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox' "
                "AND table_schema <> 'audit' ORDER BY 1"
            )
        ]
        events: dict[str, str] = {}
        unsent = 0
        for schema in schemas:
            for row in await conn.fetch(f'SELECT id::text AS id, event_type, sent_at FROM "{schema}".outbox'):
                events[row["id"]] = row["event_type"]
                unsent += row["sent_at"] is None
        audit = platform.has("audit")
        counts = {
            r["event_id"]: r["n"]
            for r in (
                await conn.fetch("SELECT event_id, count(*) AS n FROM audit.entries GROUP BY event_id")
                if audit
                else []
            )
        }
        chains = (
            [r["chain_id"] for r in await conn.fetch("SELECT chain_id FROM audit.chains ORDER BY 1")]
            if audit
            else []
        )
    finally:
        await conn.close()
    lost = sorted(e for e in events if counts.get(e, 0) == 0) if audit else []  # no audit: nothing to check
    duplicated = sorted(e for e in events if counts.get(e, 0) > 1)
    return {
        "events": len(events),
        "unsent": unsent,
        "audit_entries": sum(counts.get(e, 0) for e in events),
        "audit_total": sum(counts.values()),
        "lost": lost,
        "lost_types": sorted({events[e] for e in lost}),
        "duplicated": duplicated,
        "chains": chains,
    }


def _check_writes(po: Any, load: Load) -> tuple[list[str], dict[str, str]]:
    """Acknowledged writes that are missing or wrong; and, apart, acknowledged documents still being
    processed (project id → document id): present, but not indexed yet."""
    problems: list[str] = []
    processing: dict[str, str] = {}
    for project_id, name in load.projects.items():
        r = po.request("GET", f"/v1/projects/{project_id}")
        if r.status_code != 200 or r.json()["name"] != name:
            problems.append(f"project {project_id}: {r.status_code}")
    for project_id, (doc_id, sha) in load.briefs.items():
        r = po.request("GET", f"/v1/documents/{doc_id}")
        if r.status_code != 200:
            problems.append(f"document {doc_id}: {r.status_code}")
        elif r.json()["latest"]["sha256"] != sha:
            problems.append(f"document {doc_id}: content differs from what was acknowledged")
        elif r.json()["status"] == "processing":
            processing[project_id] = doc_id
        elif r.json()["status"] != "indexed":
            problems.append(f"document {doc_id}: {r.json()['status']} (project {project_id})")
    for doc_id, (project_id, sha) in load.notes.items():
        r = po.request("GET", f"/v1/documents/{doc_id}")
        if r.status_code != 200 or r.json()["project_id"] != project_id:
            problems.append(f"document {doc_id}: {r.status_code}")
        elif r.json()["latest"]["sha256"] != sha:
            problems.append(f"document {doc_id}: content differs from what was acknowledged")
        elif r.json()["status"] == "processing":
            processing[f"note:{doc_id}"] = doc_id
        elif r.json()["status"] != "indexed":
            problems.append(f"document {doc_id}: {r.json()['status']}")
    return problems, processing


def _check_workflows(po: Any, load: Load, processing: dict[str, str]) -> list[str]:
    """Projects without a workflow, or whose workflow waits on nothing, or whose acknowledged (and indexed)
    brief did not complete the analyst's task."""
    problems = []
    for project_id in load.projects:
        r = po.request("GET", f"/v1/projects/{project_id}/workflow")
        if r.status_code != 200:
            problems.append(f"project {project_id}: no workflow ({r.status_code})")
            continue
        wf = r.json()
        if wf["status"] != "running" or not (wf["open_tasks"] or wf["open_decisions"]):
            problems.append(f"project {project_id}: stuck ({wf['status']}, nothing open)")
            continue
        steps = {s["id"]: s["state"] for s in wf["steps"]}
        brief_done = steps.get("create_project_brief") == "completed"
        if project_id in load.briefs and project_id not in processing and not brief_done:
            problems.append(
                f"project {project_id}: brief indexed, analyst task still {steps.get('create_project_brief')}"
            )
    return problems


def _unhandled_errors(platform: Any, since: str) -> list[str]:
    """The APIs' "unhandled error" log records (each one a 500) since ``since``."""
    found = []
    for key in platform.stack.commands:
        if not key.endswith("-api"):
            continue
        path = platform.stack.log_path(key)
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if '"unhandled error' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("time", "") < since:
                continue
            error = str(record.get("error", ""))
            last = next(
                (x.strip() for x in reversed(error.splitlines()) if x.strip() and "sqlalche.me" not in x), ""
            )
            what = f"{key}: {record.get('message')}: {last[:300]}"
            found.append(what)
    return found


def _table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    line = "+-" + "-" * width + "-+-" + "-" * 12 + "-+"
    out = [line]
    out += [f"| {k.ljust(width)} | {str(v).rjust(12)} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)


async def test_faults_lose_nothing(platform: Any, helpers: Any) -> None:
    started = time.monotonic()
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    po, client_id = await _setup_tenant(platform, helpers)
    load, faults = Load(), Faults()
    stop_load, stop_supervisor = asyncio.Event(), asyncio.Event()
    async with helpers.async_http_client(
        platform.gateway_url, headers=po.headers(), timeout=httpx.Timeout(10.0, connect=2.0)
    ) as http:
        generator = asyncio.create_task(_generate(http, load, client_id, stop_load))
        supervisor = asyncio.create_task(_supervise(platform, faults, stop_supervisor))
        try:
            await asyncio.sleep(GAP_SECONDS)  # a calm start: the baseline is acknowledged
            await _inject(platform, faults)
        finally:
            stop_load.set()
            await generator
        faults_done = time.monotonic()

        # Heal: every process up again; briefs still pending are uploaded now, to a calm platform.
        await platform.wait_ready(timeout=HEAL_TIMEOUT)
        for _ in range(5):
            pending, load.pending_briefs = load.pending_briefs, []
            for project_id in pending:
                load.sent += 1
                load.counter += 1
                try:
                    await _upload_brief(http, load, project_id, load.counter)
                except httpx.HTTPError as exc:
                    load.pending_briefs.append(project_id)
                    load.fail(type(exc).__name__)
            if not load.pending_briefs:
                break
            await asyncio.sleep(2.0)

        deadline = time.monotonic() + HEAL_TIMEOUT
        write_problems = workflow_problems = ["not checked"]
        processing: dict[str, str] = {}
        ledger: dict[str, Any] = {}
        while time.monotonic() < deadline:
            write_problems, processing = await asyncio.to_thread(_check_writes, po, load)
            workflow_problems = await asyncio.to_thread(_check_workflows, po, load, processing)
            ledger = await _outbox_vs_audit(platform)
            healthy = not (write_problems or workflow_problems or ledger["lost"] or ledger["unsent"])
            if healthy and not processing:
                break
            await asyncio.sleep(2.0)
        healed = time.monotonic()
        stop_supervisor.set()
        await supervisor

    admin = helpers.login(platform.gateway_url, platform.admin_email, platform.admin_password, "admin")
    verify_failures = []
    for chain in ledger.get("chains", []):
        v = admin.request("GET", "/v1/audit/verify", params={"client_id": chain})
        if v.status_code != 200 or not v.json()["ok"]:
            verify_failures.append(f"{chain}: {v.status_code} {v.text[:300]}")
    admin.close()
    po.close()

    unhandled = _unhandled_errors(platform, since)
    summary = "\n".join(
        [
            "fault injection summary",
            _table(
                [
                    ("faults injected", len(faults.injected)),
                    ("crash restarts (supervisor)", sum(faults.crash_restarts.values())),
                    ("requests sent", load.sent),
                    ("requests acknowledged (2xx)", load.acknowledged),
                    (
                        "requests not acknowledged",
                        sum(v for k, v in load.failed.items() if not k.startswith("skipped")),
                    ),
                    ("projects acknowledged", len(load.projects)),
                    ("briefs acknowledged", len(load.briefs)),
                    ("notes acknowledged", len(load.notes)),
                    ("500 responses", sum(v for k, v in load.failed.items() if k.endswith(" 500"))),
                    ("writes missing", len(write_problems)),
                    ("documents still processing", len(processing)),
                    ("workflows stuck", len(workflow_problems)),
                    ("outbox events", ledger.get("events")),
                    ("outbox events unsent", ledger.get("unsent")),
                    ("audit entries for them", ledger.get("audit_entries")),
                    ("lost (not in audit)", len(ledger.get("lost", []))),
                    ("duplicated in audit", len(ledger.get("duplicated", []))),
                    ("chains verified", len(ledger.get("chains", [])) - len(verify_failures)),
                    ("chains failing verify", len(verify_failures)),
                    ("fault phase (s)", f"{faults_done - started:.0f}"),
                    ("heal phase (s)", f"{healed - faults_done:.0f}"),
                ]
            ),
            "faults: " + "; ".join(faults.injected),
            f"crash restarts: {faults.crash_restarts}",
            f"not acknowledged: {load.failed}",
        ]
    )
    print("\n" + summary)
    helpers.report("fault injection", summary)
    (platform.stack.home / "faults-summary.txt").write_text(summary + "\n")

    assert faults.injected, "no fault was injected"
    assert load.acknowledged > 0, "the load generator got nothing acknowledged"
    assert not write_problems, f"acknowledged writes missing: {write_problems[:20]}"
    assert not workflow_problems, f"stuck workflows: {workflow_problems[:20]}"
    assert ledger["unsent"] == 0, f"{ledger['unsent']} outbox events never published"
    assert not ledger["lost"], (
        f"{len(ledger['lost'])} events not in the audit log ({ledger['lost_types']}): {ledger['lost'][:10]}"
    )
    assert not ledger["duplicated"], f"events recorded twice: {ledger['duplicated'][:10]}"
    assert not verify_failures, f"audit chains failing verify: {verify_failures}"
    assert not processing, f"acknowledged documents never indexed: {sorted(processing.values())[:10]}"
    assert not unhandled, "500s (an outage must be a 503):\n" + "\n".join(unhandled[:20])
