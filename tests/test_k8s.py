"""deploy/k8s: every manifest valid against Kubernetes' own schemas, and consistent with the service.

kubernetes-validate (a maintained PyPI package carrying the JSON schemas of each Kubernetes release)
checks every document of every file in deploy/k8s/, whoever added it, in strict mode (unknown fields
are errors), for the oldest and the newest Kubernetes release we support. No cluster here: nothing
is applied; Pod Security "restricted" is checked against the rules of its published standard.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from tests.test_newcomer import env_example_names
from wallet_proxy import __version__
from wallet_proxy.settings import SCOPES, parse
from wallet_proxy.web.drain import drain_window

K8S = ROOT / "deploy" / "k8s"
# What `kubectl apply -f deploy/k8s/` applies: .yaml, .yml and .json files (not the .example).
APPLIED = sorted(p for p in K8S.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
SECRET_EXAMPLE = K8S / "secret.yaml.example"
FILES = APPLIED + [SECRET_EXAMPLE]
VERSION = kubernetes_validate.latest_version()
VERSIONS = ("1.30", VERSION)  # the oldest release still supported by the big clouds, and the newest


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kinds() -> dict[str, dict]:
    found = {}
    for path in FILES:
        for doc in documents(path):
            found.setdefault(doc["kind"], doc)
    return found


def all_of(kind: str) -> list[dict]:
    return [doc for path in APPLIED for doc in documents(path) if doc["kind"] == kind]


def test_the_expected_manifests_are_there():
    expected = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Secret"}
    assert expected <= set(kinds())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_manifest_is_valid_against_the_kubernetes_schema(path, version):
    docs = documents(path)
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


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
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf.graceful_timeout


def test_probes_liveness_healthz_readiness_readyz():
    c = container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["port"] in ports and c["readinessProbe"]["httpGet"]["port"] in ports
    env = {e["name"]: e["value"] for e in c["env"]}
    assert int(env["PORT"]) == ports["http"]


def test_termination_grace_covers_the_pre_stop_pause_and_the_drain_window():
    """#23 item 1: SIGKILL never comes before the longest request's answer (wallet_proxy/web/drain.py)."""
    spec = pod()["spec"]
    pre_stop = int(container()["lifecycle"]["preStop"]["exec"]["command"][-1])
    timing = {k: v for k, v in container_env().items() if k != "WALLET_PROXY_CLIENTS"}  # not a bound
    window = drain_window(parse(timing))
    assert gunicorn_graceful_timeout() == window.graceful_timeout
    assert spec["terminationGracePeriodSeconds"] >= window.pod_grace(pre_stop)
    assert pre_stop >= 5  # endpoints and the ingress drop the pod before gunicorn stops accepting


def container_env() -> dict:
    """The settings a pod runs with: the Secret's example and the Deployment's own env."""
    env = dict(kinds()["Secret"]["stringData"])
    env.update({e["name"]: e["value"] for e in container()["env"]})
    return env


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
    assert k["PodDisruptionBudget"]["spec"] == {**k["PodDisruptionBudget"]["spec"], "maxUnavailable": 1}
    assert "minAvailable" not in k["PodDisruptionBudget"]["spec"]
    assert hpa["minReplicas"] > k["PodDisruptionBudget"]["spec"]["maxUnavailable"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # The autoscaler owns the count: a `replicas` here would reset it on every apply, even mid-send.
    assert "replicas" not in deployment["spec"]


def test_pods_spread_over_nodes_and_zones():
    spread = pod()["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    labels = pod()["metadata"]["labels"]
    assert all(c["labelSelector"]["matchLabels"].items() <= labels.items() for c in spread)


def test_the_example_secret_is_not_applied_with_the_folder_and_the_real_one_stays_out_of_git():
    """#23 item 4: `kubectl apply -f deploy/k8s/` applied the placeholders: pods started, every call failed."""
    assert not [path.name for path in APPLIED for doc in documents(path) if doc["kind"] == "Secret"]
    assert SECRET_EXAMPLE.exists()
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/k8s/secret.yaml"], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/k8s/secret.yaml (real credentials) is not ignored by git"


# Pod Security Standards, "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
# the controls that apply to these pods, as the admission controller checks them.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_violations(pod_spec: dict) -> list[str]:
    found = []
    pod_sc = pod_spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            found.append(flag)
    for volume in pod_spec.get("volumes", []):
        if not set(volume) - {"name"} <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}")
    for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            found.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{c['name']}: capabilities must drop ALL")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{c['name']}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{c['name']}: seccompProfile RuntimeDefault or Localhost")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{c['name']}: hostPort")
    return found


def cronjob_pod(doc: dict) -> dict:
    return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_both_pods_pass_pod_security_restricted_and_hold_no_service_account_token():
    (cronjob,) = all_of("CronJob")
    for name, spec in (("web", pod()["spec"]), ("attributes-sync", cronjob_pod(cronjob))):
        assert restricted_violations(spec) == [], name
        assert spec["automountServiceAccountToken"] is False, name


