"""What people, agents and events do to an instance: claim, complete, skip, fail, answer, documents.

Each operation checks its rule (state, lease, role, document) and raises a domain error, or changes the
state through ``Machine`` and lets it walk on. Authorization by membership and scope is the service's
job; the role rule (an agent acts only as the BMAD roles it carries) is the engine's.
"""

from __future__ import annotations

from datetime import timedelta

from workflows.definitions.model import StepKind
from workflows.engine.errors import (
    DecisionClosed,
    DecisionNotFound,
    DocumentAlreadyUsed,
    DocumentKindMismatch,
    DocumentNotIndexed,
    DocumentRequired,
    InvalidAnswer,
    RoleNotAllowed,
    TaskClaimedByOther,
    TaskClosed,
    TaskNotFound,
    TaskNotOptional,
    TaskNotReady,
    WorkflowCompleted,
)
from workflows.engine.machine import SYSTEM, Machine
from workflows.engine.state import Actor, Decision, DecisionKind, KnownDocument, Task, TaskState

__all__ = ["Engine"]


class Engine(Machine):
    # -- lookups -----------------------------------------------------------------------------------------
    def task(self, task_id: str) -> Task:
        task = self.state.tasks.get(task_id)
        if task is None:
            raise TaskNotFound(f"Task {task_id} not found")
        return task

    def decision(self, decision_id: str) -> Decision:
        decision = self.state.decisions.get(decision_id)
        if decision is None:
            raise DecisionNotFound(f"Decision {decision_id} not found")
        return decision

    def check_role(self, task: Task, actor: Actor) -> None:
        """Agents act only as the BMAD roles their token carries; people and the system are not limited."""
        if actor.kind != "agent" or not task.roles:
            return
        if not set(task.roles) & set(actor.roles):
            mine = ", ".join(sorted(actor.roles)) or "none"
            raise RoleNotAllowed(
                f"This task needs one of the roles {', '.join(task.roles)}; your agent may act as: {mine}",
                task_roles=task.roles,
            )

    def _open_task(self, task: Task, actor: Actor) -> TaskState:
        """The task's effective state, refusing closed tasks and other holders' live claims."""
        if self.state.status != "running":
            raise WorkflowCompleted("The workflow has ended")
        state = task.effective_state(self.now)
        if not state.is_open:
            raise TaskClosed(f"The task is already {state.value}", task_state=state.value)
        if state is TaskState.PENDING:
            raise TaskNotReady(
                "The task's inputs do not exist yet: "
                + ", ".join(task.missing or self.missing_requirements(task)),
                missing=task.missing,
            )
        if state is TaskState.CLAIMED and task.claimed_by != actor.subject:
            raise TaskClaimedByOther(
                "Another agent or person holds this task", lease_expires_at=str(task.lease_expires_at)
            )
        self.check_role(task, actor)
        return state

    # -- tasks -------------------------------------------------------------------------------------------
    def claim(self, task_id: str, actor: Actor, *, lease_seconds: int) -> Task:
        """Hold a ready task for ``lease_seconds``; the holder may claim again to renew."""
        task = self.task(task_id)
        self._open_task(task, actor)
        renewing = task.state is TaskState.CLAIMED and task.claimed_by == actor.subject
        task.state = TaskState.CLAIMED
        task.claimed_by = actor.subject
        task.claimed_by_kind = actor.kind
        task.lease_expires_at = self.now + timedelta(seconds=lease_seconds)
        self.touch(task)
        self.state.step_states[task.step_id] = "claimed"
        if not renewing:
            self._emit(
                "task_claimed", self._task_data(task), actor=actor, task_id=task.id, step_id=task.step_id
            )
            step = self._step_of(task)
            if step is not None and self._in_loop(step) and "dev" in task.roles:
                self._story_status(task.epic, task.story, "in-progress")
        return task

    def complete(
        self, task_id: str, actor: Actor, *, document_id: str | None = None, story_title: str | None = None
    ) -> Task:
        """Done by its holder (or anyone allowed, on a ready task). A task that must produce a document
        names it, and the document must be one this project is known to have, of the right kind."""
        task = self.task(task_id)
        if (
            task.state is TaskState.COMPLETED
            and task.document_id == document_id
            and (document_id is not None or task.completed_by == actor.subject)
        ):
            story = self.state.story_of(task.epic, task.story) if story_title else None
            if story is not None and story.document_id == document_id:
                from workflows.engine.stories import slugify

                story.slug = slugify(story_title or "")
            return task  # a retried completion (or one the indexing got to first): same outcome
        self._open_task(task, actor)
        missing = self.missing_requirements(task)
        if missing:
            raise TaskNotReady("The task's inputs do not exist: " + ", ".join(missing), missing=missing)
        if task.produces_kind is not None:
            if document_id is None:
                raise DocumentRequired(
                    f"This task must produce a '{task.produces_kind}' document; name its document_id "
                    "(or upload it and let the indexing complete the task)"
                )
            self._check_document(document_id, {task.produces_kind}, exclusive=True)
        elif document_id is not None:
            if task.update_kinds:
                self._check_document(document_id, set(task.update_kinds), exclusive=False)
            else:
                self._check_document(document_id, None, exclusive=False)
        self._complete(task, actor, document_id, story_title=story_title)
        return task

    def _check_document(self, document_id: str, kinds: set[str] | None, *, exclusive: bool) -> None:
        doc = self.state.documents.get(document_id)
        if doc is None:
            raise DocumentNotIndexed(
                f"Document {document_id} is not an indexed document of this project (yet); retry after it is indexed"
            )
        if kinds is not None and doc.kind not in kinds:
            raise DocumentKindMismatch(
                f"Document {document_id} is a '{doc.kind}'; this task needs {' or '.join(sorted(kinds))}"
            )
        if exclusive and document_id in self.state.consumed:
            raise DocumentAlreadyUsed(f"Document {document_id} already completed another task")

    def skip(self, task_id: str, actor: Actor, *, reason: str | None = None) -> Task:
        task = self.task(task_id)
        if not task.optional:
            raise TaskNotOptional("Only optional steps can be skipped")
        self._open_task(task, actor)
        task.state = TaskState.SKIPPED
        task.reason = reason
        task.completed_by = actor.subject
        task.lease_expires_at = None
        self.touch(task)
        self.state.step_states[task.step_id] = "skipped"
        self.state.last_outcome[task.step_id] = "skipped"
        self._emit(
            "task_skipped",
            {**self._task_data(task), "reason": reason},
            actor=actor,
            task_id=task.id,
            step_id=task.step_id,
        )
        self._task_closed(task, self._step_of(task), completed=False)
        return task

    def fail(self, task_id: str, actor: Actor, *, reason: str | None = None) -> Task:
        """The attempt failed; the step gets a fresh task so the project is not stuck on it."""
        task = self.task(task_id)
        self._open_task(task, actor)
        task.state = TaskState.FAILED
        task.reason = reason
        task.completed_by = actor.subject
        task.lease_expires_at = None
        self.touch(task)
        self._emit(
            "task_failed",
            {**self._task_data(task), "reason": reason},
            actor=actor,
            task_id=task.id,
            step_id=task.step_id,
        )
        step = self._step_of(task)
        if step is not None:
            self.state.waiting_task = None
            self._make_task(step, route=task.route, attempt=task.attempt + 1)
        return task

    def expire_leases(self) -> list[Task]:
        """Claims whose lease ran out become ready again (and are announced as ready)."""
        expired = []
        for task in self.state.tasks.values():
            if task.state is TaskState.CLAIMED and task.effective_state(self.now) is TaskState.READY:
                previous = task.claimed_by
                task.state = TaskState.READY
                task.claimed_by = None
                task.claimed_by_kind = None
                task.lease_expires_at = None
                self.touch(task)
                self.state.step_states[task.step_id] = "ready"
                self._emit(
                    "task_ready",
                    {**self._task_data(task), "reason": "lease_expired", "previous_holder": previous},
                    task_id=task.id,
                    step_id=task.step_id,
                )
                expired.append(task)
        return expired

    # -- decisions ---------------------------------------------------------------------------------------
    def answer(
        self,
        decision_id: str,
        actor: Actor,
        answer: str,
        *,
        flagged: list[str] | None = None,
        comment: str | None = None,
    ) -> Decision:
        st = self.state
        decision = self.decision(decision_id)
        if decision.state != "open":
            raise DecisionClosed(f"Decision already answered '{decision.answer}'", answer=decision.answer)
        if st.status != "running":
            raise WorkflowCompleted("The workflow has ended")
        choice = answer.strip().lower() if decision.kind is not DecisionKind.ROUTER else answer.strip()
        if choice in ("true", "y"):
            choice = "yes"
        if choice in ("false", "n"):
            choice = "no"
        if choice not in decision.options:
            raise InvalidAnswer(f"Answer one of: {', '.join(decision.options)}", options=decision.options)
        flagged_roles = self._flagged_roles(flagged) if flagged else None
        decision.state = "answered"
        decision.answer = choice
        decision.answered_by = actor.subject
        decision.answered_by_kind = actor.kind
        decision.answered_at = self.now
        if flagged:
            decision.detail["flagged"] = flagged
        if comment:
            decision.detail["comment"] = comment
        self.touched_decisions.add(decision.id)
        st.waiting_decision = None
        self._emit(
            "decision_made",
            {"decision": decision.model_dump(mode="json"), "answer": decision.answer},
            actor=actor,
            decision_id=decision.id,
            step_id=decision.step_id,
        )
        self._apply_answer(decision, choice, flagged_roles)
        self._advance()
        return decision

    def _flagged_roles(self, flagged: list[str]) -> list[str]:
        """Names or kinds of flagged documents → the roles that own them (for a ``various`` fix)."""
        owners: set[str] = set()
        for item in flagged:
            needle = item.strip().lower()
            found = False
            for step in self.seq.steps:
                for ref in step.creates:
                    if ref.is_document and needle in (ref.name.lower(), (ref.kind or "").lower()):
                        owners.update(step.roles)
                        found = True
            if not found:
                raise InvalidAnswer(f"'{item}' is not a document this workflow produces")
        return sorted(owners)

    def _apply_answer(self, decision: Decision, choice: str, flagged_roles: list[str] | None) -> None:
        st = self.state
        if decision.kind is DecisionKind.SEQUENCE:
            st.sequence, st.cursor = choice, 0
            return
        if decision.kind is DecisionKind.MORE_STORIES:
            bounds = self.seq.loop_bounds
            assert bounds is not None
            st.stage = None
            if choice == "yes":
                st.story += 1
                st.cursor = bounds[0]
            else:
                epic = st.epic_of(st.epic)
                if epic is not None:
                    epic.status = "done"
                    self._emit("epic_completed", {"epic": epic.number})
                st.stage, st.epilogue_index = "epilogue", 0
            return
        if decision.kind is DecisionKind.ANOTHER_EPIC:
            bounds = self.seq.loop_bounds
            assert bounds is not None
            st.stage = None
            if choice == "yes":
                self._begin_epic(st.epic + 1)
                st.cursor = bounds[0]
            else:
                st.cursor = bounds[1] + 1
            return
        step = self.seq.step(decision.step_id) if decision.step_id else None
        assert step is not None
        if decision.kind is DecisionKind.ROUTER:
            for route in step.routes:
                st.tokens[route.name] = route.name == choice
                st.tokens[f"{route.name}_path"] = route.name == choice
            branch = next(r for r in step.routes if r.name == choice)
            st.step_states[step.id] = "completed"
            if branch.agent or branch.uses:
                self._make_task(step, route=choice)
            elif branch.ends_workflow:
                self._finish("early_exit", route=choice, step_id=step.id)
            else:
                self._next()
            return
        # a condition token
        yes = choice == "yes"
        if decision.phase_gate or self._cacheable(step):
            st.tokens[decision.token] = yes
        if decision.phase_gate:
            if not yes:
                self._skip_step(step, f"condition '{decision.token}' is false")
            return  # the walk re-visits the step; its own condition comes next
        if not yes:
            self._skip_step(step, f"condition '{decision.token}' is false")
            return
        if step.any_owner and flagged_roles:
            st.flagged_roles = flagged_roles
        self._enter(step)

    # -- documents ---------------------------------------------------------------------------------------
    def document_indexed(self, doc: KnownDocument) -> bool:
        """Record a project document; complete the waiting task it satisfies. False if nothing changed."""
        st = self.state
        known = st.documents.get(doc.document_id)
        if known is not None and known.version >= doc.version and known.kind == doc.kind:
            return False  # a duplicate or an older version arriving late
        st.documents[doc.document_id] = doc
        self._emit(
            "document_recorded", {"document_id": doc.document_id, "kind": doc.kind, "version": doc.version}
        )
        if st.status != "running" or st.waiting_task is None:
            return True
        task = st.tasks[st.waiting_task]
        if task.state is TaskState.PENDING:
            self._refresh_readiness(task)
            return True
        if not task.state.is_open:
            return True
        if (task.produces_kind == doc.kind and doc.document_id not in st.consumed) or (
            doc.kind in task.update_kinds and doc.version > task.baseline.get(doc.document_id, 0)
        ):
            self._complete(task, SYSTEM, doc.document_id)
        return True

    # -- reading -----------------------------------------------------------------------------------------
    def open_tasks(self) -> list[Task]:
        return [t for t in self.state.tasks.values() if t.effective_state(self.now).is_open]

    def current_step(self) -> str | None:
        st = self.state
        if st.status != "running" or st.sequence is None:
            return None
        if st.waiting_task:
            return st.tasks[st.waiting_task].step_id
        if st.waiting_decision:
            step_id = st.decisions[st.waiting_decision].step_id
            bounds = self.seq.loop_bounds
            if step_id is None and st.stage is not None and bounds is not None:
                return self.seq.steps[bounds[1]].id  # "another epic?" belongs to the cycle's end
            return step_id
        steps = self.seq.steps
        return steps[st.cursor].id if st.cursor < len(steps) else None

    def current_phase(self) -> str | None:
        step_id = self.current_step()
        if step_id is None:
            return "complete" if self.state.status == "completed" else None
        step = self.seq.step(step_id)
        return "development" if step.kind is StepKind.LOOP_TAIL else step.phase
