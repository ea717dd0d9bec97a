"""Generate ``k8s/base`` from one table of services, so every Deployment gets the same hardening.

Run ``python tools/gen_k8s.py`` after changing the table; a test fails when the committed manifests differ
from what this script writes. Overlays (``k8s/overlays/*``) and platform files are written by hand.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "k8s" / "base"
IMAGE = "ghcr.io/baton-platform/{service}"
PART_OF = {"app.kubernetes.io/part-of": "baton"}
PG_CLUSTER = "baton-pg"  # the CloudNativePG Cluster of k8s/platform/postgres-cluster.yaml
DB_HOST = f"{PG_CLUSTER}-rw"  # its read-write Service (the primary)
NATS_URL = "nats://nats:4222"  # the official NATS chart's client Service (k8s/platform/nats-values.yaml)
# The labels the backing services' own tooling puts on their pods: the NATS chart's selector labels (its
# name, not the release's, so any release name matches) and the CloudNativePG operator's cluster label (on
# the instances and on the jobs that create or join them).
NATS_PODS = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/component": "nats"}
PG_PODS = {"cnpg.io/cluster": PG_CLUSTER}
PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
CNPG_OPERATOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cnpg-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "cloudnative-pg"}},
}


@dataclass(frozen=True)
class Svc:
    name: str
    database: bool = True
    worker: bool = True
    api_resources: tuple[str, str, str, str] = ("100m", "256Mi", "1", "512Mi")  # req cpu/mem, limit cpu/mem
    worker_resources: tuple[str, str, str, str] = ("100m", "256Mi", "1", "512Mi")
    env: dict[str, str] = field(default_factory=dict)
    public: bool = False


SERVICES = [
    Svc(
        "gateway",
        database=False,
        worker=False,
        public=True,
        env={
            "BATON_GATEWAY_IDENTITY_URL": "http://identity:8000",
            "BATON_GATEWAY_PROJECTS_URL": "http://projects:8000",
            "BATON_GATEWAY_DOCUMENTS_URL": "http://documents:8000",
            "BATON_GATEWAY_WORKFLOWS_URL": "http://workflows:8000",
            "BATON_GATEWAY_AUDIT_URL": "http://audit:8000",
        },
    ),
    Svc("identity"),
    Svc("projects"),
    Svc(
        "documents",
        api_resources=("200m", "512Mi", "2", "1Gi"),
        worker_resources=("500m", "1Gi", "2", "2Gi"),
    ),
    Svc("workflows"),
    Svc("audit"),
]

COMMON_ENV = {
    "BATON_ENVIRONMENT": "production",
    "BATON_LOG_LEVEL": "INFO",
    "BATON_LOG_JSON": "true",
    "BATON_NATS_URL": NATS_URL,
    "BATON_NATS_STREAM_REPLICAS": "3",
    "BATON_JWT_ISSUER": "https://baton.example.com",
    "BATON_JWT_AUDIENCE": "baton",
    "BATON_JWKS_URL": "http://identity:8000/.well-known/jwks.json",
}


def labels(svc: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": svc, "app.kubernetes.io/component": component, **PART_OF}


def security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(r: tuple[str, str, str, str]) -> dict[str, Any]:
    return {"requests": {"cpu": r[0], "memory": r[1]}, "limits": {"cpu": r[2], "memory": r[3]}}


def db_env(secret: str) -> list[dict[str, Any]]:
    """``BATON_DATABASE_URL`` for the role whose credentials ``secret`` (kubernetes.io/basic-auth) holds."""
    return [
        {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
        {
            "name": "BATON_DATABASE_URL",
            "value": f"postgresql://$(DB_USER):$(DB_PASSWORD)@{DB_HOST}:5432/baton",
        },
    ]


def env_from(s: Svc) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The environment of the service's own processes: they connect as its runtime role."""
    env: list[dict[str, Any]] = [
        {
            "name": "BATON_SECRET_KEY",
            "valueFrom": {"secretKeyRef": {"name": "baton-platform", "key": "secret-key"}},
        }
    ]
    if s.database:
        env += db_env(f"baton-db-{s.name}")
    return env, [{"configMapRef": {"name": f"{s.name}-config"}}]


def migrate_env(s: Svc) -> list[dict[str, Any]]:
    """The migration's: the owner role's credentials, and the runtime role's name (granted its share)."""
    runtime = {"secretKeyRef": {"name": f"baton-db-{s.name}", "key": "username"}}
    return [
        *db_env(f"baton-db-{s.name}-owner"),
        {"name": "BATON_DATABASE_RUNTIME_ROLE", "valueFrom": runtime},
        {"name": "BATON_SERVICE", "value": s.name},
    ]


