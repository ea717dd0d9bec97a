"""The rendered NetworkPolicies, evaluated the way a CNI enforces them, against the pods of the namespace:
Baton's (from the Deployments) and the backing services' (NATS from the official chart, Postgres from
CloudNativePG, with the labels and ports those put on their pods). A connection is allowed when the source's
egress and the destination's ingress both allow it; a pod no policy selects for a direction is open in it.
The namespace's default-deny selects every pod, the backing services' included."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from .test_manifests import OVERLAYS, by_kind, render

ROOT = Path(__file__).resolve().parents[2]
API_SERVER_IP = "192.0.2.10"  # outside the pod network, like a control-plane node


@dataclass
class Pod:
    name: str
    namespace: str | None  # None: not a pod (the Kubernetes API server)
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # named container ports
    ip: str = "10.244.0.10"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not (selector.get("matchLabels", {}).items() <= labels.items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        if pod.namespace is not None:
            return False  # pod addresses are not ipBlock's business (their semantics vary by CNI)
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(pod.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if pod.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod.namespace}):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), pod.labels)


def port_matches(ports: list[dict[str, Any]] | None, destination: Pod, port: int) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        number = p.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            if destination.ports.get(number) == port:
                return True
        elif number <= port <= p.get("endPort", number):
            return True
    return False


def policy_types(policy: dict[str, Any]) -> set[str]:
    spec = policy["spec"]
    return set(spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else [])))


def side_allows(policies, direction: str, pod: Pod, peer: Pod, destination: Pod, port: int) -> bool:
    """``direction`` is ``Egress`` (``pod`` sends to ``peer``) or ``Ingress`` (``pod`` receives from it)."""
    if pod.namespace is None:
        return True
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in policy_types(p)
        and selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    return any(
        (
            not rule.get(peers_key)
            or any(peer_matches(x, p["metadata"]["namespace"], peer) for x in rule[peers_key])
        )
        and port_matches(rule.get("ports"), destination, port)
        for p in selecting
        for rule in p["spec"].get(rules_key) or []
    )


def allowed(policies, source: Pod, destination: Pod, port: int) -> bool:
    return side_allows(policies, "Egress", source, destination, destination, port) and side_allows(
        policies, "Ingress", destination, source, destination, port
    )


@dataclass
class Cluster:
    namespace: str
    policies: list[dict[str, Any]]
    baton: dict[str, Pod]  # by Deployment
    nats: list[Pod]
    postgres: list[Pod]  # the instances, the first one primary
    postgres_job: Pod
    operator: Pod
    prometheus: Pod
    api_server: Pod
    stranger: Pod
    services: dict[str, list[Pod]]  # Service name -> the pods it sends to
    objects: list[dict[str, Any]]


def nats_pods(namespace: str) -> list[Pod]:
    """The official chart's StatefulSet pods, release ``nats`` as docs/operations.md installs it."""
    values = yaml.safe_load((ROOT / "k8s/platform/nats-values.yaml").read_text())
    assert "nameOverride" not in values, "the fixtures use the chart's own name label, nats"
    labels = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats",
              "app.kubernetes.io/component": "nats"}  # fmt: skip
    ports = {"nats": 4222, "cluster": 6222, "monitor": 8222, "prom-metrics": 7777}
    return [
        Pod(f"nats-{i}", namespace, {**labels, "statefulset.kubernetes.io/pod-name": f"nats-{i}"}, ports,
            f"10.244.1.{i + 1}")
        for i in range(values["config"]["cluster"]["replicas"])
    ]  # fmt: skip


def postgres_pods(namespace: str) -> tuple[str, list[Pod], Pod]:
    """CloudNativePG's instance pods of k8s/platform/postgres-cluster.yaml, and a pod of its join Job."""
    cluster = yaml.safe_load((ROOT / "k8s/platform/postgres-cluster.yaml").read_text())
    name = cluster["metadata"]["name"]
    ports = {"postgresql": 5432, "status": 8000, "metrics": 9187}
    instances = []
    for i in range(1, cluster["spec"]["instances"] + 1):
        role = "primary" if i == 1 else "replica"
        labels = {"cnpg.io/cluster": name, "cnpg.io/instanceName": f"{name}-{i}", "cnpg.io/podRole": "instance",
                  "cnpg.io/instanceRole": role, "role": role}  # fmt: skip
        instances.append(Pod(f"{name}-{i}", namespace, labels, ports, f"10.244.2.{i}"))
    job_labels = {"cnpg.io/cluster": name, "cnpg.io/jobRole": "join", "cnpg.io/instanceName": f"{name}-4"}
    return name, instances, Pod(f"{name}-4-join", namespace, job_labels, {}, "10.244.2.100")


