"""What the journey's steps share: its people and documents, the ``Journey`` state passed from step to step,
and how the agent works a task and the product owner answers a decision (``work``, ``decide``, ``drive``).
The steps themselves are the tests of ``test_journey.py``."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, get_args

import pytest
from identity.agents.schemas import Scope

PASSWORD = "Journey-passw0rd-1"
ALL_SCOPES = list(get_args(Scope))  # every scope identity grants agents
ALL_ROLES = ["analyst", "pm", "architect", "po", "sm", "dev", "qa", "ux-expert"]

# What each planning document says, and a paraphrase that must find it (no shared key phrase).
DOCUMENTS: dict[str, dict[str, str]] = {
    "project-brief": {
        "title": "Project brief: Plotshare",
        "content": (
            "# Project brief: Plotshare\n\n"
            "## Problem\n"
            "Neighbourhood gardeners cannot find a free raised bed. Volunteers keep waiting lists on paper "
            "clipboards in the tool shed, lose them in the rain, and nobody knows who is next in line.\n\n"
            "## Users\n"
            "Hobby growers living in flats without a garden, and the volunteer coordinators of each site.\n\n"
            "## Goal\n"
            "Every gardener sees which beds are free and joins a fair, visible queue.\n"
        ),
        "paraphrase": "urban residents without a yard struggle to get an allotment and the queue is kept by hand",
    },
    "prd": {
        "title": "PRD: Plotshare",
        "content": (
            "# Product requirements: Plotshare\n\n"
            "## Functional requirements\n"
            "FR1: A gardener books a bed for a whole season and pays the seasonal fee by card.\n"
            "FR2: The system sends text message reminders before watering duty and before the fee is due.\n"
            "FR3: Coordinators approve or decline bookings.\n\n"
            "## Non-functional requirements\n"
            "NFR1: Pages load in under two seconds on a mobile connection.\n"
        ),
        "paraphrase": "the product must charge the yearly plot payment and send SMS notifications to members",
    },
    "front-end-spec": {
        "title": "Front-end specification: Plotshare",
        "content": (
            "# UI/UX specification\n\n"
            "## Layout\n"
            "The home screen is an interactive map of the site; tapping a bed opens its details and a "
            "reserve button.\n\n"
            "## Visual design\n"
            "Earthy greens and browns; large touch targets; high-contrast mode and screen-reader labels "
            "for visually impaired gardeners.\n"
        ),
        "paraphrase": "screen design with a clickable site plan, colour palette and accessibility for blind users",
    },
    "architecture": {
        "title": "Fullstack architecture: Plotshare",
        "content": (
            "# Fullstack architecture\n\n"
            "## Backend\n"
            "A FastAPI service in Python stores bookings in PostgreSQL; Redis caches the bed availability "
            "map.\n\n"
            "## Frontend\n"
            "A React single-page app talks to the API over JSON.\n\n"
            "## Deployment\n"
            "Containers run on a Kubernetes cluster behind an ingress; migrations run as a job.\n"
        ),
        "paraphrase": "which relational database and Python web framework the server uses and how it is hosted",
    },
}
STORIES: list[dict[str, str]] = [
    {
        "title": "Story 1.1: Sign up and verify email",
        "story_title": "Sign up and verify email",
        "content": (
            "# Story 1.1: Sign up and verify email\n\n"
            "As a gardener I create an account with my email address and confirm it through the link "
            "sent to my inbox, so that only real people can book beds.\n"
        ),
        "paraphrase": "registering an account and confirming the mailbox via a link",
    },
    {
        "title": "Story 1.2: Reserve a bed on the map",
        "story_title": "Reserve a bed on the map",
        "content": (
            "# Story 1.2: Reserve a bed on the map\n\n"
            "As a gardener I tap a free bed on the site map and reserve it for the season; the bed turns "
            "orange until a coordinator approves.\n"
        ),
        "paraphrase": "a grower holds an empty bed for the whole season, pending until the organiser agrees",
    },
    {
        "title": "Story 1.3: Export the season report",
        "story_title": "Export the season report",
        "content": (
            "# Story 1.3: Export the season report\n\n"
            "As a coordinator I download a spreadsheet at the end of the year listing every booking, "
            "payment and harvest note, for the committee meeting.\n"
        ),
        "paraphrase": "coordinator downloads a yearly summary file of reservations and fees",
    },
]
FIX_LOOP_STORY = 2  # QA leaves unchecked items once on this story


@dataclass
class Journey:
    """Everything the steps share."""

    platform: Any
    h: Any
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    failed: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    timings: dict[str, float] = field(default_factory=dict)
    api: dict[str, Any] = field(default_factory=dict)  # name → Api
    ids: dict[str, str] = field(default_factory=dict)
    docs: dict[str, str] = field(default_factory=dict)  # kind or story-N → document id
    tasks: list[dict[str, Any]] = field(default_factory=list)  # tasks worked, as the API returned them
    decisions: list[dict[str, Any]] = field(default_factory=list)
    final_workflow: dict[str, Any] | None = None

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs the earlier step(s) {missing} (failed or skipped)")

    def __getattr__(self, name: str) -> Any:  # journey.po_a → the Api named "po_a"
        api = self.__dict__.get("api", {})
        if name in api:
            return api[name]
        raise AttributeError(name)

    def poll(self, what: str, fn: Any, timeout: float = 60.0, interval: float = 0.25) -> Any:
        return self.h.poll(what, fn, timeout=timeout, interval=interval, platform=self.platform)


def retry_until_known(call: Any, what: str, timeout: float = 30.0) -> Any:
    """Identity learns clients from events: a write naming a client it has not heard of yet is a 404."""
    deadline = time.monotonic() + timeout
    while True:
        r = call()
        if r.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert r.status_code in (200, 201), f"{what}: {r.status_code} {r.text[:1000]}"
    return r.json()


def workflow_of(journey: Journey, api: Any = None) -> dict[str, Any]:
    return (api or journey.agent_a).get(f"/v1/projects/{journey.ids['project_a']}/workflow")


def upload(journey: Journey, kind: str, body: dict[str, Any]) -> str:
    """The agent writes a document; it is indexed by the documents worker."""
    doc = journey.agent_a.post(
        f"/v1/projects/{journey.ids['project_a']}/documents", 201, json={"kind": kind, **body}
    )
    assert doc["kind"] == kind
    assert doc["project_id"] == journey.ids["project_a"]

    def indexed() -> Any:
        d = journey.agent_a.get(f"/v1/documents/{doc['id']}")
        assert d["status"] != "failed", f"document processing failed: {d}"
        return d if d["status"] == "indexed" else None

    journey.poll(f"document {body['title']!r} indexed", indexed, timeout=90)
    return str(doc["id"])


def complete(journey: Journey, task: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Complete a task; a document the workflow has not heard of yet is a 409 to retry."""
    path = f"/v1/tasks/{task['id']}/complete"

    def attempt() -> Any:
        r = journey.agent_a.request("POST", path, json=body)
        if r.status_code == 409 and r.json().get("code") == "document_not_indexed":
            return None
        assert r.status_code == 200, f"complete {task['name']}: {r.status_code} {r.text[:1000]}"
        return r.json()

    done = journey.poll(f"completion of {task['name']!r}", attempt, timeout=60, interval=0.3)
    assert done["state"] == "completed"
    return done


