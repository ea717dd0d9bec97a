"""What every fuzz test shares: a service app on its own schema, callers of several roles, custom checks.

Each test module loads its service's OpenAPI document at import (``load_schema``, from an app built with
placeholder settings: schemathesis makes one test per operation at collection) and, in a module fixture,
builds the real app with the service's ``build_app`` factory on a fresh Postgres schema and seeds it.
Schemathesis calls the app in-process, on one event-loop thread of its own: the app's lifespan - and its
database engine - start there (``running``, ``InProcessApp``), never on the test session's loop, so the
app gets ``database_schema`` in its settings and opens its own engine.

Each generated case is sent by one caller drawn from ``Target.callers`` (``None`` = no token), and its
path, query and body ids are steered towards ids that exist (``Target.known``) half of the time, so the
fuzzer reaches the code behind the 404s. Checks: every built-in schemathesis check (no 5xx, status code /
content type / headers / body match the OpenAPI document, negative data rejected, positive data accepted
- minus business rules a schema cannot state, ``PositiveDataAccepted``) plus ``TenantIsolation``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import hypothesis
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import ensure_resource_availability, positive_data_acceptance

from shared.testing.backends import create_fresh_schema, drop_schema

from .checks import PositiveDataAccepted, TenantIsolation

__all__ = [
    "FAST_EXAMPLES",
    "INT32_PAST",
    "SLOW_EXAMPLES",
    "STATS",
    "InProcessApp",
    "PositiveDataAccepted",
    "ServerThread",
    "Snapshot",
    "Target",
    "TenantIsolation",
    "bearer",
    "describe_failure",
    "drop",
    "fresh_schema_name",
    "fuzz_settings",
    "load_schema",
    "run_async",
    "run_state_machine",
    "running",
]

T = TypeVar("T")

# Examples per operation (and per phase of the generator): the `make test` run stays around a minute.
FAST_EXAMPLES = int(os.environ.get("BATON_FUZZ_EXAMPLES", "25"))
SLOW_EXAMPLES = int(os.environ.get("BATON_FUZZ_SLOW_EXAMPLES", "200"))

# service -> number of generated cases sent; printed at the end of the session (see conftest.py).
STATS: Counter[str] = Counter()


def fuzz_settings(max_examples: int, *, deterministic: bool, shrink: bool = True) -> hypothesis.settings:
    """The fast run is derandomized (the same cases on every run, so CI is stable); the slow run explores.

    Stateful runs do not shrink (``shrink=False``): the database keeps what earlier examples wrote, so a
    replayed step sees other responses and Hypothesis would report a flaky strategy instead of the bug.
    """
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=deterministic,
        suppress_health_check=list(HealthCheck),
        phases=[*phases, Phase.shrink] if shrink else phases,
        print_blob=False,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def fresh_schema_name(database_url: str, prefix: str, metadata: Any) -> str:
    """A new schema with ``metadata``'s tables; the engine that made it is closed at once (it belongs to
    the test session's loop, and the app runs on schemathesis' loop with an engine of its own)."""
    schema, engine = await create_fresh_schema(database_url, prefix, metadata)
    await engine.dispose()
    return schema


async def drop(database_url: str, schema: str) -> None:
    """Drop a schema made by ``fresh_schema_name`` and its ``Snapshot`` copy, if any."""
    await drop_schema(database_url, schema)
    await drop_schema(database_url, f"{schema}_snap")


def load_schema(app: Any) -> Any:
    """``app``'s OpenAPI document (or the document itself) as a schemathesis schema, read without
    starting the app.

    Test modules load it at import time (schemathesis makes one test per operation at collection), from
    an app built with placeholder settings; the cases are sent to the fixture's real app (``Target.app``,
    passed as ``app=`` on each call). The coverage phase is off: its boundary cases are not bounded by
    ``max_examples`` and would take most of the time budget. A schema-violating body refused as too
    large (413, before it is even parsed) counts as rejected."""
    config = SchemathesisConfig.from_dict(
        {
            "phases": {"coverage": {"enabled": False}},
            "checks": {
                "negative_data_rejection": {
                    # schemathesis' default list, plus 413
                    "expected-statuses": (
                        [
                            "400",
                            "401",
                            "403",
                            "404",
                            "405",
                            "406",
                            "409",
                            "413",
                            "415",
                            "422",
                            "428",
                            "429",
                            "5xx",
                        ]
                    )
                }
            },
            # Credentials come from the drawn caller (``Target.callers``), never from the generator.
            "generation": {"database": "none", "with-security-parameters": False},
        }
    )
    doc = app if isinstance(app, dict) else app.openapi()
    return schemathesis.openapi.from_dict(doc, config=config)


_STOP_PATH = "/__fuzz_harness__/stop"


class InProcessApp:
    """What schemathesis is given instead of the app: the app, with its lifespan run by the harness.

    Schemathesis' pytest plugin ends every ASGI lifespan it started after each test, and restarts it on
    the next request; a module's app would start and stop once per operation (a new engine each time, the
    gateway's background tasks torn down mid-flight). So this wrapper declines the lifespan scope (taken
    as "no lifespan support"), enters the app's lifespan itself on the first request - on schemathesis'
    event loop, where every request runs - and leaves it when ``running`` sends the stop request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._context: Any = None
        self._lock: asyncio.Lock | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("the fuzz harness runs this app's lifespan")  # before any message: declined
        if scope["type"] == "http" and scope["path"] == _STOP_PATH:
            if self._context is not None:
                context, self._context = self._context, None
                await context.__aexit__(None, None, None)
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if self._context is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._context is None:
                    context = self.app.router.lifespan_context(self.app)
                    await context.__aenter__()
                    self._context = context
        await self.app(scope, receive, send)


