"""The soak's load: an open-loop scheduler sending the journey's requests at a fixed rate (``Soak``), and
what it records of them (``Stats``). The test, its checks and its report are in ``test_soak.py``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

RATE = float(os.environ.get("BATON_SOAK_RATE", "4"))  # actions/s; on 2 cores p99 stays ~0.1-0.2 s at 4
MAX_IN_FLIGHT = 16
AGENT_WIP = 6  # tasks the agent holds at once
# Scheduled actions and their weights (each is one HTTP request); the agent works tasks in its share.
MIX: dict[str, int] = {
    "project.create": 2,
    "document.upload": 3,
    "document.read": 5,
    "document.content": 2,
    "document.list": 2,
    "project.list": 1,
    "search": 4,
    "task.list": 2,
    "workflow.read": 2,
    "agent": 8,
    "decision": 2,
    "audit.entries": 2,
    "missing.read": 1,
}
TOPICS = ["raised beds", "watering rotas", "compost bins", "seed swaps", "tool sheds", "fee reminders",
          "allotment queues", "harvest notes", "volunteer shifts", "greenhouse heating"]  # fmt: skip
QUERIES = ["who waters the beds in summer", "how gardeners wait for a free plot", "yearly fee payment by card",
           "sharing seeds between neighbours", "heating the glasshouse in winter", "where the tools are kept"]  # fmt: skip


def _markdown(title: str, n: int) -> str:
    a, b = TOPICS[n % len(TOPICS)], TOPICS[(n * 7 + 3) % len(TOPICS)]
    return (
        f"# {title}\n\n## Context\nThe committee discussed {a} and {b} (item {n}). Volunteers keep lists on "
        f"paper; members want to see them online.\n\n## Decisions\n- {a.capitalize()}: a shared rota.\n"
        f"- {b.capitalize()}: reviewed next season.\n\n## Notes\n"
        + "Plots, paths and water butts. " * 20
        + "\n"
    )


# -- what was sent and how it went --------------------------------------------------------------------------
@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # label → seconds
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)  # label → ok / expected / error / 5xx
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # the first few, for the report
    ticks: int = 0
    skipped: int = 0

    def record(self, label: str, seconds: float, status: int | str, outcome: str, detail: str = "") -> None:
        self.latencies.setdefault(label, []).append(seconds)
        counts = self.outcomes.setdefault(label, Counter())
        counts[outcome] += 1
        self.statuses[str(status)] += 1
        if isinstance(status, int) and status >= 500:
            counts["5xx"] += 1
        if outcome == "error" and len(self.errors) < 20:
            self.errors.append(f"{label} → {status} {detail[:300]}")

    def total(self, outcome: str | None = None) -> int:
        if outcome is None:
            return sum(len(v) for v in self.latencies.values())
        return sum(c[outcome] for c in self.outcomes.values())


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- the load ------------------------------------------------------------------------------------------------
@dataclass
class Work:
    """A task the agent holds, and its next request."""

    task: dict[str, Any]
    stage: str  # claim, skip, upload, complete
    document_id: str | None = None
    not_before: float = 0.0
    attempts: int = 0  # of completing it


class Soak:
    def __init__(self, platform: Any, http: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
        self.platform, self.http = platform, http
        self.client_id: str = tenant["client_id"]
        self.tokens: dict[str, dict[str, Any]] = tenant["tokens"]  # po / auditor / agent
        self.stats = Stats()
        self.rng = random.Random(20240601)
        self.n = 0
        self.projects: list[tuple[str, float]] = []  # (id, created at)
        self.documents: list[str] = []
        self.ready: dict[str, dict[str, Any]] = {}
        self.work: dict[str, Work] = {}
        self.busy: set[str] = set()
        self.finished: dict[str, str] = {}  # task id → completed / skipped
        self.decisions: deque[dict[str, Any]] = deque()
        self.answered: set[str] = set()

    # -- one request, measured --
    async def call(
        self,
        label: str,
        who: str,
        method: str,
        path: str,
        expected: Callable[[httpx.Response], bool] | None = None,
        **kw: Any,
    ) -> httpx.Response | None:
        headers = {"Authorization": f"Bearer {self.tokens[who]['access']}"}
        start = time.monotonic()
        try:
            r = await self.http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            self.stats.record(label, time.monotonic() - start, type(exc).__name__, "error", str(exc))
            return None
        elapsed = time.monotonic() - start
        if r.is_success:
            self.stats.record(label, elapsed, r.status_code, "ok")
        elif expected is not None and expected(r):
            self.stats.record(label, elapsed, r.status_code, "expected")
        else:
            self.stats.record(label, elapsed, r.status_code, "error", f"{method} {path}: {r.text}")
        return r

    def _project(self, min_age: float = 5.0) -> str | None:
        """A random project old enough for every service to have heard of it."""
        old = [p for p, at in self.projects if time.monotonic() - at >= min_age]
        return self.rng.choice(old) if old else None

    # -- the scheduled actions --
    async def act(self, action: str) -> None:
        self.n += 1
        project = self._project()
        if action == "project.create" or (project is None and action != "agent"):
            await self.create_project()
        elif action == "document.upload":
            title = f"Meeting note {self.n}"
            body = {
                "title": title,
                "kind": "reference",
                "tags": ["soak"],
                "content": _markdown(title, self.n),
            }
            r = await self.call(
                "document.upload", "po", "POST", f"/v1/projects/{project}/documents", json=body
            )
            if r is not None and r.is_success:
                self.documents.append(r.json()["id"])
        elif action in ("document.read", "document.content") and self.documents:
            suffix = "/content" if action == "document.content" else ""
            doc = self.rng.choice(self.documents)
            await self.call(action, "po", "GET", f"/v1/documents/{doc}{suffix}")
        elif action == "document.list":
            await self.call(action, "po", "GET", f"/v1/projects/{project}/documents", params={"limit": 20})
        elif action == "search":
            body = {"query": self.rng.choice(QUERIES), "mode": ("hybrid", "semantic", "keyword")[self.n % 3],
                    "limit": 10}  # fmt: skip
            await self.call("search", "po", "POST", "/v1/search", json=body)
        elif action == "task.list":
            params = {"project_id": project, "limit": 50}
            await self.call("task.list", "po", "GET", "/v1/tasks", params=params)
        elif action == "workflow.read":
            await self.call("workflow.read", "po", "GET", f"/v1/projects/{project}/workflow")
        elif action == "agent":
            await self.agent_step()
        elif action == "decision":
            await self.decision_step()
        elif action == "audit.entries":
            params = {"client_id": self.client_id, "limit": 50, "order": "desc"}
            await self.call("audit.entries", "auditor", "GET", "/v1/audit/entries", params=params)
        elif action == "missing.read":
            await self.call(
                "missing.read", "po", "GET", f"/v1/documents/{uuid.uuid4()}", lambda r: r.status_code == 404
            )
        else:  # document reads before any document exists
            await self.call("project.list", "po", "GET", "/v1/projects", params={"limit": 20})

    async def create_project(self) -> None:
        body = {"client_id": self.client_id, "name": f"Soak {self.n} {uuid.uuid4().hex[:4]}",
                "description": "Community garden bookings", "kind": "greenfield", "type": "fullstack"}  # fmt: skip
        r = await self.call("project.create", "po", "POST", "/v1/projects", json=body)
        if r is not None and r.status_code == 201:
            self.projects.append((r.json()["id"], time.monotonic()))

    async def agent_step(self) -> None:
        """One request of the agent's work: advance a held task, take a ready one, or look for work."""
        now = time.monotonic()
        held = [w for k, w in self.work.items() if k not in self.busy and now >= w.not_before]
        if held:
            work = held[0]
        elif len(self.work) < AGENT_WIP and self.ready:
            task = self.ready.pop(next(iter(self.ready)))
            skip = task["optional"] and "qa" not in task["roles"]
            work = self.work[task["id"]] = Work(task, "skip" if skip else "claim")
        else:
            params = {"state": "ready", "limit": 50}
            r = await self.call("agent.tasks", "agent", "GET", "/v1/tasks", params=params)
            if r is not None and r.is_success:
                for task in r.json()["items"]:
                    if task["id"] not in self.work and task["id"] not in self.finished:
                        self.ready[task["id"]] = task
            return
        task_id = work.task["id"]
        self.busy.add(task_id)
        try:
            await self._advance(work)
        finally:
            self.busy.discard(task_id)

    async def _advance(self, work: Work) -> None:
        task, task_id = work.task, work.task["id"]
        if work.stage == "skip":
            body = {"reason": "not needed for this project"}
            r = await self.call("agent.skip", "agent", "POST", f"/v1/tasks/{task_id}/skip", json=body)
            self._finish(task_id, "skipped" if r is not None and r.is_success else None)
        elif work.stage == "claim":
            r = await self.call(
                "agent.claim", "agent", "POST", f"/v1/tasks/{task_id}/claim", json={"lease_seconds": 900}
            )
            if r is None or not r.is_success:
                self._finish(task_id, None)
            else:
                work.stage = "upload" if task["produces_kind"] else "complete"
        elif work.stage == "upload":
            title = f"{task['name']} ({task_id[:8]})"
            body: dict[str, Any] = {
                "title": title,
                "kind": task["produces_kind"],
                "content": _markdown(title, self.n),
            }
            if task["produces_kind"] == "story":
                body |= {"epic": task["epic"], "story": task["story"]}
            path = f"/v1/projects/{task['project_id']}/documents"
            r = await self.call("agent.upload", "agent", "POST", path, json=body)
            if r is not None and r.is_success:
                work.document_id = r.json()["id"]
                self.documents.append(r.json()["id"])
                work.stage, work.not_before = "complete", time.monotonic() + 2.0
        else:
            body = {"document_id": work.document_id} if work.document_id else {}
            if task["produces_kind"] == "story":
                body["story_title"] = f"Story {task['story']} of project {task['project_id'][:8]}"
            r = await self.call(
                "agent.complete", "agent", "POST", f"/v1/tasks/{task_id}/complete",
                lambda r: r.status_code == 409 and r.json().get("code") == "document_not_indexed", json=body,
            )  # fmt: skip
            work.attempts += 1
            if r is not None and r.is_success:
                self._finish(task_id, "completed")
            elif work.attempts >= 20:  # never indexed, or refused for good: counted, given up
                self._finish(task_id, None)
            else:
                work.not_before = time.monotonic() + 1.5

    def _finish(self, task_id: str, how: str | None) -> None:
        self.work.pop(task_id, None)
        if how is not None:
            self.finished[task_id] = how

    async def decision_step(self) -> None:
        """The product owner answers an open decision, or looks for some."""
        if not self.decisions:
            params = {"client_id": self.client_id, "state": "open", "limit": 20}
            r = await self.call("decision.list", "po", "GET", "/v1/decisions", params=params)
            if r is not None and r.is_success:
                self.decisions.extend(d for d in r.json()["items"] if d["id"] not in self.answered)
            return
        decision = self.decisions.popleft()
        self.answered.add(decision["id"])
        more = decision["kind"] == "more_stories" and (decision["story"] or 0) < 2
        answer = "yes" if more and "yes" in decision["options"] else "no"
        if answer not in decision["options"]:
            answer = decision["options"][0]
        await self.call(
            "decision.answer", "po", "POST", f"/v1/decisions/{decision['id']}", json={"answer": answer}
        )

    # -- the scheduler (open loop) and the token keeper --
    async def run(self, seconds: float) -> None:
        actions, weights = list(MIX), list(MIX.values())
        in_flight: set[asyncio.Task[None]] = set()
        interval, start = 1.0 / RATE, time.monotonic()
        tick = 0
        while (at := start + tick * interval) < start + seconds:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            tick += 1
            self.stats.ticks += 1
            if len(in_flight) >= MAX_IN_FLIGHT:
                self.stats.skipped += 1
                continue
            task = asyncio.create_task(self.act(self.rng.choices(actions, weights)[0]))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight, timeout=60)

    async def keep_tokens(self, stop: asyncio.Event) -> None:
        """Renew each access token at half its life: refresh grant for people, client credentials for the
        agent (15-minute tokens would otherwise lapse mid-soak)."""
        while not stop.is_set():
            for tok in self.tokens.values():
                if time.monotonic() - tok["at"] < tok["expires_in"] / 2:
                    continue
                if tok.get("refresh"):
                    form = {"grant_type": "refresh_token", "refresh_token": tok["refresh"]}
                else:
                    form = {"grant_type": "client_credentials", "client_id": tok["client_id"],
                            "client_secret": tok["secret"]}  # fmt: skip
                start = time.monotonic()
                try:
                    r = await self.http.post("/v1/auth/token", data=form)
                except httpx.HTTPError as exc:  # tried again in 10 s
                    self.stats.record("auth.token", time.monotonic() - start, type(exc).__name__, "error")
                    continue
                ok = r.status_code == 200
                self.stats.record(
                    "auth.token", time.monotonic() - start, r.status_code, "ok" if ok else "error", r.text
                )
                if ok:
                    body = r.json()
                    tok |= {"access": body["access_token"], "at": start, "expires_in": body["expires_in"]}
                    tok["refresh"] = body.get("refresh_token", tok.get("refresh"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 10.0)
