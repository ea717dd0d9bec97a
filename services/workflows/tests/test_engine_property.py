"""Property: random valid decision sequences drive every built-in workflow to its end without getting
stuck, with every produced-artifact requirement satisfied along the way (see ``driver.Team``); and
generated workflows whose steps need documents that may not exist yet (a skipped optional step, a
document nobody in the workflow writes) hold such a step back until someone uploads what it needs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workflows.definitions.loader import load_definition
from workflows.definitions.model import StepKind, WorkflowModel
from workflows.definitions.service import builtin_files

from .driver import Team

MODELS: dict[str, WorkflowModel] = {p.stem: load_definition(p.read_text()) for p in builtin_files()}


def test_all_eight_workflows_are_built_in():
    assert sorted(MODELS) == [
        "brownfield-fullstack",
        "brownfield-service",
        "brownfield-ui",
        "greenfield-fullstack",
        "greenfield-service",
        "greenfield-ui",
        "method-brownfield",
        "method-greenfield",
    ]


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_decisions_drive_the_workflow_to_its_end(name, data):
    model = MODELS[name]
    team = Team(model, choose=lambda options: data.draw(st.sampled_from(options)))
    final = team.drive()
    assert final.status == "completed"
    # Every task the run made was announced ready once its inputs existed (see ``Team.observe``).
    assert team.readied == set(final.tasks)
    routers = [s for seq in model.sequences for s in seq.steps if s.routes]
    if final.outcome == "early_exit":
        assert routers, "only a router branch may end a workflow early"
    else:
        assert final.outcome == "completed"
        assert "completed" in team.effects
        # Every story reached done, every epic is done.
        assert all(s.status == "done" for s in final.stories)
        assert all(e.status == "done" for e in final.epics)
    assert not [t for t in final.tasks.values() if t.state.is_open]
    assert not [d for d in final.decisions.values() if d.state == "open"]


DOCUMENTS = ["project-brief.md", "prd.md", "front-end-spec.md", "architecture.md", "reference.md"]
ROLES = ["analyst", "pm", "ux-expert", "architect", "po", "sm", "dev", "qa"]


@st.composite
def workflows(draw) -> str:
    """A v4 sequence of 2-5 steps, each creating a different artifact and requiring any documents (some
    made later, or by an optional step, or by no step at all); ``sharded_docs`` is required only after
    the step that makes it, which is never optional, since nobody can upload progress."""
    made = draw(st.permutations([*DOCUMENTS, "sharded_docs"]))[: draw(st.integers(2, 5))]
    lines = ["workflow:", "  id: generated", "  sequence:"]
    sharded = False
    for name in made:
        requires = draw(
            st.lists(st.sampled_from([d for d in DOCUMENTS if d != name]), unique=True, max_size=3)
        )
        if sharded and draw(st.booleans()):
            requires.append("sharded_docs")
        lines += [f"    - agent: {draw(st.sampled_from(ROLES))}", f"      creates: {name}"]
        if requires:
            lines.append(f"      requires: [{', '.join(requires)}]")
        if name != "sharded_docs" and draw(st.booleans()):
            lines.append("      optional: true")
        sharded = sharded or name == "sharded_docs"
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=workflows(), data=st.data())
def test_generated_workflows_hold_steps_back_until_their_inputs_exist(source, data):
    model = load_definition(source)
    assert [s.kind for s in model.sequences[0].steps][-1] is StepKind.END
    team = Team(model, choose=lambda options: data.draw(st.sampled_from(options)), outside_documents=True)
    final = team.drive(limit=200)
    assert (final.status, final.outcome) == ("completed", "completed")
    assert team.readied == set(final.tasks)