@contextlib.contextmanager
def running(app: Any) -> Iterator[asgi.ASGIClient]:
    """An in-process client of ``app``; ``client.app`` is the ``InProcessApp`` to hand schemathesis
    (``Target.app``). The app's lifespan starts with the first request and ends on exit."""
    with asgi.get_client(InProcessApp(app)) as client:
        try:
            yield client
        finally:
            client.post(_STOP_PATH)


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh event loop in a thread of its own, from sync test code
    (fixtures seeding data between the app's requests, which run on schemathesis' loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread of its own (its lifespan on that thread's
    loop): an upstream the gateway reaches over real TCP."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, lifespan="on", log_level="critical", access_log=False, ws="none", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


class Snapshot:
    """A copy of every table of a schema, restored before each stateful scenario.

    Hypothesis assumes a scenario's steps depend only on its own draws; against a database that keeps
    what earlier scenarios wrote they do not (a create may now conflict, a list may be longer), and
    Hypothesis stops with a "flaky strategy" error. Restoring the seeded rows keeps scenarios independent.
    Runs on a thread of its own (asyncpg, fresh loop): the test session's loop is not running in a sync test.
    """

    def __init__(self, database_url: str, schema: str) -> None:
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.schema = schema
        self.copy = f"{schema}_snap"
        self.tables: list[str] = []

    def _run(self, work: Callable[[Any], Any]) -> None:
        async def main() -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                async with conn.transaction():
                    await work(conn)
            finally:
                await conn.close()

        run_async(main)

    def take(self) -> None:
        async def work(conn: Any) -> None:
            rows = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
                "AND table_type = 'BASE TABLE'",
                self.schema,
            )
            self.tables = sorted(r["table_name"] for r in rows)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.copy}" CASCADE; CREATE SCHEMA "{self.copy}"')
            for t in self.tables:
                await conn.execute(f'CREATE TABLE "{self.copy}"."{t}" AS TABLE "{self.schema}"."{t}"')

        self._run(work)

    def restore(self) -> None:
        async def work(conn: Any) -> None:
            await conn.execute("SET LOCAL session_replication_role = replica")  # no FK checks while copying
            names = ", ".join(f'"{self.schema}"."{t}"' for t in self.tables)
            await conn.execute(f"TRUNCATE {names}")
            for t in self.tables:
                await conn.execute(f'INSERT INTO "{self.schema}"."{t}" SELECT * FROM "{self.copy}"."{t}"')

        self._run(work)


