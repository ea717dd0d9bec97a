"""Ports handed out for child servers: never from the range outgoing connections draw from, never twice."""

from __future__ import annotations

import socket

import pytest

from shared import embedded
from shared.embedded import free_port


def test_ports_are_bindable_and_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_ports_come_from_below_the_ephemeral_range() -> None:
    ephemeral = embedded._ephemeral_range()
    if ephemeral is None or ephemeral[0] - embedded._LOWEST_PORT < 1000:
        pytest.skip("this system does not say which ports outgoing connections use")
    for _ in range(50):
        assert embedded._LOWEST_PORT <= free_port() < ephemeral[0]


def test_a_port_something_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        # Make the only candidate below the range the port already in use: it must be skipped.
        monkeypatch.setattr(embedded, "_ephemeral_range", lambda: (embedded._LOWEST_PORT + 1000, 60999))
        monkeypatch.setattr(embedded._random, "sample", lambda population, k: [taken] * k)
        assert free_port() != taken
