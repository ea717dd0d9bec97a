"""The three generated-case tests every service's fuzz module runs, made once.

A module keeps its own schema and its service's fixture, names that fixture ``target`` too, and binds
the tests under its own names so their ids say which service they fuzz::

    test_audit_api, test_audit_edge_values, test_audit_api_long = generated_case_tests(schema)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import strategies as st

from .harness import FAST_EXAMPLES, SLOW_EXAMPLES, Target, fuzz_settings

__all__ = ["generated_case_tests"]

# The slow run explores new cases on every run on a developer's machine; in CI it draws the same ones
# every time, so what lands is judged on a known set and a new finding shows up where it can be fixed.
EXPLORE = os.environ.get("CI", "").lower() != "true"


def generated_case_tests(
    schema: Any, *, fast_examples: int = FAST_EXAMPLES
) -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
    """(every operation with ``fast_examples`` cases, each string as NUL and each integer as 2**31 one at a
    time, the slow run with ``SLOW_EXAMPLES`` cases), each sent through ``target``."""

    @fuzz_settings(fast_examples, deterministic=True)
    @schema.parametrize()
    @schema.given(data=st.data())
    def api(case: Any, data: Any, target: Target) -> None:
        target.exercise(case, data)

    @fuzz_settings(2, deterministic=True)
    @schema.parametrize()
    @schema.given(data=st.data())
    def edge_values(case: Any, data: Any, target: Target) -> None:
        """Each string of a valid request with a NUL in it, each integer as 2**31, one at a time: no 5xx."""
        target.probe_edges(case, data)

    @pytest.mark.slow
    @fuzz_settings(SLOW_EXAMPLES, deterministic=not EXPLORE)
    @schema.parametrize()
    @schema.given(data=st.data())
    def api_long(case: Any, data: Any, target: Target) -> None:
        target.exercise(case, data)

    return api, edge_values, api_long
