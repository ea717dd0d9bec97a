"""The loader: every BMAD file loads; every step shape and variant normalizes; errors name line and step."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
from workflows.definitions.errors import DefinitionError
from workflows.definitions.loader import content_hash, load_definition
from workflows.definitions.model import StepKind
from workflows.definitions.service import BUILTIN_DIR, builtin_files
from workflows.definitions.vocabulary import artifact_kind, parse_artifacts
from workflows.engine.state import Epic, InstanceState, Story
from workflows.engine.stories import render_yaml, sprint_status

SHARED = BUILTIN_DIR  # copies of ../shared/bmad (same bytes)


def load(text: str):
    return load_definition(textwrap.dedent(text))


def problems(text: str) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(DefinitionError) as info:
        load(text)
    return [(p.line, p.step, p.reason) for p in info.value.problems]


@pytest.mark.parametrize("path", builtin_files(), ids=lambda p: p.name)
def test_every_builtin_file_loads(path):
    model = load_definition(path.read_text())
    seq = model.sequences[0]
    assert seq.steps[-1].kind is StepKind.END
    assert all(
        s.roles or s.kind in (StepKind.GUIDANCE, StepKind.ROUTER, StepKind.LOOP_TAIL, StepKind.END)
        for s in seq.steps
    )
    assert model.format == ("bmad-v6-track" if path.stem.startswith("method-") else "bmad-v4")
    # Stored as JSON and read back unchanged.
    assert type(model).model_validate_json(model.model_dump_json()) == model


# sha256 of each original in the shared BMAD sample (``shared/bmad`` beside the repository), by its path
# there, as ``sha256sum`` writes it; the service ships each under its file name.
MANIFEST = Path(__file__).with_name("bmad_originals.sha256")
ORIGINALS = Path(__file__).resolve().parents[4] / "shared" / "bmad"


def manifest() -> dict[str, str]:
    lines = MANIFEST.read_text().splitlines()
    return {path: digest for digest, path in (line.split(maxsplit=1) for line in lines)}


def test_builtin_files_are_the_shared_originals_with_their_license():
    expected = manifest()
    shipped = {p.name: p for p in BUILTIN_DIR.iterdir()}
    assert sorted(shipped) == sorted(Path(path).name for path in expected)
    for path, digest in expected.items():
        assert hashlib.sha256(shipped[Path(path).name].read_bytes()).hexdigest() == digest, path
    assert (BUILTIN_DIR / "LICENSE").read_text().startswith("MIT License")
    assert len(builtin_files()) == 8
    if ORIGINALS.is_dir():  # beside a checkout that has the shared sample: the very same bytes
        originals = sorted(
            str(p.relative_to(ORIGINALS))
            for p in ORIGINALS.rglob("*")
            if p.is_file() and p.name != "README.md"
        )
        assert originals == sorted(expected)
        for path in expected:
            assert (ORIGINALS / path).read_bytes() == shipped[Path(path).name].read_bytes(), path


def test_greenfield_fullstack_normalized():
    model = load_definition((SHARED / "greenfield-fullstack.yaml").read_text())
    assert model.id == "greenfield-fullstack"
    assert model.type == "greenfield"
    assert "mermaid" in (model.flow_diagram or "")
    steps = {s.id: s for s in model.sequences[0].steps}
    brief = steps["create_project_brief"]
    assert brief.kind is StepKind.ARTIFACT
    assert brief.roles == ("analyst",)
    assert brief.produces_document_kind == "project-brief"
    assert brief.optional_steps == ("brainstorming_session", "market_research_prompt")
    arch = steps["create_fullstack_architecture"]
    assert [r.kind for r in arch.requires] == ["prd", "front-end-spec"]
    assert arch.produces_document_kind == "architecture"
    update = steps["update_prd"]
    assert update.kind is StepKind.UPDATE
    assert update.updates[0].name == "prd.md"
    assert update.updates[0].remark == "if needed"
    assert update.condition == "architecture_suggests_prd_changes"
    assert steps["create_v0_prompt"].produces is not None
    assert steps["create_v0_prompt"].produces.kind is None
    assert steps["validate_all_artifacts"].kind is StepKind.VALIDATION
    assert steps["validate_all_artifacts"].uses == "po-master-checklist"
    fix = steps["update_any_flagged_documents"]
    assert fix.any_owner
    assert fix.loop_back_to == "validate_all_artifacts"
    assert set(fix.roles) == {"analyst", "pm", "ux-expert", "architect"}  # owners of documents made before it
    assert steps["project_setup_guidance"].kind is StepKind.GUIDANCE
    assert steps["create_story"].kind is StepKind.LOOP_HEAD
    assert steps["create_story"].repeats == "for_each_epic"
    assert steps["review_draft_story"].roles == ("analyst", "pm")
    assert steps["review_draft_story"].optional
    assert steps["address_qa_feedback"].loop_back_to == "review_implementation"
    assert steps["repeat_development_cycle"].kind is StepKind.LOOP_TAIL
    assert steps["epic_retrospective"].per_epic
    assert steps["epic_retrospective"].produces_document_kind == "epic-retrospective"
    assert steps["create_prd"].handoff_prompt == "analyst_to_pm"
    assert model.completion_prompt
    assert "validated" in model.completion_prompt
    assert model.decision_guidance["when_to_use"]


def test_router_and_its_branches():
    model = load_definition((SHARED / "brownfield-fullstack.yaml").read_text())
    router = model.sequences[0].step("routing_decision")
    assert router.kind is StepKind.ROUTER
    routes = {r.name: r for r in router.routes}
    assert routes["single_story"].roles == ("pm",)
    assert routes["single_story"].ends_workflow
    assert routes["small_feature"].uses == "brownfield-create-epic"
    assert routes["major_enhancement"].continues
    assert not routes["major_enhancement"].ends_workflow
    assert model.sequences[0].step("architecture_decision").roles == ("pm", "architect")


def test_v6_track_normalized():
    model = load_definition((SHARED / "method-brownfield.yaml").read_text())
    assert model.id == "bmad-method-brownfield"
    assert model.format == "bmad-v6-track"
    steps = {s.id: s for s in model.sequences[0].steps}
    assert steps["document_project"].phase_condition == "if_undocumented"
    assert steps["brainstorm_project"].optional
    assert steps["brainstorm_project"].phase == "1: Analysis (Optional)"
    assert steps["prd"].produces_document_kind == "prd"
    assert not steps["prd"].optional
    assert steps["create_ux_design"].condition == "if_has_ui"
    assert steps["create_ux_design"].roles == ("ux-expert",)
    assert steps["test_design"].roles == ("qa",)  # "tea" is the test architect
    assert steps["implementation_readiness"].kind is StepKind.VALIDATION
    assert steps["sprint_planning"].produces_document_kind == "sprint-status"
    assert steps["product_brief"].produces_document_kind == "project-brief"
    assert steps["document_project"].extra["command"] == "/bmad:bmm:workflows:document-project"


def test_requires_forms_and_remarks():
    refs = parse_artifacts("prd.md (if needed), front-end-spec.md")
    assert [(r.name, r.kind, r.remark) for r in refs] == [
        ("prd.md", "prd", "if needed"),
        ("front-end-spec.md", "front-end-spec", None),
    ]
    assert [r.kind for r in parse_artifacts(["project-brief.md", "story.md"])] == ["project-brief", "story"]
    assert parse_artifacts("brownfield-architecture.md (or multiple documents)")[0].kind == "architecture"
    assert artifact_kind("sharded_docs") is None
    assert artifact_kind("implementation_files") is None
    assert artifact_kind("front-end-architecture.md") == "ui-architecture"
    assert artifact_kind("multiple documents per the document-project template") == "reference"
    assert artifact_kind("qa-gate.yaml") == "qa-gate"
    assert artifact_kind("game-design-doc.md") == "reference"


VARIANTS = """\
workflow:
  id: game-dev
  name: Game development
  type: greenfield
  full_sequence:
    - agent: analyst
      creates: project-brief.md
      duration: 2 days
    - agent: pm
      creates: prd.md
      requires: project-brief.md, reference.md (if any)
      implements: [core loop]
    - project_setup_guidance:
        action: guide_project_structure
        notes: Set up the repository.
    - checkpoint: ""
  project_wrapup:
    action: wrap_up
    notes: Summarize.
  workflow_end:
    action: move_to_story_development
    notes: Design complete.
  prototype_sequence:
    - step: prototype_scope
      action: assess_prototype_complexity
    - agent: analyst
      creates: project-brief.md
    - workflow_end: ""
  prototype_workflow_end:
    action: move_to_rapid_implementation
  best_practices:
    - keep it small
  handoff_prompts:
    analyst_to_pm: Brief done, write the PRD.
    prototype_complete: Prototype defined.