def container(s: Svc, component: str, command: list[str]) -> dict[str, Any]:
    env, env_refs = env_from(s)
    c: dict[str, Any] = {
        "name": component,
        "image": IMAGE.format(service=s.name),
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "envFrom": env_refs,
        "resources": resources(s.api_resources if component == "api" else s.worker_resources),
        "securityContext": security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if component == "api":
        c["ports"] = [
            {"name": "http", "containerPort": 8000, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 8001, "protocol": "TCP"},  # never behind the Service
        ]
        c["env"] = [*c["env"], {"name": "BATON_METRICS_PORT", "value": "8001"}]
        probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3}
        c["readinessProbe"] = {**probe, "failureThreshold": 3}
        c["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3,
            "failureThreshold": 3,
        }  # fmt: skip
        c["startupProbe"] = {
            **{**probe, "httpGet": {"path": "/healthz", "port": "http"}},
            "failureThreshold": 30,
        }
        # Endpoints drop the pod first; the sleep lets in-flight requests drain before SIGTERM.
        c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "10"]}}}
    else:
        # A worker's only port: its probes and /metrics. SIGTERM finishes the current batch.
        c["ports"] = [{"name": "health", "containerPort": 8001, "protocol": "TCP"}]
        c["env"] = [*c["env"], {"name": "BATON_WORKER_HEALTH_PORT", "value": "8001"}]
        probe = {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 10, "timeoutSeconds": 3}
        c["readinessProbe"] = {
            **probe,
            "httpGet": {"path": "/readyz", "port": "health"},
            "failureThreshold": 3,
        }
        c["livenessProbe"] = {**probe, "failureThreshold": 3}
        c["startupProbe"] = {**probe, "periodSeconds": 5, "failureThreshold": 30}
        c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    return c


def deployment(s: Svc, component: str) -> dict[str, Any]:
    lab = labels(s.name, component)
    command = (
        ["uvicorn", f"{s.name}.main:build_app", "--factory", "--host", "0.0.0.0", "--port", "8000",
         "--no-access-log", "--timeout-graceful-shutdown", "20"]
        if component == "api"
        else ["python", "-m", f"{s.name}.worker"]
    )  # fmt: skip
    if s.public and component == "api":
        # the gateway decides itself which proxies to believe (BATON_GATEWAY_TRUSTED_PROXIES)
        command.append("--no-proxy-headers")
    pod: dict[str, Any] = {
        "serviceAccountName": s.name,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 45,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container(s, component, command)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": policy,
                "labelSelector": {"matchLabels": lab},
            }
            for key, policy in (
                ("topology.kubernetes.io/zone", "ScheduleAnyway"),
                ("kubernetes.io/hostname", "ScheduleAnyway"),
            )
        ],
    }
    if s.database:
        # Workers too: a worker's rollout may run ahead of its API's, and must not start on the old schema.
        pod["initContainers"] = [
            {
                "name": "migrate",
                "image": IMAGE.format(service=s.name),
                "imagePullPolicy": "IfNotPresent",
                # Advisory-locked and idempotent: pods starting together queue, then find nothing to do.
                # Runs as the owner role; the API and worker containers never see its credentials.
                "command": ["python", "-m", "shared.migrations"],
                "env": migrate_env(s),
                "envFrom": [{"configMapRef": {"name": f"{s.name}-config"}}],
                "resources": resources(("50m", "128Mi", "500m", "256Mi")),
                "securityContext": security_context(),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{s.name}-{component}", "labels": lab},
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": lab},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": lab,
                    # For annotation-based scrape configs; k8s/platform/podmonitor.yaml does the same.
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "8001",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod,
            },
        },
    }


def pdb(s: Svc, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{s.name}-{component}", "labels": labels(s.name, component)},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels(s.name, component)}},
    }


def hpa(s: Svc, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{s.name}-{component}", "labels": labels(s.name, component)},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": f"{s.name}-{component}",
            },
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": "TCP"} for port in ports]


def baton_pods(services: list[Svc]) -> dict[str, Any]:
    """A peer matching the pods of ``services``, API and worker."""
    return {
        "podSelector": {
            "matchLabels": PART_OF,
            "matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "In", "values": [s.name for s in services]}
            ],
        }
    }


