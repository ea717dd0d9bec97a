"""``definition.published``: every stored definition version is announced once through the outbox, in the
transaction that stores it; a definition stored before announcements existed is announced once at startup,
even when two replicas start at the same time."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select, text, update
from workflows.config import Settings
from workflows.definitions.models import DefinitionRow
from workflows.definitions.service import announce_unannounced, load_builtin
from workflows.main import build_app

from shared.db import transaction

from .conftest import Svc

PUBLISHED = "baton.workflows.definition.published.v1"
YAML = {"Content-Type": "application/yaml"}
BUILTIN_IDS = {
    "bmad-method-brownfield",
    "bmad-method-greenfield",
    "brownfield-fullstack",
    "brownfield-service",
    "brownfield-ui",
    "greenfield-fullstack",
    "greenfield-service",
    "greenfield-ui",
}


def tiny(name: str = "Tiny") -> str:
    return f"""\
workflow:
  id: tiny-announced
  name: {name}
  sequence:
    - agent: analyst
      creates: project-brief.md
"""


async def published(svc: Svc) -> list[dict]:
    return [e for e in await svc.outbox() if e["type"] == PUBLISHED]


async def announced_versions(svc: Svc) -> dict[str, int | None]:
    async with svc.sessions() as session:
        rows = (await session.execute(select(DefinitionRow.id, DefinitionRow.announced_version))).all()
    return {row[0]: row[1] for row in rows}


async def test_each_builtin_is_announced_once_when_stored_and_never_again(svc):
    events = await published(svc)
    assert sorted(e["data"]["definition_id"] for e in events) == sorted(BUILTIN_IDS)
    greenfield = next(e for e in events if e["data"]["definition_id"] == "greenfield-fullstack")
    assert greenfield["data"] == {
        "definition_id": "greenfield-fullstack",
        "version": 1,
        "name": greenfield["data"]["name"],
        "format": "bmad-v4",
    }
    assert greenfield["data"]["name"]
    assert greenfield["subject"] == "greenfield-fullstack"
    assert "tenant" not in greenfield  # platform-level: no client owns a definition
    assert greenfield["actor"]["subject"] == "workflows"
    assert await announced_versions(svc) == dict.fromkeys(BUILTIN_IDS, 1)

    # A restart (the API or the worker, or a second replica) stores nothing and announces nothing.
    outbox = len(await svc.outbox())
    assert await load_builtin(svc.sessions) == 0
    assert await announce_unannounced(svc.sessions) == 0
    assert len(await svc.outbox()) == outbox


async def test_an_upload_announces_each_new_version_once(svc):
    before = len(await svc.outbox())
    admin = svc.tokens.issue("admin-7", admin=True, name="Ada")
    headers = {**YAML, "Authorization": f"Bearer {admin}"}

    r = await svc.http.post("/v1/workflow-definitions", content=tiny(), headers=headers)
    assert r.status_code == 201, r.text
    new = (await svc.outbox())[before:]
    assert [e["type"] for e in new] == [PUBLISHED]
    assert new[0]["data"] == {
        "definition_id": "tiny-announced",
        "version": 1,
        "name": "Tiny",
        "format": "bmad-v4",
    }
    assert new[0]["actor"]["subject"] == "admin-7"

    # The same content again stores nothing, so it announces nothing.
    r = await svc.http.post("/v1/workflow-definitions", content=tiny(), headers=headers)
    assert r.status_code == 200, r.text
    assert len(await svc.outbox()) == before + 1

    r = await svc.http.post("/v1/workflow-definitions", content=tiny("Tiny, renamed"), headers=headers)
    assert r.status_code == 201, r.text
    new = (await svc.outbox())[before:]
    assert [e["data"]["version"] for e in new] == [1, 2]
    assert new[1]["data"]["name"] == "Tiny, renamed"
    assert (await announced_versions(svc))["tiny-announced"] == 2

    # A refused upload writes no event.
    r = await svc.http.post("/v1/workflow-definitions", content="workflow: {}\n", headers=headers)
    assert r.status_code == 422, r.text
    assert len(await svc.outbox()) == before + 2


async def _waiting_on_locks(svc: Svc, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        async with svc.engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE definitions%'"
                )
            )
        if waiting >= count:
            return
        assert time.monotonic() < deadline, f"{waiting} of {count} announcers wait on the rows"
        await asyncio.sleep(0.05)


async def test_definitions_stored_before_announcements_are_announced_once_by_racing_replicas(svc):
    # As after the migration: versions stored earlier, never announced, no event in the outbox.
    async with transaction(svc.sessions) as session:
        await session.execute(update(DefinitionRow).values(announced_version=None))
        await session.execute(text("DELETE FROM outbox"))

    async def start_replica() -> int:
        await load_builtin(svc.sessions)
        return await announce_unannounced(svc.sessions)

    # Hold the rows so both replicas are surely inside their claim at once, then let them go.
    async with svc.engine.connect() as holder:
        transaction_ = await holder.begin()
        await holder.execute(select(DefinitionRow.id).with_for_update())
        replicas = [asyncio.create_task(start_replica()) for _ in range(2)]
        await _waiting_on_locks(svc, 2)
        await transaction_.commit()
        counts = sorted(await asyncio.gather(*replicas))

    assert counts == [0, len(BUILTIN_IDS)]
    events = await published(svc)
    assert sorted(e["data"]["definition_id"] for e in events) == sorted(BUILTIN_IDS)
    assert all(e["data"]["version"] == 1 for e in events)
    assert await announced_versions(svc) == dict.fromkeys(BUILTIN_IDS, 1)

    # Started again: everything is announced already.
    assert await start_replica() == 0
    assert len(await published(svc)) == len(BUILTIN_IDS)


async def test_the_api_announces_at_startup_what_was_never_announced(svc):
    async with transaction(svc.sessions) as session:
        await session.execute(
            update(DefinitionRow).where(DefinitionRow.id == "greenfield-ui").values(announced_version=None)
        )
        await session.execute(text("DELETE FROM outbox"))

    app = build_app(
        Settings(environment="test", database_schema=svc.schema, log_json=False),
        engine=svc.engine,
        token_verifier=svc.tokens.verifier(),
        configure_observability=False,
    )
    async with app.router.lifespan_context(app):
        pass

    events = await published(svc)
    assert [(e["data"]["definition_id"], e["data"]["version"]) for e in events] == [("greenfield-ui", 1)]
    async with svc.sessions() as session:
        unannounced = await session.scalar(
            select(func.count()).select_from(DefinitionRow).where(DefinitionRow.announced_version.is_(None))
        )
    assert unannounced == 0
