import asyncio

import httpx

from shared.embedded import free_port
from shared.health import HealthServer


async def test_worker_health_endpoint_reports_readiness():
    state = {"db": "ok"}

    async def ready():
        return dict(state)

    server = HealthServer(free_port(), ready, host="127.0.0.1")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            state["db"] = "unavailable"
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"] == {"db": "unavailable"}
            assert (await client.get("/nope")).status_code == 404
    finally:
        await server.stop()
        await asyncio.sleep(0)
