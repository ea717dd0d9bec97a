"""The normalized workflow model every BMAD file format is loaded into.

One model for the v4 orchestration files (``workflow:`` with ``sequence``) and the v6 track files
(``phases:`` → ``workflows:``): the engine only ever sees this. It is versioned (``MODEL_VERSION``) because
it is stored as JSON next to the source text of each definition version and instances keep running on the
model they started with.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DOCUMENT_KINDS",
    "MODEL_VERSION",
    "ArtifactRef",
    "HandoffPrompt",
    "Route",
    "Sequence",
    "Step",
    "StepKind",
    "WorkflowModel",
]

MODEL_VERSION = 1

# The document kinds a step can produce; the documents service indexes documents under these kinds.
DOCUMENT_KINDS = frozenset(
    {
        "project-brief",
        "prd",
        "front-end-spec",
        "architecture",
        "ui-architecture",
        "story",
        "qa-gate",
        "epic-retrospective",
        "sprint-status",
        "reference",
    }
)


class StepKind(StrEnum):
    ARTIFACT = "artifact"  # creates a document or a pseudo-artifact
    UPDATE = "update"  # revises existing documents
    VALIDATION = "validation"  # a gate: checks artifacts, may send work back
    ACTION = "action"  # an agent does something that leaves no named artifact
    GUIDANCE = "guidance"  # advice or a decision for people, no agent
    ROUTER = "router"  # one branch is chosen; a branch may end the workflow
    LOOP_HEAD = "loop_head"  # opens the story cycle (``repeats``)
    LOOP_TAIL = "loop_tail"  # closes it (``repeat_development_cycle``)
    END = "end"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArtifactRef(_Frozen):
    """A logical artifact name as written (``prd.md``), what it is, and any remark (``if needed``).

    ``kind`` is a document kind when the artifact is a document the documents service indexes, and
    None for pseudo-artifacts (``sharded_docs``, ``implementation_files``) that exist only as progress.
    """

    name: str
    kind: str | None = None
    remark: str | None = None

    @property
    def is_document(self) -> bool:
        return self.kind is not None


class Route(_Frozen):
    """One branch of a router step."""

    name: str
    agent: str | None = None
    roles: tuple[str, ...] = ()
    uses: str | None = None
    notes: str | None = None
    continues: bool = False  # ``continue: to_next_step``
    ends_workflow: bool = False  # the workflow stops after this branch's work
    extra: dict[str, Any] = Field(default_factory=dict)


class Step(_Frozen):
    """One step of a sequence, whatever shape it was written in."""

    id: str
    index: int
    line: int | None = None
    kind: StepKind
    name: str
    agent: str | None = None  # as written: ``pm``, ``analyst/pm``, ``various``
    roles: tuple[str, ...] = ()  # canonical roles that may do it (empty: any person)
    any_owner: bool = False  # ``various``: the owner of the flagged document
    action: str | None = None
    creates: tuple[ArtifactRef, ...] = ()
    updates: tuple[ArtifactRef, ...] = ()
    validates: tuple[ArtifactRef, ...] = ()
    requires: tuple[ArtifactRef, ...] = ()
    uses: str | None = None
    condition: str | None = None
    phase_condition: str | None = None
    optional: bool = False
    optional_steps: tuple[str, ...] = ()
    repeats: str | None = None
    routes: tuple[Route, ...] = ()
    notes: str | None = None
    phase: str | None = None
    loop_back_to: str | None = None  # a fix step returns to this step (QA ↔ dev, PO validate ↔ fix)
    per_epic: bool = False  # runs once for each finished epic (epic retrospective)
    handoff_prompt: str | None = None  # key into ``WorkflowModel.handoff_prompts``
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def produces(self) -> ArtifactRef | None:
        return self.creates[0] if self.creates else None

    @property
    def produces_document_kind(self) -> str | None:
        ref = self.produces
        return ref.kind if ref is not None else None


class Sequence(_Frozen):
    """One ordered list of steps. Most files have one (``sequence``); some offer alternatives."""

    name: str
    line: int | None = None
    steps: tuple[Step, ...]
    end_notes: str | None = None

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def index_of(self, step_id: str) -> int:
        return self.step(step_id).index

    @property
    def loop_bounds(self) -> tuple[int, int] | None:
        head = next((s.index for s in self.steps if s.kind is StepKind.LOOP_HEAD), None)
        tail = next((s.index for s in self.steps if s.kind is StepKind.LOOP_TAIL), None)
        if head is None or tail is None:
            return None
        return head, tail


class HandoffPrompt(_Frozen):
    key: str
    text: str
    steps: tuple[str, ...] = ()  # the step ids this prompt was matched to ("loosely")


class WorkflowModel(_Frozen):
    model_version: int = MODEL_VERSION
    id: str
    name: str
    description: str | None = None
    format: str  # "bmad-v4" | "bmad-v6-track"
    type: str | None = None  # greenfield | brownfield
    project_types: tuple[str, ...] = ()
    sequences: tuple[Sequence, ...]
    flow_diagram: str | None = None
    decision_guidance: Any = None
    handoff_prompts: tuple[HandoffPrompt, ...] = ()
    completion_prompt: str | None = None
    documentation: dict[str, Any] = Field(default_factory=dict)

    def sequence(self, name: str) -> Sequence:
        for s in self.sequences:
            if s.name == name:
                return s
        raise KeyError(name)

    def prompt(self, key: str | None) -> str | None:
        if key is None:
            return None
        return next((p.text for p in self.handoff_prompts if p.key == key), None)

    @property
    def roles(self) -> frozenset[str]:
        out: set[str] = set()
        for seq in self.sequences:
            for s in seq.steps:
                out.update(s.roles)
                for r in s.routes:
                    out.update(r.roles)
        return frozenset(out)