def work(journey: Journey, task: dict[str, Any]) -> None:
    agent = journey.agent_a
    journey.tasks.append(task)
    if task["optional"] and "qa" not in task["roles"]:
        skipped = agent.post(f"/v1/tasks/{task['id']}/skip", json={"reason": "not needed for this project"})
        assert skipped["state"] == "skipped"
        return
    claimed = agent.post(f"/v1/tasks/{task['id']}/claim", json={"lease_seconds": 600})
    assert claimed["state"] == "claimed", claimed
    assert claimed["claimed_by"] == journey.ids["agent_a"], claimed
    kind = task["produces_kind"]
    if kind == "story":
        story = STORIES[task["story"] - 1]
        doc = upload(
            journey,
            "story",
            {
                "title": story["title"],
                "content": story["content"],
                "epic": task["epic"],
                "story": task["story"],
            },
        )
        journey.docs[f"story-{task['story']}"] = doc
        done = complete(journey, task, {"document_id": doc, "story_title": story["story_title"]})
        assert done["document_id"] == doc
    elif kind is not None:
        spec = DOCUMENTS[kind]
        doc = upload(journey, kind, {"title": spec["title"], "content": spec["content"]})
        journey.docs[kind] = doc
        done = complete(journey, task, {"document_id": doc})
        assert done["document_id"] == doc
    else:
        complete(journey, task, {})


def answer_for(journey: Journey, decision: dict[str, Any]) -> str:
    if decision["kind"] == "more_stories":
        return "yes" if (decision["story"] or 0) < len(STORIES) else "no"
    if decision["token"] == "qa_left_unchecked_items":
        loops = sum(
            1 for d in journey.decisions if d["token"] == "qa_left_unchecked_items" and d["answer"] == "yes"
        )
        return "yes" if decision["story"] == FIX_LOOP_STORY and loops == 0 else "no"
    return "no"  # no AI UI generation, no PRD changes, no PO issues, no story review, no other epic


def decide(journey: Journey, decision: dict[str, Any]) -> None:
    answer = answer_for(journey, decision)
    made = journey.po_a.post(f"/v1/decisions/{decision['id']}", json={"answer": answer})
    assert made["state"] == "answered"
    assert made["answer"] == answer
    assert made["answered_by"] == journey.ids["user_po_a"]
    journey.decisions.append(made)


def drive(journey: Journey, until: Any, limit: int = 120) -> dict[str, Any]:
    """Act on whatever the workflow waits for (it waits on one thing at a time) until ``until(wf)``."""
    for _ in range(limit):
        wf = workflow_of(journey)
        if until(wf):
            return wf
        assert wf["status"] == "running", f"the workflow ended early: {wf['status']} / {wf['outcome']}"
        if wf["open_decisions"]:
            decide(journey, wf["open_decisions"][0])
        elif wf["open_tasks"]:
            task = wf["open_tasks"][0]
            assert task["state"] != "pending", f"{task['name']} waits for inputs {task['missing']}"
            work(journey, task)
        else:
            time.sleep(0.2)
    raise AssertionError(f"the workflow did not get there in {limit} actions: {workflow_of(journey)}")


def in_development(wf: dict[str, Any]) -> bool:
    return any(t["step_id"] == "create_story" for t in wf["open_tasks"])
