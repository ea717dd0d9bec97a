"""The engine's rules, one scenario at a time, without I/O."""

from __future__ import annotations

from datetime import timedelta

import pytest
from workflows.definitions.loader import load_definition
from workflows.definitions.service import BUILTIN_DIR
from workflows.engine import errors
from workflows.engine.state import Actor, DecisionKind, KnownDocument, TaskState
from workflows.engine.stories import sprint_status

from .driver import PERSON, Team, agent_for


def model(name: str):
    return load_definition((BUILTIN_DIR / f"{name}.yaml").read_text())


def scripted(answers: dict[str, list[str]] | None = None, default: str = "no"):
    """A ``choose`` for ``Team``: decisions by token from ``answers`` (in order), else ``default``;
    for the team's own coin flips (claim? skip? fail?) the first, conservative option."""
    answers = {k: list(v) for k, v in (answers or {}).items()}

    def choose(options):
        return options[0] if options and not isinstance(options[0], str) else default

    return choose, answers


class Scripted(Team):
    """Answers decisions from a script; completes every task (no skips, no failures)."""

    def __init__(self, name: str, answers: dict[str, list[str]] | None = None, **kw):
        self.script = {k: list(v) for k, v in (answers or {}).items()}
        super().__init__(
            model(name), choose=lambda options: False if options == [True, False] else options[0], **kw
        )

    def answer_for(self, decision) -> str:
        queue = self.script.get(decision.token) or self.script.get(decision.kind.value)
        return queue.pop(0) if queue else "no"

    def act(self):
        st = self.state
        if st.waiting_decision:
            d = st.decisions[st.waiting_decision]
            self.run(lambda e: e.answer(d.id, PERSON, self.answer_for(d)))
            self.check()
            return
        task = st.tasks[st.waiting_task]
        if task.produces_kind:
            doc = self.index(task.produces_kind)
            if task.step_id == "create_story":  # the SM names the story it wrote
                self.run(
                    lambda e: e.complete(task.id, PERSON, document_id=doc, story_title=f"Story {task.story}")
                )
        else:
            self.run(
                lambda e: e.complete(
                    task.id,
                    PERSON,
                    story_title=f"Story {task.story}" if task.step_id == "create_story" else None,
                )
            )
        self.check()

    def waiting_task(self):
        return self.state.tasks[self.state.waiting_task] if self.state.waiting_task else None

    def waiting_decision(self):
        return self.state.decisions[self.state.waiting_decision] if self.state.waiting_decision else None

    def until(self, predicate, limit=500):
        for _ in range(limit):
            if predicate(self):
                return
            self.act()
        raise AssertionError("never reached")


def test_greenfield_fullstack_three_stories_with_a_qa_fix_loop_and_sprint_status():
    team = Scripted(
        "greenfield-fullstack",
        {
            "qa_left_unchecked_items": ["yes", "no", "no", "no"],
            "more_stories": ["yes", "yes", "no"],
            "another_epic": ["no"],
        },
    )
    first = team.waiting_task()
    assert first.step_id == "create_project_brief"
    assert first.roles == ["analyst"]
    assert first.state is TaskState.READY
    team.index("project-brief")
    assert team.waiting_task().step_id == "create_prd"
    assert "Project brief is complete" in team.waiting_task().handoff_prompt
    # Story 1: QA finds issues once; the dev fixes; QA reviews again.
    team.until(lambda t: t.waiting_task() is not None and t.waiting_task().step_id == "address_qa_feedback")
    assert team.waiting_task().roles == ["dev"]
    team.act()
    assert team.waiting_task().step_id == "review_implementation"
    assert team.waiting_task().visit == 2
    final = team.drive()
    assert final.outcome == "completed"
    status = sprint_status(final, project="P", generated=team.now)["development_status"]
    assert status == {
        "epic-1": "done",
        "1-1-story-1": "done",
        "1-2-story-2": "done",
        "1-3-story-3": "done",
        "epic-1-retrospective": "done",
    }


def test_story_status_follows_the_cycle():
    team = Scripted("greenfield-service")
    team.until(lambda t: t.waiting_task() is not None and t.waiting_task().step_id == "create_story")
    story = team.state.stories[0]
    assert (story.epic, story.number, story.status) == (1, 1, "backlog")
    team.index("story")
    assert team.state.stories[0].status == "ready-for-dev"
    team.until(lambda t: t.waiting_task() is not None and t.waiting_task().step_id == "implement_story")
    dev = agent_for(["dev"])
    task = team.waiting_task()
    team.run(lambda e: e.claim(task.id, dev, lease_seconds=60))
    assert team.state.stories[0].status == "in-progress"
    team.run(lambda e: e.complete(task.id, dev))
    assert team.state.stories[0].status == "review"
    assert team.waiting_task().step_id == "review_implementation"
    team.run(lambda e: e.skip(team.waiting_task().id, PERSON))  # QA is optional; no fix question then
    assert team.waiting_decision().kind is DecisionKind.MORE_STORIES
    assert team.state.stories[0].status == "done"


