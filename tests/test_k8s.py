"""deploy/k8s: every manifest valid against Kubernetes' own schemas, and consistent with the service.

kubernetes-validate (a maintained PyPI package carrying the JSON schemas of each Kubernetes release)
checks every document of every file in deploy/k8s/, whoever added it, in strict mode (unknown fields
are errors). No cluster here: nothing is applied.
"""
from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from tests.test_newcomer import env_example_names
from wallet_proxy import __version__
from wallet_proxy.settings import parse

K8S = ROOT / "deploy" / "k8s"
FILES = sorted(K8S.glob("*.y*ml"))
VERSION = kubernetes_validate.latest_version()


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kinds() -> dict[str, dict]:
    found = {}
    for path in FILES:
        for doc in documents(path):
            found.setdefault(doc["kind"], doc)
    return found


def test_the_expected_manifests_are_there():
    expected = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Secret"}
    assert expected <= set(kinds())


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_manifest_is_valid_against_the_kubernetes_schema(path):
    docs = documents(path)
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_refuses_a_mistake():
    deployment = documents(K8S / "deployment.yaml")[0]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)
    deployment = documents(K8S / "deployment.yaml")[0]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


def pod() -> dict:
    return kinds()["Deployment"]["spec"]["template"]


def container() -> dict:
    (only,) = pod()["spec"]["containers"]
    return only


def gunicorn_graceful_timeout() -> int:
    text = (ROOT / "gunicorn.conf.py").read_text()
    return int(re.search(r"^graceful_timeout = (\d+)", text, re.M).group(1))


def test_probes_liveness_healthz_readiness_readyz():
    c = container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["port"] in ports and c["readinessProbe"]["httpGet"]["port"] in ports
    env = {e["name"]: e["value"] for e in c["env"]}
    assert int(env["PORT"]) == ports["http"]


def test_termination_grace_is_longer_than_the_drain():
    spec = pod()["spec"]
    pre_stop = int(container()["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + gunicorn_graceful_timeout()


def test_settings_come_from_the_secret_and_the_example_is_a_valid_configuration():
    secret = kinds()["Secret"]
    assert container()["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    names = set(secret["stringData"])
    assert names <= env_example_names(), names - env_example_names()
    parse(secret["stringData"])  # complete groups, valid URLs and client entries


def test_non_root_read_only_and_resources():
    spec, c = pod()["spec"], container()
    dockerfile_user = int(re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M).group(1))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == dockerfile_user
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])  # gunicorn's heartbeat files
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    assert c["image"].endswith(f":{__version__}")


def test_service_pdb_and_hpa_point_at_the_deployment():
    k = kinds()
    labels = pod()["metadata"]["labels"]
    deployment = k["Deployment"]
    assert k["Service"]["spec"]["selector"].items() <= labels.items()
    assert k["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert k["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = k["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    hpa = k["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] > k["PodDisruptionBudget"]["spec"]["minAvailable"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
