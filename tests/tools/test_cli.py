"""``baton run``'s shutdown: signals that arrive while it stops everything do not cut it short."""

from __future__ import annotations

import subprocess
import sys

# Run apart: without the protection the signals below would interrupt or end the test session itself.
SCRIPT = """
import os, signal, time
from baton_tools.cli import shut_down

class Stack:
    def stop_services(self):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the services stop
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        print("services stopped")

    def stop_backing(self):
        print("backing stopped")

before = signal.getsignal(signal.SIGINT)
shut_down(Stack())
print("handlers restored" if signal.getsignal(signal.SIGINT) is before else "handlers changed")
"""


def test_a_second_ctrl_c_does_not_leave_the_embedded_servers_running() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "stopping...",
        "services stopped",
        "backing stopped",
        "handlers restored",
    ]
