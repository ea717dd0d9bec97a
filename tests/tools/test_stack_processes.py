"""``baton_tools.stack.Stack`` waiting for its processes: one that dies while starting is reported at once,
with the end of its own log, so a failure is readable where it is raised (a CI log, a terminal)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from baton_tools.stack import SERVICES, Stack

from shared.embedded import free_port

GATEWAY = next(s for s in SERVICES if s.name == "gateway")


async def test_a_process_that_exits_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    stack = Stack(
        home=tmp_path,
        database="unused",
        database_url="postgresql://nobody@127.0.0.1:1/unused",  # never contacted
        nats_server_url="nats://127.0.0.1:1",  # never contacted
        ports={"gateway": free_port()},
        echo=lambda line: None,
    )
    key = stack.key(GATEWAY, "api")
    script = "import sys; print('binding failed: address already in use'); sys.exit(3)"
    stack.spawn(key, [sys.executable, "-c", script], GATEWAY)
    try:
        with pytest.raises(RuntimeError) as raised:
            await stack.wait_ready([GATEWAY], timeout=30)
    finally:
        stack.stop_services()
    message = str(raised.value)
    assert f"{key} exited" in message
    assert "binding failed: address already in use" in message