# -- targets ---------------------------------------------------------------------------------------------
@dataclass
class Target:
    """One service under fuzzing."""

    service: str
    app: Any
    client: asgi.ASGIClient
    callers: dict[str, dict[str, str] | None]
    known: dict[str, list[str]] = field(default_factory=dict)
    checks: list[Any] = field(default_factory=list)
    acceptance: PositiveDataAccepted = field(default_factory=PositiveDataAccepted)
    # Operations sent without a bearer token (e.g. an OAuth token endpoint, where the Authorization
    # header carries client credentials).
    anonymous_only: frozenset[str] = frozenset()
    owner: dict[str, str] | None = None  # the caller of the stateful run
    snapshot: Snapshot | None = None  # restored before each stateful scenario
    roles_used: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)

    def summary(self) -> str:
        replays: Counter[str] = Counter()
        for check in self.checks:
            if isinstance(check, TenantIsolation):
                replays.update(check.replays)
        return (
            f"{self.service}: {STATS[self.service]} cases; statuses {dict(sorted(self.statuses.items()))}; "
            f"callers {dict(self.roles_used)}; isolation replays {dict(replays)}; "
            f"tolerated business-rule refusals {dict(self.acceptance.tolerated)}"
        )

    def isolation_replays(self) -> int:
        return sum(sum(c.replays.values()) for c in self.checks if isinstance(c, TenantIsolation))

    def exercise(self, case: Any, data: st.DataObject) -> Any:
        """Send ``case`` as a drawn caller, after steering its ids; run every check."""
        if case.operation.label in self.anonymous_only:
            role = "anonymous"
        else:
            role = data.draw(st.sampled_from(sorted(self.callers)), label="caller")
        self._steer(case, data)
        headers = self.callers.get(role)
        # Checks that send requests of their own (``ignored_auth``) use the schema's transport: in-process.
        case.operation.schema.app = self.app
        response = case.call(headers=headers, app=self.app)
        STATS[self.service] += 1
        self.roles_used[role] += 1
        self.statuses[response.status_code] += 1
        case.validate_response(
            response,
            headers=headers,
            additional_checks=[*self.checks, self.acceptance],
            excluded_checks=[positive_data_acceptance],
            transport_kwargs={"app": self.app, "headers": dict(headers or {})},
        )
        return response

    def probe_edges(self, case: Any, data: st.DataObject) -> None:
        """Send a valid case once per string and integer it carries (path, query, body), that one value
        replaced by an edge - the string with a NUL in it, the integer as 2**31 - as the admin. A 4xx is
        fine (Postgres text cannot hold NUL, an ``integer`` column stops at 2**31-1); a 5xx fails. Random
        generation rarely puts such a value exactly where a query reaches the database; this puts one
        everywhere."""
        label = case.operation.label
        hypothesis.assume(case.meta is None or case.meta.generation.mode.is_positive)
        self._steer(case, data, always=True)
        headers = None if label in self.anonymous_only else self.callers.get("admin")
        base = {"path_parameters": case.path_parameters, "query": dict(case.query or {}), "body": case.body}
        variants = [_poisoned(base, (name, *path)) for name in base for path in _edge_leaves(base[name])]
        # Optional query parameters the example left out are probed too, with an edge of their type.
        for parameter in case.operation.iter_parameters():
            if parameter.location == ParameterLocation.QUERY and parameter.name not in base["query"]:
                kind = _scalar_kind(parameter.definition.get("schema") or {})
                if kind is not None:
                    added = {
                        **base,
                        "query": {**base["query"], parameter.name: 0 if kind == "integer" else "ab"},
                    }
                    variants.append(_poisoned(added, ("query", parameter.name)))
        failures: list[str] = []
        for variant in variants:
            probe = case.operation.Case(method=case.method, media_type=case.media_type, **variant)
            response = probe.call(headers=headers, app=self.app)
            STATS[self.service] += 1
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(describe_failure(probe, response, AssertionError("5xx")))
        assert not failures, "An edge value in one field of a valid request is a server error:\n" + "\n".join(
            failures
        )

    def _steer(self, case: Any, data: st.DataObject, *, always: bool = False) -> None:
        """Replace ids by known ones, each half of the time (``always``: every time); only in components
        generated valid, so a negative case stays negative for the reason it was generated."""
        components = case.meta.components if case.meta is not None else {}

        def valid(location: ParameterLocation) -> bool:
            info = components.get(location)
            return info is None or info.mode.is_positive

        def pick(name: str) -> str | None:
            choices = st.sampled_from(self.known[name])
            return data.draw(choices if always else st.none() | choices, label=name)

        for location, container in (
            (ParameterLocation.PATH, case.path_parameters),
            (ParameterLocation.QUERY, case.query),
            (ParameterLocation.BODY, case.body),
        ):
            if not isinstance(container, dict) or not valid(location):
                continue
            for name in list(container):
                if name not in self.known:
                    continue
                value = container[name]
                # A list of ids (``project_ids``) becomes a list of one known id; a null one stays null
                # (its type is a list, not an id).
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    picked = pick(name)
                    if picked is not None:
                        container[name] = [picked]
                elif isinstance(value, str) or (value is None and not name.endswith("_ids")):
                    picked = pick(name)
                    if picked is not None:
                        container[name] = picked