def build_cluster(objects: list[dict[str, Any]]) -> Cluster:
    policies = by_kind(objects, "NetworkPolicy")
    namespaces = {p["metadata"].get("namespace") for p in policies}
    assert len(namespaces) == 1, namespaces
    assert None not in namespaces, "kustomize sets every policy's namespace"
    namespace = namespaces.pop()
    baton = {}
    for i, d in enumerate(by_kind(objects, "Deployment")):
        spec = d["spec"]["template"]["spec"]
        ports = {
            p["name"]: p["containerPort"]
            for c in spec["containers"]
            for p in c.get("ports", [])
            if "name" in p
        }
        baton[d["metadata"]["name"]] = Pod(
            d["metadata"]["name"],
            namespace,
            d["spec"]["template"]["metadata"]["labels"],
            ports,
            f"10.244.3.{i + 1}",
        )
    nats = nats_pods(namespace)
    cluster_name, postgres, job = postgres_pods(namespace)
    return Cluster(
        namespace=namespace,
        policies=policies,
        baton=baton,
        nats=nats,
        postgres=postgres,
        postgres_job=job,
        operator=Pod("cnpg-controller-manager", "cnpg-system",
                     {"app.kubernetes.io/name": "cloudnative-pg", "app.kubernetes.io/instance": "cnpg"},
                     ip="10.244.4.1"),
        prometheus=Pod("prometheus-0", "monitoring", {"app.kubernetes.io/name": "prometheus"}, ip="10.244.5.1"),
        api_server=Pod("kube-apiserver", None, ip=API_SERVER_IP),
        stranger=Pod("debug", namespace, {"app.kubernetes.io/name": "debug"}, ip="10.244.6.1"),
        services={"nats": nats, f"{cluster_name}-rw": postgres[:1]},
        objects=objects,
    )  # fmt: skip


@pytest.fixture(scope="module", params=OVERLAYS)
def cluster(request) -> Cluster:
    return build_cluster(render(request.param))


def container_env(objects, container) -> dict[str, str]:
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            env.update(configmaps[ref["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def test_baton_pods_reach_the_backing_services_they_are_configured_with(cluster):
    problems, checked = [], 0
    for d in by_kind(cluster.objects, "Deployment"):
        source = cluster.baton[d["metadata"]["name"]]
        spec = d["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = container_env(cluster.objects, c)
            for var in ("BATON_NATS_URL", "BATON_DATABASE_URL"):
                if var not in env:
                    continue
                url = urlsplit(env[var])
                assert url.hostname in cluster.services, f"{source.name}: {var} names {url.hostname}"
                for target in cluster.services[url.hostname]:
                    checked += 1
                    if not allowed(cluster.policies, source, target, url.port):
                        problems.append(f"{source.name}/{c['name']} -> {target.name}:{url.port} ({var})")
    assert checked
    assert not problems, "blocked:\n" + "\n".join(problems)


def test_every_egress_rule_toward_a_backing_service_is_admitted_by_its_pods(cluster):
    backing = cluster.nats + cluster.postgres
    problems, checked = [], 0
    for policy in cluster.policies:
        sources = [p for p in cluster.baton.values() if selects(policy["spec"]["podSelector"], p.labels)]
        for rule in policy["spec"].get("egress") or []:
            targets = [
                t for t in backing if any(peer_matches(x, cluster.namespace, t) for x in rule.get("to", []))
            ]
            for source in sources:
                for target in targets:
                    for port in rule.get("ports", []):
                        number = port["port"] if isinstance(port["port"], int) else target.ports[port["port"]]
                        checked += 1
                        if not allowed(cluster.policies, source, target, number):
                            problems.append(
                                f"{policy['metadata']['name']}: {source.name} -> {target.name}:{number}"
                            )
    assert checked
    assert not problems, "egress allowed, ingress refused:\n" + "\n".join(problems)


def required_platform_connections(c: Cluster) -> list[tuple[Pod, Pod, int, str]]:
    out = []
    for a in c.nats:
        out += [(a, b, 6222, "NATS cluster routes") for b in c.nats if b is not a]
        out += [(c.prometheus, a, port, "NATS monitoring and its exporter") for port in (8222, 7777)]
    primary = c.postgres[0]
    for a in c.postgres:
        out += [
            (a, b, port, "replication, instance status")
            for b in c.postgres
            if b is not a
            for port in (5432, 8000)
        ]
        out += [(c.operator, a, port, "the CloudNativePG operator") for port in (8000, 5432)]
        out += [(a, c.api_server, port, "the instance manager's API server") for port in (443, 6443)]
        out.append((c.prometheus, a, 9187, "Postgres metrics (PodMonitor)"))
    out.append((c.postgres_job, primary, 5432, "a joining instance clones the primary"))
    out += [(c.postgres_job, c.api_server, port, "the join job's instance manager") for port in (443, 6443)]
    for pod in c.baton.values():
        out += [(c.prometheus, pod, port, "Prometheus scrapes Baton") for port in (8001,)]  # /metrics
    return out


def test_backing_pods_reach_each_other_and_are_reached_by_their_operators(cluster):
    problems = [
        f"{src.name} -> {dst.name}:{port} ({why})"
        for src, dst, port, why in required_platform_connections(cluster)
        if not allowed(cluster.policies, src, dst, port)
    ]
    assert not problems, "blocked:\n" + "\n".join(problems)


def test_backing_services_admit_nobody_else(cluster):
    gateway = cluster.baton["gateway-api"]
    nats, primary = cluster.nats[0], cluster.postgres[0]
    forbidden = [
        (cluster.stranger, nats, 4222),
        (cluster.stranger, primary, 5432),
        (cluster.stranger, nats, 6222),
        (gateway, primary, 5432),  # the gateway has no database
        (nats, primary, 5432),
        (primary, nats, 4222),
        (cluster.prometheus, primary, 5432),
        (cluster.prometheus, nats, 4222),
        (cluster.operator, nats, 4222),
        (cluster.baton["projects-api"], nats, 6222),
        (cluster.baton["projects-api"], primary, 8000),
    ]
    # what the backing pods admit, whatever the sender's own egress says
    problems = [
        f"{s.name} -> {d.name}:{p}"
        for s, d, p in forbidden
        if side_allows(cluster.policies, "Ingress", d, s, d, p)
    ]
    assert not problems, "admitted:\n" + "\n".join(problems)
