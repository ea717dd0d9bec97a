"""Property: random valid decision sequences drive every built-in workflow to its end without getting
stuck, with every produced-artifact requirement satisfied along the way (see ``driver.Team``)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workflows.definitions.loader import load_definition
from workflows.definitions.model import WorkflowModel
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