def _scalar_kind(schema: Mapping[str, Any]) -> str | None:
    """``integer`` or ``string`` if a parameter's schema (or one branch of its ``anyOf``) is that type."""
    for branch in [schema, *schema.get("anyOf", ())]:
        if isinstance(branch, Mapping) and branch.get("type") in ("integer", "string"):
            return str(branch["type"])
    return None


def _edge_leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every string and integer in a JSON-like value (dict keys and list indexes)."""
    if isinstance(node, str) or (isinstance(node, int) and not isinstance(node, bool)):
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _edge_leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _edge_leaves(value, (*path, index))


INT32_PAST = 2**31


def _poison(root: dict[str, Any], path: tuple[Any, ...]) -> None:
    """The value at ``path`` made an edge: a NUL in the middle of a string, an integer past int32."""
    *parents, last = path
    node: Any = root
    for key in parents:
        node = node[key]
    value = node[last]
    if isinstance(value, str):
        node[last] = value[: len(value) // 2] + "\x00" + value[len(value) // 2 :]
    else:
        node[last] = INT32_PAST


def _poisoned(containers: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    """A copy of a case's containers with the value at ``path`` poisoned (NOT_SET and None kept as is)."""
    copied = {k: copy.deepcopy(v) if isinstance(v, dict | list | str) else v for k, v in containers.items()}
    _poison(copied, path)
    return copied


def run_state_machine(
    schema: Any, target: Target, *, checks: list[Any], settings: hypothesis.settings
) -> None:
    """Schemathesis' stateful run over ``schema``'s links (inferred, plus any the test added), every call
    made as ``target.owner`` against ``target.app``; ``checks`` run on every response with the built-in
    ones (``positive_data_acceptance`` replaced by ``target.acceptance``).

    Failures are collected, not raised: Hypothesis would replay a failing scenario against a database
    that has moved on, and report a flaky strategy instead of the failure. The run fails at the end with
    every distinct failure, its request and the answer.
    """
    schema.app = target.app  # checks that send requests of their own stay in-process
    base = schema.as_state_machine()
    stat_key = f"{target.service} (stateful)"
    failures: dict[str, str] = {}
    trail: list[str] = []

    class Workflow(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            trail.clear()
            if target.snapshot is not None:
                target.snapshot.restore()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": dict(target.owner or {}), "app": target.app}

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            STATS[stat_key] += 1
            target.statuses[response.status_code] += 1
            trail.append(f"{case.method} {case.formatted_path} -> {response.status_code}")
            try:
                case.validate_response(
                    response,
                    additional_checks=[*checks, target.acceptance],
                    # a later step may legitimately delete what an earlier one created (deleting a client
                    # deletes its projects), which this built-in check reads as a lost resource
                    excluded_checks=[positive_data_acceptance, ensure_resource_availability],
                    transport_kwargs=kwargs or None,
                    recorder=self.recorder,
                )
            except (Exception, FailureGroup) as exc:
                key = f"{case.operation.label}: {str(exc).splitlines()[0]}"
                steps = "\n".join(f"    {step}" for step in trail)
                failures.setdefault(key, f"{describe_failure(case, response, exc)}\n  scenario:\n{steps}")

    Workflow.run(settings=settings)
    assert not failures, f"{len(failures)} distinct failure(s):\n\n" + "\n\n".join(failures.values())


def describe_failure(case: Any, response: Any, exc: BaseException) -> str:
    """The failure, the request as curl (token elided) and the answer."""
    curl = case.as_curl_command(headers={"Authorization": "Bearer <token>"})
    return (
        f"{type(exc).__name__}: {exc}\n  request: {curl}\n"
        f"  answer: {response.status_code} {response.content[:500]!r}"
    )
