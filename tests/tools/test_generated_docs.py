"""The committed generated documents (event catalog, configuration reference) match what the code says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("generator", ["gen_event_docs.py", "gen_config_docs.py"])
def test_generated_docs_are_up_to_date(generator: str) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / generator), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, f"run `make docs`: {res.stdout}{res.stderr}"