"""


def test_alternative_sequences_top_level_ends_id_as_key_steps_and_extra_keys():
    model = load(VARIANTS)
    assert [s.name for s in model.sequences] == ["full", "prototype"]
    full, proto = model.sequences
    assert [s.id for s in full.steps] == [
        "create_project_brief",
        "create_prd",
        "project_setup_guidance",
        "checkpoint",
        "project_wrapup",
        "workflow_end",
    ]
    assert full.steps[0].extra == {"duration": "2 days"}
    assert full.steps[1].extra == {"implements": ["core loop"]}
    assert [r.name for r in full.steps[1].requires] == ["project-brief.md", "reference.md"]
    assert full.steps[2].kind is StepKind.GUIDANCE
    assert full.steps[2].action == "guide_project_structure"
    assert full.steps[-1].kind is StepKind.END
    assert full.steps[-1].action == "move_to_story_development"
    assert full.steps[1].handoff_prompt == "analyst_to_pm"
    # ``- workflow_end: ""`` inside the sequence, and its own <name>_workflow_end marker appended.
    assert [s.kind for s in proto.steps][-1] is StepKind.END
    assert model.documentation["best_practices"] == ["keep it small"]


def test_content_hash_is_stable():
    assert content_hash("a") == content_hash("a") != content_hash("b")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("workflow:\n  id: x\n  sequence:\n    - agent: pm\n      creates: [prd.md\n", 6, "not valid YAML"),
        ("workflow:\n  id: x\n  sequence:\n    - agent: pm\n    - 42\n", 5, "unknown step shape"),
        ("workflow:\n  id: x\n  sequence:\n    - foo: 1\n      bar: 2\n", 4, "unknown step shape"),
        ("workflow:\n  id: x\n  sequence:\n    - notes: only notes\n", 4, "unknown step shape"),
        ("workflow:\n  id: x\n  sequence:\n    - weird: [1, 2]\n", 4, "unknown step shape"),
        (
            "workflow:\n  id: x\n  sequence:\n    - agent: wizard\n      creates: prd.md\n",
            4,
            "unknown agent role 'wizard'",
        ),
        (
            "workflow:\n  id: x\n  sequence:\n    - agent: pm\n      optional: maybe\n",
            4,
            "'optional' must be true or false",
        ),
        ("workflow:\n  id: x\n  sequence:\n    - agent: pm\n      creates: {a: 1}\n", 5, "'creates' must be"),
        (
            "workflow:\n  id: x\n  sequence:\n    - agent: sm\n      creates: story.md\n      repeats: for_each_epic\n",
            4,
            "no repeat_development_cycle",
        ),
        (
            "workflow:\n  id: x\n  sequence:\n    - step: repeat_development_cycle\n",
            4,
            "no earlier 'repeats'",
        ),
        (
            "workflow:\n  id: x\n  sequence:\n    - step: a\n      action: x\n    - step: a\n      action: y\n",
            6,
            "used twice",
        ),
        ("workflow:\n  id: x\n  id: y\n  sequence: []\n", 3, "duplicate key 'id'"),
        ("workflow:\n  id: x\n  sequence:\n    - &s {agent: pm, creates: prd.md}\n    - *s\n", 5, "aliases"),
        ("workflow:\n  name: no id\n  sequence: []\n", 2, "'workflow.id' is required"),
        ("workflow:\n  id: x\n  steps: []\n", 2, "no 'sequence'"),
        ("something: else\n", 1, "unknown file format"),
        ("- a\n- b\n", 1, "must be a YAML mapping"),
        (
            "workflow:\n  id: x\n  sequence:\n    - step: r\n      routes: []\n",
            5,
            "'routes' must be a non-empty mapping",
        ),
        (
            "track: t\nfield_type: g\nphases:\n  - phase: 1\n    workflows:\n      - id: prd\n        agent: wizard\n",
            6,
            "unknown agent role",
        ),
        ("phases:\n  - phase: 1\n    workflows: nope\n", 1, "needs 'id', or 'track'"),
        (
            "track: t\nfield_type: g\nphases:\n  - phase: 1\n    workflows: nope\n",
            4,
            "'workflows' must be a non-empty list",
        ),
        (
            "track: t\nfield_type: g\nphases:\n  - phase: 1\n    workflows:\n      - agent: pm\n",
            6,
            "needs an 'id'",
        ),
    ],
)
def test_errors_name_the_line_and_why(text, line, words):
    found = problems(text)
    assert any(words in reason for _, _, reason in found), found
    assert any(at == line for at, _, reason in found if words in reason), found


def test_every_problem_is_reported_with_its_step():
    found = problems(
        """\
        workflow:
          id: x
          sequence:
            - agent: pm
              creates: prd.md
            - agent: wizard
            - 7
        """
    )
    assert [(at, s) for at, s, _ in found] == [(6, "step 2 (wizard)"), (7, "step 3")]


def test_sprint_status_export_matches_the_template_format():
    state = InstanceState(
        epics=[Epic(number=1, status="in-progress"), Epic(number=2, status="backlog")],
        stories=[
            Story(epic=1, number=1, slug="user-authentication", status="done"),
            Story(epic=1, number=2, slug="account-management", status="ready-for-dev"),
        ],
    )
    import datetime as dt

    import yaml

    status = sprint_status(
        state, project="My Awesome Project", generated=dt.datetime(2025, 6, 5, tzinfo=dt.UTC)
    )
    text = render_yaml(status)
    parsed = yaml.safe_load(text)
    template = yaml.safe_load((BUILTIN_DIR / "sprint-status-template.yaml").read_text())
    assert set(parsed) == set(template)
    assert list(parsed["development_status"].items()) == [
        ("epic-1", "in-progress"),
        ("1-1-user-authentication", "done"),
        ("1-2-account-management", "ready-for-dev"),
        ("epic-1-retrospective", "optional"),
        ("epic-2", "backlog"),
        ("epic-2-retrospective", "optional"),
    ]
    assert "# STATUS DEFINITIONS:" in text
