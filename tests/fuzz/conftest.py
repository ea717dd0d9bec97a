"""API fuzzing (schemathesis, in-process): at the end of the session, how many cases were generated per
service."""

from __future__ import annotations

from typing import Any

from .harness import STATS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("API fuzzing: generated cases")
    for service, count in sorted(STATS.items()):
        write(f"{service:<22} {count:>7}")
    write(f"{'total':<22} {sum(STATS.values()):>7}")
