"""``shared.testing.rss`` on real child processes: a leaking one is told from a steady one."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.testing.rss import RssWatch, python_pid, rss_mb

# 1 MiB kept (and touched) every 50 ms, or the same allocated and dropped.
LEAKER = 'import time\nkept = []\nwhile True:\n    kept.append(b"x" * (1 << 20)); time.sleep(0.05)\n'
STEADY = 'import time\nwhile True:\n    dropped = b"x" * (1 << 20); time.sleep(0.05)\n'


@pytest.fixture
def children() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs = {
        "leaker": subprocess.Popen([sys.executable, "-c", LEAKER]),
        "steady": subprocess.Popen([sys.executable, "-c", STEADY]),
        # A shell that stays the parent (a command follows): the watch must find the Python under it.
        "wrapped": subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{STEADY}'; true"]),
    }
    yield procs
    for proc in procs.values():
        proc.kill()
        proc.wait()


def test_a_leak_is_a_slope_and_steady_memory_is_flat(children: dict[str, subprocess.Popen[bytes]]) -> None:
    time.sleep(0.5)  # the shell has started its child
    watch = RssWatch(children)
    assert watch.pids["leaker"] == children["leaker"].pid
    assert watch.pids["wrapped"] != children["wrapped"].pid
    assert Path(f"/proc/{watch.pids['wrapped']}/exe").resolve().name.startswith("python")
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < 3.0:
        watch.sample(elapsed)
        time.sleep(0.1)
    trends = watch.trends(warmup=0.5)
    assert trends["leaker"].growth > 25, trends["leaker"]
    assert trends["leaker"].slope_per_hour > 25 * 3600 / 3, trends["leaker"]
    assert trends["leaker"].end - trends["leaker"].baseline > 25, trends["leaker"]
    for name in ("steady", "wrapped"):
        assert abs(trends[name].growth) < 5, (name, trends[name])
    assert not watch.exited


def test_an_exited_process_is_noted_not_sampled(children: dict[str, subprocess.Popen[bytes]]) -> None:
    watch = RssWatch({"steady": children["steady"]})
    watch.sample(0.0)
    children["steady"].kill()
    children["steady"].wait()
    watch.sample(1.0)
    watch.sample(2.0)
    assert "steady" in watch.exited
    assert [t for t, _ in watch.samples["steady"]] == [0.0]
    with pytest.raises(OSError):
        rss_mb(children["steady"].pid)
    with pytest.raises(LookupError):
        python_pid(children["steady"].pid)
