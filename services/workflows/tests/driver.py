"""A simulated team driving the pure engine: what people, agents and the documents service would do.

``Team.act`` performs one action on whatever the instance waits for, with choices drawn from a
``choose(options)`` function (random in the property test, scripted in unit tests), and checks the
invariants after each one: the instance never waits on a task whose inputs are missing, every task that
had to produce a document completed with an indexed document of that kind, and the state survives a JSON
round trip (it is stored as JSON between operations).

"Inputs missing" is judged by the team, not by the engine: the team remembers the document kinds it had
indexed and the pseudo-artifacts (``sharded_docs``, ``implementation_files``) whose steps completed, and
reads each task's requirements from its normalized step's ``requires``. Every ``task_ready`` the engine
emits is checked against that record at the moment it is emitted, so a task that becomes ready and is
completed within one operation is checked too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from workflows.definitions.model import Step, StepKind, WorkflowModel
from workflows.engine.errors import TaskNotReady
from workflows.engine.operations import Engine
from workflows.engine.state import Actor, DecisionKind, Effect, InstanceState, KnownDocument, Task, TaskState

Choose = Callable[[list[Any]], Any]

PERSON = Actor(subject="person-1", kind="user")


def agent_for(roles: list[str]) -> Actor:
    return Actor(subject=f"agent-{'-'.join(roles) or 'any'}", kind="agent", roles=frozenset(roles))


@dataclass
class Team:
    model: WorkflowModel
    choose: Choose
    max_stories: int = 3
    max_epics: int = 2
    max_fix_loops: int = 2
    now: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    state: InstanceState = field(init=False)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    docs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    actions: int = 0
    fix_loops: dict[str, int] = field(default_factory=dict)
    stories_in_epic: int = 0
    epics: int = 0
    effects: list[str] = field(default_factory=list)
    indexed_kinds: set[str] = field(default_factory=set)  # kinds of the documents the team indexed
    made: set[str] = field(default_factory=set)  # pseudo-artifacts of the steps the team completed
    readied: set[str] = field(default_factory=set)  # tasks whose task_ready was checked
    # People also upload documents outside the workflow: at any time, and when a task waits for one.
    outside_documents: bool = False

    def __post_init__(self) -> None:
        engine = Engine.start(self.model, now=self.now, new_id=self.new_id)
        self.state = engine.state
        self.observe(engine.effects)

    def new_id(self) -> str:
        return f"00000000-0000-7000-8000-{next(self.ids):012d}"

    def engine(self) -> Engine:
        return Engine(self.model, self.state, now=self.now, new_id=self.new_id)

    def run(self, op: Callable[[Engine], Any]) -> Any:
        engine = self.engine()
        result = op(engine)
        self.observe(engine.effects)
        # The service stores the state as JSON between operations.
        self.state = InstanceState.model_validate_json(engine.state.model_dump_json())
        return result

    def index(self, kind: str, document_id: str | None = None, version: int = 1) -> str:
        doc_id = document_id or f"10000000-0000-7000-8000-{next(self.docs):012d}"
        self.indexed_kinds.add(kind)  # the document exists before its indexed event arrives
        self.run(lambda e: e.document_indexed(KnownDocument(document_id=doc_id, kind=kind, version=version)))
        return doc_id

    # -- the team's own record of what exists ------------------------------------------------------------
    def step_of(self, task: Task) -> Step:
        assert self.state.sequence is not None
        return self.model.sequence(self.state.sequence).step(task.step_id)

    def unmet(self, task: Task) -> list[str]:
        """The task's requirements that nothing the team made satisfies. A document requirement needs a
        document of its kind; a pseudo-artifact one needs a completed step that creates it, unless no
        step of the sequence creates it (then it comes from outside the workflow). A router branch's
        task carries the branch's work, which requires nothing."""
        if task.route is not None:
            return []
        assert self.state.sequence is not None
        made_somewhere = {
            ref.name for s in self.model.sequence(self.state.sequence).steps for ref in s.creates
        }
        unmet = []
        for ref in self.step_of(task).requires:
            if ref.kind is not None:
                if ref.kind not in self.indexed_kinds:
                    unmet.append(ref.name)
            elif ref.name in made_somewhere and ref.name not in self.made:
                unmet.append(ref.name)
        return unmet

    def observe(self, effects: list[Effect]) -> None:
        """Take in one operation's effects in order: what a completed step made, and whether each task
        announced ready had its inputs at that point."""
        for effect in effects:
            self.effects.append(effect.type)
            if effect.type not in ("task_completed", "task_ready"):
                continue
            task = Task.model_validate(effect.data["task"])
            if effect.type == "task_completed":
                if task.route is None:
                    self.made |= {ref.name for ref in self.step_of(task).creates if ref.kind is None}
                continue
            self.readied.add(task.id)
            unmet = self.unmet(task)
            assert unmet == [], f"{task.step_id} became ready without {unmet}"

    # -- one action ----------------------------------------------------------------------------------------
    def act(self) -> None:
        self.actions += 1
        self.now += timedelta(seconds=30)
        st = self.state
        if self.outside_documents and self.choose([False, False, True]):
            self._upload()
        elif st.waiting_decision:
            self._decide(st.decisions[st.waiting_decision])
        elif st.waiting_task:
            self._work(st.waiting_task)
        else:
            raise AssertionError(f"stuck: running, waiting on nothing (cursor {st.cursor}, stage {st.stage})")
        self.check()

    def _decide(self, decision: Any) -> None:
        options = list(decision.options)
        flagged = None
        if decision.kind is DecisionKind.MORE_STORIES:
            self.stories_in_epic += 1
            answer = self.choose(options) if self.stories_in_epic < self.max_stories else "no"
            if answer == "no":
                self.stories_in_epic = 0
        elif decision.kind is DecisionKind.ANOTHER_EPIC:
            self.epics += 1
            answer = self.choose(options) if self.epics < self.max_epics else "no"
        else:
            answer = self.choose(options)
            step = self.engine().seq.step(decision.step_id) if decision.step_id else None
            if step is not None and step.loop_back_to and answer == "yes":
                loops = self.fix_loops.get(step.id, 0) + 1
                self.fix_loops[step.id] = loops
                if loops > self.max_fix_loops:
                    answer = "no"
                elif step.any_owner:
                    owned = [
                        r.name
                        for s in self.engine().seq.steps[: step.index]
                        for r in s.creates
                        if r.is_document
                    ]
                    if owned and self.choose([True, False]):
                        flagged = [self.choose(owned)]
        self.run(lambda e: e.answer(decision.id, PERSON, answer, flagged=flagged))

    def _upload(self) -> None:
        """Someone uploads a document of a kind the workflow mentions, whether or not it is wanted yet."""
        assert self.state.sequence is not None
        steps = self.model.sequence(self.state.sequence).steps
        kinds = sorted({r.kind for s in steps for r in (*s.creates, *s.requires) if r.kind is not None})
        self.index(self.choose(kinds))

    def _supply(self, task: Task) -> None:
        """The task waits for inputs: nobody may take it; someone uploads one of the missing documents."""
        assert self.outside_documents, f"{task.step_id} waits for inputs {task.missing}"
        try:
            self.run(lambda e: e.claim(task.id, PERSON, lease_seconds=600))
        except TaskNotReady:
            pass
        else:
            raise AssertionError(f"{task.step_id} was claimed while waiting for {task.missing}")
        name = self.choose(self.unmet(task))
        ref = next(r for r in self.step_of(task).requires if r.name == name)
        assert ref.kind is not None, f"{task.step_id} waits for {name}, which no document can supply"
        self.index(ref.kind)

    def _work(self, task_id: str) -> None:
        task = self.state.tasks[task_id]
        if task.state is TaskState.PENDING:
            self._supply(task)
            return
        actor = agent_for(task.roles) if self.choose([True, False]) else PERSON
        if task.state is TaskState.READY and self.choose([True, False]):
            self.run(lambda e: e.claim(task_id, actor, lease_seconds=600))
        if task.optional and self.choose([True, False, False]):
            self.run(lambda e: e.skip(task_id, actor, reason="not needed"))
            return
        if self.choose([False, False, False, True]) and task.attempt < 2:
            self.run(lambda e: e.fail(task_id, actor, reason="agent crashed"))
            return
        kind = self.state.tasks[task_id].produces_kind
        if kind is not None:
            way = self.choose(["event", "name", "duplicate"])
            doc = self.index(kind)
            if way == "duplicate":
                self.index(kind, document_id=doc)  # redelivered: no second effect
            elif way == "name":
                # The agent reports the document it wrote; the indexing already completed the task.
                self.run(lambda e: e.complete(task_id, actor, document_id=doc))
            done = self.state.tasks[task_id]
            assert done.state is TaskState.COMPLETED, done
            assert self.state.documents[done.document_id or ""].kind == kind
            return
        title = (
            "Story " + str(self.actions)
            if self.engine().seq.step(task.step_id).kind is StepKind.LOOP_HEAD
            else None
        )
        self.run(lambda e: e.complete(task_id, actor, story_title=title))

    # -- invariants ----------------------------------------------------------------------------------------
    def check(self) -> None:
        st = self.state
        for task in st.tasks.values():
            if task.state is TaskState.READY or task.state is TaskState.CLAIMED:
                unmet = self.unmet(task)
                assert unmet == [], f"{task.step_id} is {task.state.value} without {unmet}"
            if task.state is TaskState.PENDING:
                assert self.unmet(task), f"{task.step_id} is pending though its inputs exist"
                assert sorted(task.missing) == sorted(self.unmet(task)), task
            if task.state is TaskState.COMPLETED and task.produces_kind is not None:
                assert task.document_id is not None
                assert st.documents[task.document_id].kind == task.produces_kind
        open_tasks = [t for t in st.tasks.values() if t.state.is_open]
        assert len(open_tasks) <= 1, "the engine waits on one thing at a time"
        if st.status == "running":
            assert st.waiting, "a running instance always waits on a task or a decision"

    def drive(self, limit: int = 2000) -> InstanceState:
        while self.state.status == "running":
            assert self.actions < limit, "the workflow did not end"
            self.act()
        return self.state