def network_policy(s: Svc) -> dict[str, Any]:
    ingress: list[dict[str, Any]] = []
    if s.public:
        ingress.append({"ports": [{"port": 8000, "protocol": "TCP"}]})  # from the ingress controller
    else:
        ingress.append(
            {
                "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
                + (
                    [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "baton"}}}]
                    if s.name == "identity"
                    else []
                ),
                "ports": [{"port": 8000, "protocol": "TCP"}],
            }
        )
    ingress.append({"from": [PROMETHEUS], "ports": tcp(8001)})  # /metrics, on no Service
    # every NATS server, not only the Service's: clients follow the servers' connect_urls
    egress: list[dict[str, Any]] = [{"to": [{"podSelector": {"matchLabels": NATS_PODS}}], "ports": tcp(4222)}]
    if s.database:
        egress.append({"to": [{"podSelector": {"matchLabels": PG_PODS}}], "ports": tcp(5432)})
    # every service verifies tokens against identity's JWKS; the gateway also forwards to every service
    targets = ["identity"] if s.name != "gateway" else [o.name for o in SERVICES if o.name != "gateway"]
    egress.append(
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": t}}} for t in targets],
            "ports": [{"port": 8000, "protocol": "TCP"}],
        }
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": s.name, "labels": {"app.kubernetes.io/name": s.name, **PART_OF}},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": s.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def objects(s: Svc) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": s.name, "labels": {"app.kubernetes.io/name": s.name, **PART_OF}},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{s.name}-config", "labels": {"app.kubernetes.io/name": s.name, **PART_OF}},
            "data": {**COMMON_ENV, "BATON_SERVICE_NAME": s.name, **s.env},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": s.name, "labels": labels(s.name, "api")},
            "spec": {
                "selector": labels(s.name, "api"),
                "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]
    components = ["api", "worker"] if s.worker else ["api"]
    for component in components:
        out += [deployment(s, component), pdb(s, component), hpa(s, component)]
    out.append(network_policy(s))
    return out


def common() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "labels": PART_OF},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-dns", "labels": PART_OF},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                },
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                    }
                ],
            },
        },
    ]


def backing_services() -> list[dict[str, Any]]:
    """NATS and Postgres run in Baton's namespace (docs/operations.md), where the default-deny holds their pods
    too: these let in and out what they need, and nothing else."""
    nats = {"podSelector": {"matchLabels": NATS_PODS}}
    pg = {"podSelector": {"matchLabels": PG_PODS}}
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "nats", "labels": {"app.kubernetes.io/name": "nats", **PART_OF}},
            "spec": {
                **nats,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": [baton_pods(SERVICES)], "ports": tcp(4222)},  # clients
                    {"from": [nats], "ports": tcp(6222)},  # cluster routes
                    {"from": [PROMETHEUS], "ports": tcp(8222, 7777)},  # monitoring, the chart's exporter
                ],
                "egress": [{"to": [nats], "ports": tcp(6222)}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": PG_CLUSTER, "labels": {"cnpg.io/cluster": PG_CLUSTER, **PART_OF}},
            "spec": {
                **pg,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": [baton_pods([s for s in SERVICES if s.database])], "ports": tcp(5432)},
                    # replication and cloning (5432), each instance's status endpoint (8000)
                    {"from": [pg], "ports": tcp(5432, 8000)},
                    {"from": [CNPG_OPERATOR], "ports": tcp(8000, 5432)},
                    {"from": [PROMETHEUS], "ports": tcp(9187)},  # the instances' metrics (PodMonitor)
                ],
                "egress": [
                    {"to": [pg], "ports": tcp(5432, 8000)},
                    # The instance manager talks to the Kubernetes API server, which is no pod: its address
                    # depends on the cluster (443 through the kubernetes Service, 6443 on most control
                    # planes). Narrow this with an ipBlock of your API server in an overlay.
                    {"ports": tcp(443, 6443)},
                ],
            },
        },
    ]


class _Dumper(yaml.SafeDumper):
    """Writes a value shared by several objects out in full each time, never as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002 (the signature is yaml's)
        return True


def dump(docs: list[dict[str, Any]]) -> str:
    header = "# Generated by tools/gen_k8s.py; edit the table there, not this file.\n"
    return header + yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=120)


def render() -> dict[Path, str]:
    files: dict[Path, str] = {
        BASE / "common.yaml": dump(common()),
        BASE / "backing-services.yaml": dump(backing_services()),
    }
    for s in SERVICES:
        files[BASE / f"{s.name}.yaml"] = dump(objects(s))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [{"pairs": PART_OF, "includeSelectors": False}],
        "resources": ["common.yaml", "backing-services.yaml", *(f"{s.name}.yaml" for s in SERVICES)],
    }
    files[BASE / "kustomization.yaml"] = dump([kustomization])
    return files


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for path, content in render().items():
        if check:
            if not path.exists() or path.read_text() != content:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    if stale:
        print("out of date (run python tools/gen_k8s.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