def test_agents_claim_only_their_roles_and_leases_expire():
    team = Scripted("greenfield-fullstack")
    task = team.waiting_task()
    with pytest.raises(errors.RoleNotAllowed, match="analyst"):
        team.run(lambda e: e.claim(task.id, agent_for(["pm"]), lease_seconds=60))
    a, b = agent_for(["analyst"]), Actor(subject="agent-b", kind="agent", roles=frozenset({"analyst"}))
    team.run(lambda e: e.claim(task.id, a, lease_seconds=60))
    with pytest.raises(errors.TaskClaimedByOther):
        team.run(lambda e: e.claim(task.id, b, lease_seconds=60))
    team.now += timedelta(seconds=61)
    assert team.state.tasks[task.id].effective_state(team.now) is TaskState.READY
    team.run(lambda e: e.claim(task.id, b, lease_seconds=60))  # the lease ran out: b may take it
    with pytest.raises(errors.TaskClaimedByOther):
        team.run(lambda e: e.complete(task.id, a))
    team.now += timedelta(seconds=61)
    expired = team.run(lambda e: e.expire_leases())
    assert [t.id for t in expired] == [task.id]
    assert team.state.tasks[task.id].state is TaskState.READY
    assert team.effects.count("task_ready") >= 2


def test_documents_must_be_indexed_of_the_right_kind_and_not_reused():
    team = Scripted("greenfield-fullstack")
    task = team.waiting_task()
    with pytest.raises(errors.DocumentRequired):
        team.run(lambda e: e.complete(task.id, PERSON))
    with pytest.raises(errors.DocumentNotIndexed):
        team.run(lambda e: e.complete(task.id, PERSON, document_id="00000000-0000-7000-8000-00000000dead"))
    prd = team.index("prd")  # early: nothing waits for a PRD yet
    assert team.waiting_task().id == task.id
    with pytest.raises(errors.DocumentKindMismatch):
        team.run(lambda e: e.complete(task.id, PERSON, document_id=prd))
    brief = team.index("project-brief")
    # The brief completed the analyst task; the PRD that arrived early completed the PM task at once.
    assert team.state.tasks[task.id].document_id == brief
    done = [t for t in team.state.tasks.values() if t.step_id == "create_prd"]
    assert done[0].state is TaskState.COMPLETED
    assert done[0].document_id == prd
    assert team.waiting_task().step_id == "create_front_end_spec"
    # A redelivered or older event changes nothing.
    before = team.state.model_dump_json()
    assert (
        team.run(lambda e: e.document_indexed(KnownDocument(document_id=brief, kind="project-brief")))
        is False
    )
    assert team.state.model_dump_json() == before


def test_requirements_come_from_documents_not_from_the_caller():
    team = Scripted("brownfield-ui")
    team.act()  # ui analysis (reference document)
    prd = team.waiting_task()
    assert prd.step_id == "create_prd"
    team.index("prd")
    spec = team.waiting_task()
    assert spec.requires == ["prd.md"]
    assert spec.state is TaskState.READY


def test_pending_until_inputs_exist():
    # A hand-written workflow whose second step needs a document no step creates.
    m = load_definition(
        "workflow:\n  id: t\n  sequence:\n"
        "    - agent: analyst\n      action: research\n"
        "    - agent: pm\n      creates: prd.md\n      requires: project-brief.md\n"
    )
    team = Team(m, choose=lambda options: options[0])
    team.run(lambda e: e.complete(team.state.waiting_task, PERSON))
    task = team.state.tasks[team.state.waiting_task]
    assert task.state is TaskState.PENDING
    assert task.missing == ["project-brief.md"]
    with pytest.raises(errors.TaskNotReady, match=r"project-brief\.md"):
        team.run(lambda e: e.claim(task.id, PERSON, lease_seconds=60))
    team.index("project-brief")
    assert team.state.tasks[task.id].state is TaskState.READY


