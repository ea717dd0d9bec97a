"""Soak: the journey's traffic at a fixed rate for a long time, every process's memory watched.

``make soak`` (marker ``soak``; neither ``make test`` nor ``make test-system`` nor CI runs it). One tenant
(a product owner, an auditor, an agent with every BMAD role) and, for ``BATON_SOAK_SECONDS`` (default
1800), an open-loop scheduler issuing ``BATON_SOAK_RATE`` actions per second (default 4) through the
gateways whatever the latency, at most ``MAX_IN_FLIGHT`` at a time (a tick with no room is counted as
skipped, never queued). The mix (``MIX``): projects created, Markdown documents uploaded, read, listed and
searched, tasks and workflows read, decisions answered, audit entries read, a missing document read on
purpose (the expected 404), and the agent working ready tasks one request at a time (claim, upload the
document the task produces, complete it: a 409 ``document_not_indexed`` while the worker indexes is
expected and retried). Access tokens are renewed (refresh and client-credentials grants) as they age.

Meanwhile the RSS of every API and worker process is sampled (``/proc/<pid>/status``, of the Python
interpreter itself). After the warm-up, the least-squares slope of each process's RSS gives its growth
over the rest of the run; growing beyond ``allowed_growth`` fails (see there for the bound and why).

Then, with the load stopped: no 5xx, error rate under ``MAX_ERROR_RATE``, fewer than ``MAX_SKIPPED`` ticks
skipped, every outbox event published and in the audit log once, every project with its workflow, every
task the agent finished reads completed, every audit chain verifies. A summary (rates, p50/p95/p99 per
action, RSS per process) is printed and written to ``<platform home>/soak-summary.txt`` with the samples in
``soak-rss.csv`` (kept with ``BATON_SYSTEM_KEEP_LOGS=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from shared.testing.rss import RssWatch, Trend

from .soak_load import MAX_IN_FLIGHT, RATE, Soak, percentile

SECONDS = float(os.environ.get("BATON_SOAK_SECONDS", "1800"))
SAMPLE_SECONDS = 5.0  # RSS sampling period
WARMUP_SECONDS = max(60.0, 0.2 * SECONDS)  # caches, pools, the embedding model and arenas fill up first
MAX_ERROR_RATE = 0.01
MAX_SKIPPED = 0.05  # of the ticks: more means the platform did not take the rate (the soak did not happen)
SETTLE_TIMEOUT = 180.0  # for the bus and the audit log to catch up once the load stops

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(SECONDS + 1200))]

PASSWORD = "Soak-passw0rd-1"
SCOPES = ["projects:read", "projects:write", "documents:read", "documents:write", "workflows:read",
          "workflows:write", "audit:read", "search"]  # fmt: skip
ROLES = ["analyst", "pm", "architect", "po", "sm", "dev", "qa", "ux-expert"]


# -- memory of the platform's processes ---------------------------------------------------------------------
def allowed_growth(baseline_mb: float) -> float:
    """Growth after the warm-up that fails the soak: more than 32 MB *and* more than 10% of the baseline.

    Measured (2 replicas, default rate): once warm (the documents workers load their ONNX model with the
    first document, +65 MB in the first minute), no process grew more than 3.1 MB over the 24 minutes
    after the warm-up of a default run, the steepest trend being the audit workers' ~7 MB/h (10-minute
    runs: at most 2.5 MB). 32 MB is ten times that, so malloc arenas and caches settling (SQLAlchemy's
    compiled cache, JWKS, connection pools) or a busier machine do not fail a run; 10% gives the ~355 MB
    documents processes the same floor. What it catches over a default run: ~11 KB kept per request in a
    gateway (each takes ~2 requests/s), ~12 KB per event in an audit worker, ~80 KB per document in a
    documents worker. The trend is a least-squares fit over every sample after the warm-up, so
    garbage-collection sawtooth and a single spike do not decide it; shorter runs catch only faster leaks.
    """
    return max(32.0, 0.10 * baseline_mb)


def leaking(trend: Trend) -> bool:
    """Both the fitted growth and the last samples against the first exceed the bound: a steady climb,
    not a fit bent by a spike at either end."""
    bound = allowed_growth(trend.baseline)
    return trend.growth > bound and trend.end - trend.baseline > bound


# -- the tenant ----------------------------------------------------------------------------------------------
def _token(http: httpx.Client, path: str, **kw: Any) -> dict[str, Any]:
    start = time.monotonic()
    r = http.post(path, **kw)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:500]}"
    body = r.json()
    return {"access": body["access_token"], "refresh": body.get("refresh_token"), "at": start,
            "expires_in": body["expires_in"]}  # fmt: skip


def _until_known(call: Callable[[], httpx.Response], what: str) -> dict[str, Any]:
    """Identity learns clients from events: a 404 naming a client it has not heard of yet is retried."""
    deadline = time.monotonic() + 30
    while (r := call()).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert r.status_code in (200, 201), f"{what}: {r.status_code} {r.text[:500]}"
    return dict(r.json())


def setup_tenant(platform: Any, helpers: Any) -> dict[str, Any]:
    """A client with a product owner, an auditor and an agent holding every scope and BMAD role."""
    admin = helpers.login(platform.gateway_url, platform.admin_email, platform.admin_password, "admin")
    tag = uuid.uuid4().hex[:6]
    client = admin.post("/v1/clients", 201, json={"name": f"Soak {tag}", "slug": f"soak-{tag}"})
    tokens: dict[str, dict[str, Any]] = {}
    with helpers.http_client(platform.gateway_url) as http:
        for who, role in (("po", "product_owner"), ("auditor", "auditor")):
            email = f"{who}.soak.{tag}@example.org"
            user = admin.post(
                "/v1/users", 201, json={"email": email, "password": PASSWORD, "display_name": who}
            )
            path = f"/v1/clients/{client['id']}/members/{user['id']}"
            _until_known(
                lambda p=path, r=role: admin.request("PUT", p, json={"role": r}), f"{who} membership"
            )
            tokens[who] = _token(http, "/v1/auth/login", json={"email": email, "password": PASSWORD})
        agent = _until_known(
            lambda: admin.request("POST", f"/v1/clients/{client['id']}/agents",
                                  json={"name": "soak-agent", "scopes": SCOPES, "bmad_roles": ROLES}),
            "agent",
        )  # fmt: skip
        form = {
            "grant_type": "client_credentials",
            "client_id": agent["id"],
            "client_secret": agent["client_secret"],
        }
        tokens["agent"] = _token(http, "/v1/auth/token", data=form) | {
            "client_id": agent["id"], "secret": agent["client_secret"]}  # fmt: skip
    admin.close()
    return {"client_id": client["id"], "tokens": tokens}


# -- after the load ------------------------------------------------------------------------------------------
async def _ledger(platform: Any) -> dict[str, Any]:
    """Outbox events (every service but audit) unpublished, missing from the audit log, or in it twice."""
    conn = await platform.db()
    try:
        schemas = [r["table_schema"] for r in await conn.fetch(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox' "
            "AND table_schema <> 'audit' ORDER BY 1")]  # fmt: skip
        out = {"events": 0, "unsent": 0, "missing": 0, "duplicated": 0, "chains": []}
        audit = platform.has("audit")
        for schema in schemas:
            row = await conn.fetchrow(
                f'SELECT count(*) AS n, count(*) FILTER (WHERE sent_at IS NULL) AS unsent FROM "{schema}".outbox'
            )
            out["events"] += row["n"]
            out["unsent"] += row["unsent"]
            if audit:
                out["missing"] += await conn.fetchval(
                    f'SELECT count(*) FROM "{schema}".outbox o WHERE NOT EXISTS '
                    "(SELECT 1 FROM audit.entries e WHERE e.event_id = o.id::text)"
                )
        if audit:
            out["duplicated"] = await conn.fetchval(
                "SELECT count(*) FROM (SELECT event_id FROM audit.entries GROUP BY event_id "
                "HAVING count(*) > 1) d"
            )
            out["chains"] = [r["chain_id"] for r in await conn.fetch("SELECT chain_id FROM audit.chains")]
        return out
    finally:
        await conn.close()


async def _gather_limited(calls: list[Any], limit: int = 6) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Any) -> Any:
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


async def check_after(soak: Soak) -> dict[str, Any]:
    """What must hold once the load stops (after the bus and the audit log caught up)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        ledger = await _ledger(soak.platform)
        settled = not (ledger["unsent"] or ledger["missing"])
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(3.0)
    po = {"Authorization": f"Bearer {soak.tokens['po']['access']}"}
    agent = {"Authorization": f"Bearer {soak.tokens['agent']['access']}"}
    workflows = await _gather_limited(
        [soak.http.get(f"/v1/projects/{p}/workflow", headers=po) for p, _ in soak.projects]
    )
    no_workflow = [p for (p, _), r in zip(soak.projects, workflows, strict=True) if r.status_code != 200]
    stuck = [
        p
        for (p, _), r in zip(soak.projects, workflows, strict=True)
        if r.status_code == 200
        and (r.json()["status"] not in ("running", "completed")
             or (r.json()["status"] == "running" and not (r.json()["open_tasks"] or r.json()["open_decisions"])))
    ]  # fmt: skip
    done = [t for t, how in soak.finished.items() if how == "completed"]
    reads = await _gather_limited([soak.http.get(f"/v1/tasks/{t}", headers=agent) for t in done])
    not_completed = [
        t
        for t, r in zip(done, reads, strict=True)
        if r.status_code != 200 or r.json()["state"] != "completed"
    ]
    platform = soak.platform  # the admin logs in now: a token from before the soak has expired
    credentials = {"email": platform.admin_email, "password": platform.admin_password}
    login = await soak.http.post("/v1/auth/login", json=credentials)
    assert login.status_code == 200, f"admin login: {login.status_code} {login.text[:300]}"
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    verify_failures = []
    for chain in ledger["chains"]:
        r = await soak.http.get("/v1/audit/verify", params={"client_id": chain}, headers=admin, timeout=120)
        if r.status_code != 200 or not r.json()["ok"]:
            verify_failures.append(f"{chain}: {r.status_code} {r.text[:300]}")
    return {"ledger": ledger, "no_workflow": no_workflow, "stuck": stuck, "not_completed": not_completed,
            "verify_failures": verify_failures}  # fmt: skip


