"""``baton``: run the whole platform on one machine (``make run``) or just apply migrations."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from baton_tools.stack import SERVICES, Service, Stack


def _available() -> list[Service]:
    found = [s for s in SERVICES if s.installed]
    missing = [s.name for s in SERVICES if not s.installed]
    if missing:
        print(f"not present in this checkout, skipped: {', '.join(missing)}")
    return found


def cmd_migrate(_: argparse.Namespace) -> int:
    stack = Stack()
    services = [s for s in _available() if s.uses_database]
    stack.start_backing()
    try:
        asyncio.run(stack.migrate(services))
    finally:
        stack.stop_backing()
    return 0


def cmd_run(_: argparse.Namespace) -> int:
    stack = Stack()
    services = _available()
    stop = asyncio.Event()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stack.start_backing()
        await stack.migrate([s for s in services if s.uses_database])
        stack.bootstrap_admin()
        stack.start_services(services)
        not_ready = await stack.wait_ready(services)
        if not_ready:
            print(f"not ready after 90 s: {', '.join(not_ready)} (logs in {stack.home / 'logs'})")
            return 1
        gateway = "http://127.0.0.1:8000"
        print(
            f"\nBaton is up: {gateway}  (API docs: {gateway}/docs, logs: {stack.home / 'logs'})\n"
            f"Log in:  curl -s {gateway}/v1/auth/login -H 'content-type: application/json' \\\n"
            '          -d \'{"email": "<admin email>", "password": "<admin password>"}\'\n'
            "Then send 'Authorization: Bearer <access_token>'. Ctrl-C stops everything; data stays in .baton/.\n"
        )
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            for key, proc in stack.processes.items():
                if proc.poll() is not None:
                    print(f"{key} exited with {proc.returncode}; see {stack.home / 'logs' / (key + '.log')}")
                    stop.set()
        return 0

    try:
        return asyncio.run(main())
    finally:
        shut_down(stack)


def shut_down(stack: Stack) -> None:
    """Stop the services, then the embedded servers. Ctrl-C reaches every process of the terminal's group
    (and ``uv run`` passes it on once more), so a second SIGINT, or a SIGTERM, arrives while this runs: they
    are ignored until it is done, or Postgres and NATS would be left running."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print("stopping...")
        try:
            stack.stop_services()
        finally:
            stack.stop_backing()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="baton", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start Postgres, NATS and every service; Ctrl-C stops").set_defaults(
        fn=cmd_run
    )
    sub.add_parser("migrate", help="create roles and schemas, apply every service's migrations").set_defaults(
        fn=cmd_migrate
    )
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
