"""The workflow engine: a pure state machine over the normalized model.

No I/O and no clock of its own: the caller passes ``now`` and an id factory, gets the mutated
``InstanceState`` plus the ``effects`` (events to emit) and the ids of the tasks and decisions it touched
(rows to write). The instance walks its sequence one step at a time and always waits on exactly one
thing, a task or a decision, until it ends:

- a step with a condition token asks a decision (answers outside the story cycle are remembered, so a
  token is asked once; ``after_*`` tokens are ordering notes; a router's choice answers ``<choice>`` and
  ``<choice>_path`` tokens);
- a router asks which branch; a branch with work becomes a task, and a branch that does not continue
  ends the workflow after it;
- any other step becomes a task, ``pending`` until its required documents exist, then ``ready``;
- the story cycle runs from the ``repeats`` step to ``repeat_development_cycle`` once per story, asking
  "another story in this epic?" and then, after the per-epic steps (retrospective), "another epic?";
- a fix step (``loop_back_to``) sends the instance back to the review or validation it fixes, which is
  then asked about again (QA ↔ dev, PO validate ↔ fix).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Self

from workflows.definitions.model import Sequence, Step, StepKind, WorkflowModel
from workflows.engine.state import (
    Actor,
    Decision,
    DecisionKind,
    Effect,
    Epic,
    HistoryEntry,
    InstanceState,
    KnownDocument,
    Story,
    Task,
    TaskState,
)

__all__ = ["SYSTEM", "Machine"]

SYSTEM = Actor(subject="workflows", kind="system", name="workflow engine")
# How the method's usual condition tokens are asked; any other token is asked as written.
QUESTIONS = {
    "po_checklist_issues": "Did the PO checklist find issues that must be fixed?",
    "qa_left_unchecked_items": "Did QA leave unchecked items for the developer?",
    "user_wants_story_review": "Should the draft story be reviewed before development?",
    "user_wants_ai_generation": "Generate an AI UI prompt (v0, Lovable, ...) from the front-end spec?",
    "architecture_suggests_prd_changes": "Does the architecture suggest changes to the PRD?",
    "user_has_generated_ui": "Was a UI generated with an AI tool (v0, Lovable, ...)?",
    "documentation_inadequate": "Is the existing documentation inadequate (run document-project first)?",
    "architecture_changes_needed": "Are architectural changes needed?",
    "if_has_ui": "Does the project have a user interface?",
    "if_undocumented": "Is the existing project undocumented?",
}
_MAX_STEPS_PER_CALL = 10_000


class Machine:
    """Wraps one instance's state for one operation; see the module docstring."""

    def __init__(
        self, model: WorkflowModel, state: InstanceState, *, now: datetime, new_id: Callable[[], str]
    ) -> None:
        self.model = model
        self.state = state
        self.now = now
        self.new_id = new_id
        self.effects: list[Effect] = []
        self.touched_tasks: set[str] = set()
        self.touched_decisions: set[str] = set()

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        model: WorkflowModel,
        *,
        now: datetime,
        new_id: Callable[[], str],
        documents: Iterable[KnownDocument] = (),
    ) -> Self:
        """A new instance at its first step; documents the project already has are known from the start."""
        m = cls(model, InstanceState(), now=now, new_id=new_id)
        for doc in documents:
            m.state.documents[doc.document_id] = doc
        m._emit("started", {})
        m._advance()
        return m

    # -- small helpers ---------------------------------------------------------------------------------------
    @property
    def seq(self) -> Sequence:
        assert self.state.sequence is not None
        return self.model.sequence(self.state.sequence)

    def _emit(
        self, type_: str, data: dict[str, object], *, actor: Actor | None = None, **where: str | None
    ) -> None:
        self.effects.append(Effect(type=type_, data={**data, **{k: v for k, v in where.items() if v}}))
        self.state.history.append(
            HistoryEntry(
                at=self.now,
                event=type_,
                step_id=where.get("step_id"),
                task_id=where.get("task_id"),
                decision_id=where.get("decision_id"),
                actor=actor.subject if actor else None,
                detail={k: v for k, v in data.items() if k not in ("task", "decision")},
            )
        )

    def _in_loop(self, step: Step) -> bool:
        bounds = self.seq.loop_bounds
        return bounds is not None and bounds[0] <= step.index <= bounds[1]

    def _task_data(self, task: Task) -> dict[str, object]:
        return {"task": task.model_dump(mode="json")}

    def touch(self, task: Task) -> None:
        task.updated_at = self.now
        self.touched_tasks.add(task.id)

    # -- the walk ------------------------------------------------------------------------------------------
    def _advance(self) -> None:
        st = self.state
        for _ in range(_MAX_STEPS_PER_CALL):
            if st.status != "running" or st.waiting:
                return
            if st.sequence is None:
                if len(self.model.sequences) == 1:
                    st.sequence = self.model.sequences[0].name
                    st.cursor = 0
                else:
                    names = [s.name for s in self.model.sequences]
                    self._ask(
                        DecisionKind.SEQUENCE,
                        "sequence",
                        f"Which sequence should run: {', '.join(names)}?",
                        names,
                    )
                    return
            if st.stage is not None:
                self._continue_stage()
                continue
            self._visit(self.seq.steps[st.cursor])
        raise RuntimeError("the workflow did not settle; the definition loops without waiting")

    def _next(self) -> None:
        self.state.cursor += 1

    def _visit(self, step: Step) -> None:
        st = self.state
        if step.kind is StepKind.END:
            self._finish("completed", step_id=step.id)
            return
        if step.per_epic:  # already run at the end of each epic
            self._next()
            return
        if step.kind is StepKind.LOOP_TAIL:
            self._story_status(st.epic, st.story, "done")
            st.step_states[step.id] = "completed"
            st.stage = "more_stories"
            self._ask(
                DecisionKind.MORE_STORIES,
                "more_stories_in_epic",
                f"Is there another story in epic {st.epic}?",
                ["yes", "no"],
                step=step,
            )
            return
        if step.phase_condition:
            known = self._resolve(step.phase_condition, step, phase=True)
            if known is None:
                self._ask_condition(step, step.phase_condition, phase_gate=True)
                return
            if not known:
                self._skip_step(step, f"condition '{step.phase_condition}' is false")
                return
        if step.loop_back_to and st.last_outcome.get(step.loop_back_to) == "skipped":
            self._skip_step(step, f"'{step.loop_back_to}' was skipped")
            return
        if step.condition:
            known = self._resolve(step.condition, step)
            if known is None:
                self._ask_condition(step, step.condition, phase_gate=False)
                return
            if not known:
                self._skip_step(step, f"condition '{step.condition}' is false")
                return
        self._enter(step)

    def _enter(self, step: Step) -> None:
        """The step's conditions hold: do it."""
        st = self.state
        if step.kind is StepKind.LOOP_HEAD:
            if st.epic == 0:
                self._begin_epic(1)
            if st.story_of(st.epic, st.story) is None:
                st.stories.append(Story(epic=st.epic, number=st.story))
                self._emit_story(st.story_of(st.epic, st.story), None)  # type: ignore[arg-type]
        if step.kind is StepKind.ROUTER:
            options = [r.name for r in step.routes]
            question = str(step.extra.get("router_question") or step.id).replace("_", " ")
            self._ask(
                DecisionKind.ROUTER,
                step.id,
                f"Which path ({question})? {', '.join(options)}",
                options,
                step=step,
            )
            return
        self._make_task(step)

    def _resolve(self, token: str, step: Step, *, phase: bool = False) -> bool | None:
        if token.startswith("after_"):
            return True
        if token in self.state.tokens and (phase or self._cacheable(step)):
            return self.state.tokens[token]
        if token in self.state.tokens and token.endswith("_path"):
            return self.state.tokens[token]
        return None

    def _cacheable(self, step: Step) -> bool:
        return not step.loop_back_to and not self._in_loop(step)

    def _skip_step(self, step: Step, reason: str) -> None:
        self.state.step_states[step.id] = "skipped"
        self.state.last_outcome[step.id] = "skipped"
        self._emit("step_skipped", {"reason": reason}, step_id=step.id)
        self._next()

    def _finish(self, outcome: str, **detail: str | None) -> None:
        st = self.state
        st.status = "completed"
        st.outcome = outcome
        for epic in st.epics:
            if epic.status == "in-progress" and outcome == "completed":
                epic.status = "done"
        if outcome == "completed" and self.seq.steps:
            st.step_states[self.seq.steps[-1].id] = "completed"
        data: dict[str, object] = {"outcome": outcome, "completion_prompt": self.model.completion_prompt}
        data.update({k: v for k, v in detail.items() if v})
        self._emit("completed", data)

    # -- stories and epics -----------------------------------------------------------------------------------
    def _begin_epic(self, number: int) -> None:
        st = self.state
        st.epic, st.story = number, 1
        if st.epic_of(number) is None:
            st.epics.append(Epic(number=number, status="in-progress"))
        self._emit("epic_started", {"epic": number})

    def _emit_story(self, story: Story, old: str | None) -> None:
        self._emit(
            "story_status_changed",
            {
                "epic": story.epic,
                "story": story.number,
                "story_key": story.key,
                "from_status": old,
                "to_status": story.status,
            },
        )

    def _story_status(self, epic: int | None, number: int | None, status: str) -> None:
        story = self.state.story_of(epic, number)
        if story is None or story.status == status:
            return
        old, story.status = story.status, status
        self._emit_story(story, old)

    def _continue_stage(self) -> None:
        st = self.state
        if st.stage == "epilogue":
            epilogue = [s for s in self.seq.steps if s.per_epic]
            if st.epilogue_index < len(epilogue):
                step = epilogue[st.epilogue_index]
                st.epilogue_index += 1
                self._make_task(step)
                return
            st.stage = "another_epic"
            self._ask(
                DecisionKind.ANOTHER_EPIC, "another_epic", "Is there another epic to develop?", ["yes", "no"]
            )
            return
        raise RuntimeError(f"stage {st.stage} waits on a decision")

    # -- decisions -------------------------------------------------------------------------------------------
    def _ask(
        self,
        kind: DecisionKind,
        token: str,
        question: str,
        options: list[str],
        *,
        step: Step | None = None,
        phase_gate: bool = False,
    ) -> Decision:
        st = self.state
        in_cycle = (step is not None and (self._in_loop(step) or step.per_epic)) or kind in (
            DecisionKind.MORE_STORIES,
            DecisionKind.ANOTHER_EPIC,
        )
        decision = Decision(
            id=self.new_id(),
            kind=kind,
            token=token,
            question=question,
            options=options,
            step_id=step.id if step else None,
            phase_gate=phase_gate,
            roles=list(step.roles) if step else [],
            epic=st.epic if in_cycle else None,
            story=st.story if in_cycle and kind is not DecisionKind.ANOTHER_EPIC else None,
            created_at=self.now,
        )
        st.decisions[decision.id] = decision
        st.waiting_decision = decision.id
        if step is not None:
            st.step_states[step.id] = "waiting_decision"
        self.touched_decisions.add(decision.id)
        self._emit(
            "decision_requested",
            {"decision": decision.model_dump(mode="json")},
            decision_id=decision.id,
            step_id=decision.step_id,
        )
        return decision

    def _ask_condition(self, step: Step, token: str, *, phase_gate: bool) -> None:
        question = QUESTIONS.get(token) or f"{token.replace('_', ' ')}?"
        self._ask(
            DecisionKind.CONDITION,
            token,
            question[0].upper() + question[1:],
            ["yes", "no"],
            step=step,
            phase_gate=phase_gate,
        )

    # -- tasks -----------------------------------------------------------------------------------------------
    def _make_task(self, step: Step, *, route: str | None = None, attempt: int = 1) -> Task:
        st = self.state
        visit = st.visits.get(step.id, 0) + (1 if attempt == 1 else 0)
        st.visits[step.id] = visit
        branch = next((r for r in step.routes if r.name == route), None) if route else None
        roles = list(branch.roles if branch else step.roles)
        if step.any_owner and st.flagged_roles:
            roles = list(st.flagged_roles)
        produces = step.produces if branch is None else None
        in_cycle = self._in_loop(step) or step.per_epic
        task = Task(
            id=self.new_id(),
            step_id=step.id,
            route=route,
            name=f"{step.name} → {route}" if route else step.name,
            kind=step.kind.value,
            roles=roles,
            state=TaskState.PENDING,
            optional=step.optional or step.per_epic,
            requires=[r.name for r in step.requires] if branch is None else [],
            produces=produces.name if produces else None,
            produces_kind=produces.kind if produces else None,
            update_kinds=sorted({r.kind for r in step.updates if r.kind}) if branch is None else [],
            epic=st.epic if in_cycle else None,
            story=st.story if self._in_loop(step) else None,
            visit=visit,
            attempt=attempt,
            notes=(branch.notes if branch else step.notes),
            uses=(branch.uses if branch else step.uses),
            handoff_prompt=self.model.prompt(step.handoff_prompt),
            created_at=self.now,
            updated_at=self.now,
        )
        task.baseline = {
            d.document_id: d.version for d in st.documents.values() if d.kind in task.update_kinds
        }
        st.tasks[task.id] = task
        st.waiting_task = task.id
        self.touched_tasks.add(task.id)
        self._refresh_readiness(task, created=True)
        return task

    def missing_requirements(self, task: Task) -> list[str]:
        """Requirements not met, checked against the documents this project is known to have."""
        step = self._step_of(task)
        if step is None or task.route:
            return []
        produced_by = {r.name for s in self.seq.steps for r in s.creates}
        kinds = {d.kind for d in self.state.documents.values()}
        missing = []
        for req in step.requires:
            if req.kind is not None:
                if req.kind not in kinds:
                    missing.append(req.name)
            elif req.name in produced_by and req.name not in self.state.produced:
                missing.append(req.name)
        return missing

    def _step_of(self, task: Task) -> Step | None:
        try:
            return self.seq.step(task.step_id)
        except KeyError:
            return None

    def _refresh_readiness(self, task: Task, *, created: bool = False) -> None:
        if task.state is not TaskState.PENDING:
            return
        task.missing = self.missing_requirements(task)
        if task.missing:
            self.state.step_states[task.step_id] = "pending"
            if created:
                self._emit(
                    "task_pending",
                    {**self._task_data(task), "missing": task.missing},
                    task_id=task.id,
                    step_id=task.step_id,
                )
            return
        task.state = TaskState.READY
        self.touch(task)
        self.state.step_states[task.step_id] = "ready"
        self._emit("task_ready", self._task_data(task), task_id=task.id, step_id=task.step_id)
        self._bind_waiting_document(task)

    def _unconsumed(self, kind: str) -> KnownDocument | None:
        docs = [
            d
            for d in self.state.documents.values()
            if d.kind == kind and d.document_id not in self.state.consumed
        ]
        return min(docs, key=lambda d: d.document_id) if docs else None

    def _bind_waiting_document(self, task: Task) -> None:
        """A document of the kind this task must produce that arrived early completes it right away."""
        if task.produces_kind is None:
            return
        doc = self._unconsumed(task.produces_kind)
        if doc is not None:
            self._complete(task, SYSTEM, doc.document_id)

    def _complete(
        self, task: Task, actor: Actor, document_id: str | None, *, story_title: str | None = None
    ) -> None:
        from workflows.engine.stories import slugify

        st = self.state
        task.state = TaskState.COMPLETED
        task.document_id = document_id
        task.completed_by = actor.subject
        task.lease_expires_at = None
        self.touch(task)
        if document_id and task.produces_kind and document_id not in st.consumed:
            st.consumed.append(document_id)
        step = self._step_of(task)
        pseudo = step.produces if step is not None and not task.route else None
        if pseudo is not None and pseudo.kind is None and pseudo.name not in st.produced:
            st.produced.append(pseudo.name)
        st.step_states[task.step_id] = "completed"
        st.last_outcome[task.step_id] = "completed"
        self._emit(
            "task_completed",
            {**self._task_data(task), "document_id": document_id},
            actor=actor,
            task_id=task.id,
            step_id=task.step_id,
        )
        if step is not None and step.kind is StepKind.LOOP_HEAD:
            story = st.story_of(task.epic, task.story)
            doc = st.documents.get(document_id) if document_id else None
            title = story_title or (doc.title if doc is not None else None)
            if story is not None:
                if title:
                    story.slug = slugify(title)
                story.document_id = document_id
            self._story_status(task.epic, task.story, "ready-for-dev")
        elif step is not None and self._in_loop(step) and "dev" in task.roles:
            self._story_status(task.epic, task.story, "review")
        if (
            step is not None
            and step.per_epic
            and task.produces_kind == "epic-retrospective"
            and task.epic is not None
        ):
            epic = st.epic_of(task.epic)
            if epic is not None:
                epic.retrospective = "done"
        self._task_closed(task, step, completed=True)

    def _task_closed(self, task: Task, step: Step | None, *, completed: bool) -> None:
        """The waited-on task is done (or skipped): move on."""
        st = self.state
        if st.waiting_task == task.id:
            st.waiting_task = None
        st.flagged_roles = None if step is not None and step.any_owner else st.flagged_roles
        if st.stage == "epilogue":
            self._advance()
            return
        if task.route:
            branch = next((r for r in step.routes if r.name == task.route), None) if step else None
            if branch is not None and branch.ends_workflow:
                self._finish("early_exit", route=task.route, step_id=task.step_id)
                return
            self._next()
        elif completed and step is not None and step.loop_back_to:
            st.cursor = self.seq.index_of(step.loop_back_to)
        else:
            self._next()
        self._advance()