def test_router_branch_ends_the_workflow_early():
    team = Scripted("brownfield-fullstack")
    team.act()  # classification
    decision = team.waiting_decision()
    assert decision.kind is DecisionKind.ROUTER
    assert decision.options == [
        "single_story",
        "small_feature",
        "major_enhancement",
    ]
    with pytest.raises(errors.InvalidAnswer):
        team.run(lambda e: e.answer(decision.id, PERSON, "tiny"))
    team.run(lambda e: e.answer(decision.id, PERSON, "single_story"))
    branch = team.waiting_task()
    assert branch.route == "single_story"
    assert branch.roles == ["pm"]
    assert branch.uses == "brownfield-create-story"
    team.act()
    assert team.state.status == "completed"
    assert team.state.outcome == "early_exit"
    assert "completed" in team.effects


def test_router_continue_answers_the_path_token():
    team = Scripted(
        "brownfield-fullstack",
        {"routing_decision": ["major_enhancement"], "documentation_inadequate": ["yes"]},
    )
    team.until(lambda t: t.waiting_task() is not None and t.waiting_task().step_id == "project_analysis")
    asked = {d.token for d in team.state.decisions.values()}
    assert "major_enhancement_path" not in asked
    assert "after_prd_creation" not in asked


def test_po_fix_goes_to_the_owners_of_flagged_documents_then_back_to_validation():
    team = Scripted("greenfield-service")
    team.until(
        lambda t: t.waiting_decision() is not None and t.waiting_decision().token == "po_checklist_issues"
    )
    decision = team.waiting_decision()
    with pytest.raises(errors.InvalidAnswer):
        team.run(lambda e: e.answer(decision.id, PERSON, "yes", flagged=["nonsense.md"]))
    team.run(lambda e: e.answer(decision.id, PERSON, "yes", flagged=["architecture.md"]))
    fix = team.waiting_task()
    assert fix.step_id == "update_any_flagged_documents"
    assert fix.roles == ["architect"]
    team.act()
    assert team.waiting_task().step_id == "validate_all_artifacts"
    assert team.waiting_task().visit == 2
    team.act()
    again = team.waiting_decision()
    assert again.token == "po_checklist_issues"
    assert again.id != decision.id


def test_skip_only_optional_and_fail_makes_a_new_attempt():
    team = Scripted("greenfield-fullstack")
    task = team.waiting_task()
    with pytest.raises(errors.TaskNotOptional):
        team.run(lambda e: e.skip(task.id, PERSON))
    team.run(lambda e: e.fail(task.id, PERSON, reason="crashed"))
    retry = team.waiting_task()
    assert retry.id != task.id
    assert retry.attempt == 2
    assert retry.state is TaskState.READY
    assert team.state.tasks[task.id].state is TaskState.FAILED
    with pytest.raises(errors.TaskClosed):
        team.run(lambda e: e.claim(task.id, PERSON, lease_seconds=60))


def test_decisions_are_answered_once():
    team = Scripted("greenfield-fullstack")
    team.until(lambda t: t.waiting_decision() is not None)
    d = team.waiting_decision()
    team.run(lambda e: e.answer(d.id, PERSON, "no"))
    with pytest.raises(errors.DecisionClosed):
        team.run(lambda e: e.answer(d.id, PERSON, "yes"))
    assert team.state.decisions[d.id].answered_by == PERSON.subject


def test_v6_phase_condition_is_asked_once_for_the_phase():
    team = Scripted("method-brownfield", {"if_undocumented": ["no"], "if_has_ui": ["yes"]})
    d = team.waiting_decision()
    assert d.token == "if_undocumented"
    assert d.kind is DecisionKind.CONDITION
    team.act()
    assert team.state.step_states["document_project"] == "skipped"
    assert team.waiting_task().step_id == "brainstorm_project"
    assert team.waiting_task().optional
    final = team.drive()
    assert final.outcome == "completed"
    ux = [t for t in final.tasks.values() if t.step_id == "create_ux_design"]
    assert ux
    assert ux[0].roles == ["ux-expert"]


def test_alternative_sequences_ask_which_one():
    m = load_definition(
        "workflow:\n  id: alt\n"
        "  full_sequence:\n    - agent: analyst\n      creates: project-brief.md\n"
        "  prototype_sequence:\n    - agent: pm\n      creates: prd.md\n"
    )
    team = Team(m, choose=lambda options: options[0])
    d = team.state.decisions[team.state.waiting_decision]
    assert d.kind is DecisionKind.SEQUENCE
    assert d.options == ["full", "prototype"]
    team.run(lambda e: e.answer(d.id, PERSON, "prototype"))
    assert team.state.tasks[team.state.waiting_task].produces_kind == "prd"
