"""API fuzzing (schemathesis, in-process): at the end of the session, how many cases were generated per
service, and what services still being finished report instead of failing (``Target.report_only``).
``BATON_FUZZ_REPORT=<file>`` also writes every reported finding with one example request and answer."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from .harness import DOC_GAPS, STATS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("API fuzzing: generated cases")
    for service, count in sorted(STATS.items()):
        write(f"{service:<22} {count:>7}")
    write(f"{'total':<22} {sum(STATS.values()):>7}")
    if not DOC_GAPS:
        return
    terminalreporter.section("API fuzzing: reported, not failed (OpenAPI documents still being finished)")
    grouped: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for service, operation, failure, status in DOC_GAPS:
        grouped[(service, failure)][operation].append(status)
    for (service, failure), operations in sorted(grouped.items()):
        write(f"{service}: {failure}")
        for operation, statuses in sorted(operations.items()):
            write(f"    {operation}: {', '.join(str(s) for s in sorted(statuses))}")
    target = os.environ.get("BATON_FUZZ_REPORT")
    if target:
        lines = [
            f"## {s} {o} -> {st}: {f}\n{example}\n" for (s, o, f, st), example in sorted(DOC_GAPS.items())
        ]
        Path(target).write_text("\n".join(lines))
        write(f"details: {target}")
