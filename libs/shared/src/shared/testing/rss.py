"""Resident memory of running processes, sampled over time, and its trend (Linux ``/proc``).

The soak test watches every API and worker of the platform with it: ``RssWatch.sample`` every few
seconds, then ``RssWatch.trends`` fits a least-squares line to each process's samples after a warm-up, so a
leak shows as a steady slope while garbage-collection sawtooth and one-off steps average out.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RssWatch", "Trend", "python_pid", "rss_mb"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # The command name (field 2) may hold spaces and parentheses: the parent id follows the last ")".
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def python_pid(pid: int) -> int:
    """The Python interpreter at or under ``pid``: the process itself, or the first Python descendant of a
    wrapper (``uv run``, a shell). Watching a wrapper would watch a process that never grows."""
    queue = deque([pid])
    while queue:
        candidate = queue.popleft()
        with contextlib.suppress(OSError):
            if Path(os.readlink(f"/proc/{candidate}/exe")).name.startswith("python"):
                return candidate
        queue.extend(_children(candidate))
    raise LookupError(f"no Python process at or under pid {pid}")


def rss_mb(pid: int) -> float:
    """``VmRSS`` of ``pid`` in MiB (``OSError`` once the process is gone)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"pid {pid} has no VmRSS (a zombie)")


@dataclass(frozen=True)
class Trend:
    """One process after the warm-up: medians of its first and last three samples, and the fitted line."""

    start: float  # MiB at the first sample of all
    baseline: float
    end: float
    slope_per_hour: float  # MiB/h
    growth: float  # MiB: the slope times the time between the first and the last sample after the warm-up
    samples: int


@dataclass
class RssWatch:
    """Samples of named processes (``Popen``\\ s); a process that exits or is replaced is noted, not sampled."""

    processes: dict[str, subprocess.Popen[bytes]]
    pids: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # name → (seconds, MiB)
    exited: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._popens = dict(self.processes)  # ``processes`` may be a live mapping (a respawn replaces one)
        self.pids = {name: python_pid(proc.pid) for name, proc in self._popens.items()}

    def sample(self, seconds: float) -> None:
        for name, pid in self.pids.items():
            if name in self.exited:
                continue
            proc = self._popens[name]
            if self.processes.get(name) is not proc or proc.poll() is not None:
                self.exited[name] = f"exited ({proc.poll()}) or replaced by {seconds:.0f} s"
                continue
            try:
                self.samples.setdefault(name, []).append((seconds, rss_mb(pid)))
            except OSError:
                self.exited[name] = f"gone by {seconds:.0f} s"

    def trends(self, warmup: float, min_samples: int = 6) -> dict[str, Trend]:
        """Each process's trend over its samples from ``warmup`` seconds on (those with enough of them)."""
        out = {}
        for name, points in self.samples.items():
            after = [(t, mb) for t, mb in points if t >= warmup]
            if len(after) < min_samples:
                continue
            ts, mbs = [t for t, _ in after], [mb for _, mb in after]
            mean_t, mean_mb = statistics.fmean(ts), statistics.fmean(mbs)
            spread = sum((t - mean_t) ** 2 for t in ts)
            slope = sum((t - mean_t) * (mb - mean_mb) for t, mb in after) / spread if spread else 0.0
            out[name] = Trend(
                start=points[0][1],
                baseline=statistics.median(mbs[:3]),
                end=statistics.median(mbs[-3:]),
                slope_per_hour=slope * 3600,
                growth=slope * (ts[-1] - ts[0]),
                samples=len(after),
            )
        return out