# -- the report ----------------------------------------------------------------------------------------------
def _grid(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    rule = "+-" + "-+-".join("-" * w for w in widths) + "-+"

    def line(row: list[str]) -> str:
        padded = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    return "\n".join([rule, line(cells[0]), rule, *map(line, cells[1:]), rule])


def _latency_row(label: str, latencies: list[float], counts: Counter[str]) -> list[Any]:
    ms = [f"{percentile(latencies, q) * 1000:.0f}" for q in (0.5, 0.95, 0.99, 1.0)]
    return [label, len(latencies), counts["ok"], counts["expected"], counts["error"], counts["5xx"], *ms]


def summary(
    soak: Soak, elapsed: float, watch: RssWatch, trends: dict[str, Trend], after: dict[str, Any]
) -> str:
    s, ledger = soak.stats, after["ledger"]
    total, errors = s.total(), s.total("error")
    finished = Counter(soak.finished.values())
    head = [
        ["duration (s)", f"{elapsed:.0f} (warm-up {WARMUP_SECONDS:.0f})"],
        ["rate target / achieved (req/s)", f"{RATE:g} / {total / elapsed:.2f}"],
        [f"ticks / skipped ({MAX_IN_FLIGHT} in flight)", f"{s.ticks} / {s.skipped}"],
        ["requests / errors / 5xx", f"{total} / {errors} / {s.total('5xx')}"],
        ["error rate", f"{errors / max(total, 1):.3%}"],
        ["expected 404 / 409", s.total("expected")],
        ["projects / documents", f"{len(soak.projects)} / {len(soak.documents)}"],
        ["tasks completed / skipped", f"{finished['completed']} / {finished['skipped']}"],
        ["decisions answered", len(soak.answered)],
        ["outbox events / unsent", f"{ledger['events']} / {ledger['unsent']}"],
        ["events not in audit / twice", f"{ledger['missing']} / {ledger['duplicated']}"],
        ["workflows missing / stuck", f"{len(after['no_workflow'])} / {len(after['stuck'])}"],
        ["finished tasks not completed", len(after["not_completed"])],
        ["audit chains ok / failing", f"{len(ledger['chains']) - len(after['verify_failures'])} / "
                                      f"{len(after['verify_failures'])}"],
    ]  # fmt: skip
    rows = [_latency_row(label, s.latencies[label], s.outcomes[label]) for label in sorted(s.latencies)]
    everything = [x for values in s.latencies.values() for x in values]
    if everything:
        rows.append(_latency_row("overall", everything, sum(s.outcomes.values(), Counter())))
    memory = [
        [name, watch.pids[name], f"{t.start:.0f}", f"{t.baseline:.0f}", f"{t.end:.0f}", f"{t.growth:+.1f}",
         f"{t.slope_per_hour:+.1f}", f"{allowed_growth(t.baseline):.0f}", "LEAK" if leaking(t) else "ok"]
        for name, t in sorted(trends.items())
    ]  # fmt: skip
    parts = [
        "soak summary",
        _grid(["soak", "value"], head),
        "requests (latency as the client saw it, through the gateways)",
        _grid(
            ["action", "n", "2xx", "expected", "errors", "5xx", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows
        ),
        "memory (RSS MB; growth = least-squares slope x time after the warm-up)",
        _grid(["process", "pid", "start", "baseline", "end", "growth", "MB/h", "bound", ""], memory),
        f"statuses: {dict(sorted(s.statuses.items()))}",
    ]
    if not trends:
        parts.append(
            f"memory not judged: the run is shorter than its warm-up plus {6 * SAMPLE_SECONDS:.0f} s"
        )
    if watch.exited:
        parts.append(f"processes that exited: {watch.exited}")
    if s.errors:
        parts.append("first errors:\n  " + "\n  ".join(s.errors))
    return "\n".join(parts)


# -- the test ------------------------------------------------------------------------------------------------
async def drive(
    platform: Any, helpers: Any, tenant: dict[str, Any]
) -> tuple[Soak, float, RssWatch, dict[str, Any]]:
    """The load for ``SECONDS`` with memory sampled throughout, then the checks of ``check_after``."""
    watch = RssWatch(platform.stack.processes)
    stop, checked = asyncio.Event(), asyncio.Event()
    timeout = httpx.Timeout(30.0, connect=5.0)
    async with helpers.async_http_client(platform.gateway_url, timeout=timeout) as http:
        soak = Soak(platform, http, tenant)
        start = time.monotonic()

        async def sample() -> None:
            while not stop.is_set():
                watch.sample(time.monotonic() - start)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)

        sampler = asyncio.create_task(sample())
        keeper = asyncio.create_task(soak.keep_tokens(checked))  # tokens stay fresh for the checks too
        try:
            try:
                await soak.run(SECONDS)
            finally:
                elapsed = time.monotonic() - start
                stop.set()
                await sampler
                watch.sample(elapsed)
            after = await check_after(soak)
        finally:
            checked.set()
            await keeper
        return soak, elapsed, watch, after


def test_soak(request: pytest.FixtureRequest, helpers: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Half an hour: only when asked for (a bare ``pytest`` would otherwise start it), before the platform.
    if "soak" not in request.config.getoption("markexpr") and "BATON_SOAK_SECONDS" not in os.environ:
        pytest.skip("runs on request: make soak, pytest -m soak, or BATON_SOAK_SECONDS set")
    platform = request.getfixturevalue("platform")
    tenant = setup_tenant(platform, helpers)
    soak, elapsed, watch, after = asyncio.run(drive(platform, helpers, tenant))

    trends = watch.trends(WARMUP_SECONDS)
    text = summary(soak, elapsed, watch, trends, after)
    with capsys.disabled():  # shown on success too, without -s
        print("\n" + text)
    home = platform.stack.home
    (home / "soak-summary.txt").write_text(text + "\n")
    rows = [
        f"{name},{t:.1f},{mb:.1f}\n" for name, points in sorted(watch.samples.items()) for t, mb in points
    ]
    (home / "soak-rss.csv").write_text("process,seconds,rss_mb\n" + "".join(rows))

    s, ledger = soak.stats, after["ledger"]
    assert s.total() > 0, "no request was sent"
    assert not watch.exited, f"processes exited during the soak: {watch.exited}"
    assert s.total("5xx") == 0, f"5xx responses: {[e for e in s.errors if ' → 5' in e]}"
    assert s.total("error") <= MAX_ERROR_RATE * s.total(), f"error rate over {MAX_ERROR_RATE:.0%}: {s.errors}"
    assert s.skipped <= MAX_SKIPPED * s.ticks, (
        f"{s.skipped} of {s.ticks} ticks skipped: the rate was not held"
    )
    if SECONDS >= WARMUP_SECONDS + 10 * SAMPLE_SECONDS:
        assert set(trends) == set(watch.pids), f"memory of {set(watch.pids) - set(trends)} not judged"
    leaks = {name: t for name, t in trends.items() if leaking(t)}
    assert not leaks, f"memory growth beyond the bound after the warm-up: {leaks}"
    assert ledger["unsent"] == 0, f"{ledger['unsent']} outbox events never published"
    assert ledger["missing"] == 0, f"{ledger['missing']} events not in the audit log"
    assert ledger["duplicated"] == 0, f"{ledger['duplicated']} events in the audit log twice"
    assert not after["no_workflow"], f"projects without a workflow: {after['no_workflow'][:10]}"
    assert not after["stuck"], f"workflows waiting on nothing: {after['stuck'][:10]}"
    assert not after["not_completed"], (
        f"finished tasks that do not read completed: {after['not_completed'][:10]}"
    )
    assert not after["verify_failures"], f"audit chains failing verify: {after['verify_failures']}"