def test_the_restricted_check_can_fail():
    """The CronJob as it was (#23 item 3): no seccompProfile."""
    old = subprocess.run(["git", "show", "a2d9903:deploy/k8s/attributes-sync-cronjob.yaml"], cwd=ROOT,
                         capture_output=True, text=True)
    if old.returncode == 0:
        assert restricted_violations(cronjob_pod(yaml.safe_load(old.stdout))) == [
            "attributes-sync: seccompProfile RuntimeDefault or Localhost"]
    spec = pod()["spec"]
    broken = {**spec, "hostNetwork": True, "volumes": spec["volumes"] + [{"name": "h", "hostPath": {"path": "/"}}]}
    assert restricted_violations(broken) == ["hostNetwork", "volume h"]


def test_the_cronjob_ships_its_claim_and_does_not_retry_a_bad_file():
    (cronjob,) = all_of("CronJob")
    claims = {doc["metadata"]["name"] for doc in all_of("PersistentVolumeClaim")}
    used = {v["persistentVolumeClaim"]["claimName"] for v in cronjob_pod(cronjob)["volumes"]
            if "persistentVolumeClaim" in v}
    assert used and used <= claims
    job = cronjob["spec"]["jobTemplate"]["spec"]
    (container_name,) = [c["name"] for c in cronjob_pod(cronjob)["containers"]]
    fail_now = [rule for rule in job["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"]
    assert any(rule["onExitCodes"] == {"containerName": container_name, "operator": "In", "values": [2]}
               for rule in fail_now), "exit 2 (bad file or settings) must not be retried"
    assert cronjob_pod(cronjob)["restartPolicy"] == "Never"  # podFailurePolicy needs it
    assert job["backoffLimit"] >= 1  # other failures (a killed run) are retried, from the journal


def test_network_policy_lets_in_only_the_ingress_controller_and_prometheus():
    policies = {doc["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: doc["spec"]
                for doc in all_of("NetworkPolicy")}
    assert set(policies) == {"web", "attributes-sync"}
    web = policies["web"]
    assert set(web["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = web["ingress"]
    sources = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]}
    assert sources == {"ingress-nginx", "monitoring"}
    assert all("podSelector" in peer for peer in rule["from"])  # not the whole namespace
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "ingress" not in policies["attributes-sync"] and "Ingress" in policies["attributes-sync"]["policyTypes"]
    for spec in policies.values():
        ports = {p["port"] for egress in spec["egress"] for p in egress["ports"]}
        assert {53, 443, 6379} <= ports and not ports - {53, 443, 6379, 6380, 26379, 7000}


def test_forwarded_headers_are_trusted_from_the_front_only():
    env = {e["name"]: e["value"] for e in container()["env"]}
    assert env["FORWARDED_ALLOW_IPS"] != "*"
    for network in env["FORWARDED_ALLOW_IPS"].split(","):
        assert ipaddress.ip_network(network.strip()).is_private


def ingress_by_host() -> dict:
    found = {}
    for doc in all_of("Ingress"):
        for rule in doc["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                found[(rule["host"], path["path"])] = doc
    return found


def test_the_ingress_has_tls_and_deploy_nginx_braze_rules():
    """#23 item 6: GET wallet reads retried once, within the least window ingress-nginx takes (1 s);
    POSTs never; /metrics not public."""
    routes = ingress_by_host()
    assert routes, "no Ingress"
    for doc in all_of("Ingress"):
        hosts = {rule["host"] for rule in doc["spec"]["rules"]}
        assert hosts <= {h for tls in doc["spec"]["tls"] for h in tls["hosts"]}, doc["metadata"]["name"]
        notes = doc["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
        assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "1m"
        paths = [p["path"] for rule in doc["spec"]["rules"] for p in rule["http"]["paths"]]
        assert not any("/metrics".startswith(p) and p != "/" or p == "/metrics" for p in paths)
        # ingress-nginx validates its timeout annotations as whole seconds and ignores anything else
        # (internal/ingress/annotations/proxy/main.go: parser.ValidateInt)
        for name, value in notes.items():
            if name.endswith("-timeout") or name.endswith("-tries"):
                assert re.fullmatch(r"[1-9]\d*", value), f"{name}: {value!r} is not whole seconds"
        if paths == ["/v1/wallets/"]:
            assert notes["nginx.ingress.kubernetes.io/proxy-next-upstream"] == "error timeout"
            assert notes["nginx.ingress.kubernetes.io/proxy-next-upstream-tries"] == "2"  # one retry
            assert notes["nginx.ingress.kubernetes.io/proxy-next-upstream-timeout"] == "1"  # the least it takes
            assert notes["nginx.ingress.kubernetes.io/proxy-connect-timeout"] == "1"
        else:
            assert notes["nginx.ingress.kubernetes.io/proxy-next-upstream"] == "off"
            # a POST waits for the longest request's answer, never cut by the ingress
            assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= drain_window().longest_request
    posts = {path for host, path in routes if path in ("/v1/braze/trigger", "/campaigns/trigger/send",
                                                        "/canvas/trigger/send")}
    assert len(posts) == 3
    # the webhooks have a host of their own (Braze stops a whole host's webhooks on errors)
    webhook_hosts = {host for host, path in routes if path == "/v1/users/"}
    wallet_hosts = {host for host, path in routes if path == "/v1/wallets/"}
    assert webhook_hosts and not webhook_hosts & wallet_hosts
