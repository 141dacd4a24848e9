"""deploy/prometheus: `promtool check rules` and `promtool test rules`, and only metrics that exist.

promtool comes from Debian's `prometheus` package (.ci/run installs it).
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from tests.conftest import ROOT, need
from wallet_proxy.web.metrics import Metrics

PROM = ROOT / "deploy" / "prometheus"
ALERTS = PROM / "alerts.yml"
TESTS = PROM / "alerts_test.yml"
SCRAPE = PROM / "prometheus.yml"
POD_MONITOR = PROM / "podmonitor.yaml"
JOB = "wallet-proxy"
# Labels Prometheus adds to every scraped series (namespace, pod: the PodMonitor's on Kubernetes).
TARGET_LABELS = {"instance", "job", "namespace", "pod"}
SELECTOR = re.compile(r"\b(wallet_proxy_[a-z0-9_]+)\b\s*(?:\{([^}]*)\})?")


def exported() -> dict[str, set[str]]:
    """Every sample name wallet_proxy/web/metrics.py exports, with the label names it may carry."""
    names: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, (Counter, Gauge, Histogram)):
            continue
        labels = set(metric._labelnames)
        if isinstance(metric, Counter):
            names[metric._name + "_total"] = labels
        elif isinstance(metric, Histogram):
            names[metric._name + "_bucket"] = labels | {"le"}
            names[metric._name + "_sum"] = names[metric._name + "_count"] = labels
        else:
            names[metric._name] = labels
    return names


def selectors(text: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every series selector in a PromQL text."""
    return [(name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers or "")))
            for name, matchers in SELECTOR.findall(text)]


def assert_known(text: str, where: str) -> int:
    known = exported()
    found = selectors(text)
    for name, labels in found:
        assert name in known, f"{where}: {name} is not a metric wallet_proxy/web/metrics.py exports"
        unknown = labels - known[name] - TARGET_LABELS
        assert not unknown, f"{where}: {name} has no label {sorted(unknown)} (it has {sorted(known[name])})"
    return len(found)


def promtool() -> str:
    binary = shutil.which("promtool")
    need("promtool", binary is not None, "apt-get install prometheus")
    return binary


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = subprocess.run([promtool(), "test", "rules", str(TESTS)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_catch_a_wrong_threshold(tmp_path):
    # The same tests against rules whose thresholds were loosened tenfold must fail.
    loosened = ALERTS.read_text()
    for strict, loose in (("> 0.05", "> 0.5"), ("> 0.01", "> 0.1"), ("> 1.5", "> 15")):
        loosened = loosened.replace(strict, loose)
    assert loosened != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(loosened)
    shutil.copy(TESTS, tmp_path / "alerts_test.yml")
    result = subprocess.run([promtool(), "test", "rules", str(tmp_path / "alerts_test.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    for name in ("WalletProxySessionMFailing", "WalletProxyHigh5xxRate",
                 "WalletProxyWalletLatencyNearBrazeTimeout"):
        assert name in result.stdout + result.stderr


# SessionM failing, breaker open, Redis degraded, p99 near 2 s, 5xx, outcome_unknown
REQUIRED = {
    "WalletProxySessionMFailing", "WalletProxyBreakerOpen", "WalletProxyRedisDegraded",
    "WalletProxyWalletLatencyNearBrazeTimeout", "WalletProxyHigh5xxRate", "WalletProxyTriggerOutcomeUnknown"}


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not():
    names = {rule["alert"] for rule in rules()}
    assert REQUIRED | SILENCE <= names
    cases = [case for test in yaml.safe_load(TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for name in names:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"{name}: no test where it fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{name}: no test where it stays quiet"


def test_rules_and_their_test_series_use_only_exported_metrics():
    assert assert_known("\n".join(rule["expr"] for rule in rules()), "alerts.yml") >= len(REQUIRED)
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    series = [s["series"] for test in tests for s in test["input_series"] if not s["series"].startswith("up{")]
    assert assert_known("\n".join(series), "alerts_test.yml") == len(series)


def test_the_metric_check_can_fail():
    with pytest.raises(AssertionError, match="wallet_proxy_made_up_total"):
        assert_known('rate(wallet_proxy_made_up_total[5m])', "here")
    with pytest.raises(AssertionError, match="no label"):
        assert_known('wallet_proxy_requests_total{user_id="x"}', "here")


# #23 item 11: if scraping breaks or every pod dies, the alerts above go silent; these notice.
SILENCE = {"WalletProxyTargetDown", "WalletProxyMetricsAbsent"}


def test_silence_is_an_alert_for_the_job_the_scrape_configurations_name():
    by_name = {rule["alert"]: rule["expr"] for rule in rules()}
    assert f'up{{job="{JOB}"}} == 0' in by_name["WalletProxyTargetDown"]
    assert f'absent(up{{job="{JOB}"}}' in by_name["WalletProxyMetricsAbsent"]
    (scrape,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    assert scrape["job_name"] == JOB
    monitor = yaml.safe_load(POD_MONITOR.read_text())
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[monitor["spec"]["jobLabel"]] == JOB  # the job label comes from the pod's label
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]} and endpoint["path"] == "/metrics"


def test_prometheus_scrapes_with_a_metrics_only_client():
    """The scrape's credential can read /metrics and nothing else (never `admin`, which can purge)."""
    (scrape,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    user = scrape["basic_auth"]["username"]
    monitor = yaml.safe_load(POD_MONITOR.read_text())
    assert set(monitor["spec"]["podMetricsEndpoints"][0]["basicAuth"]) == {"username", "password"}
    secret = yaml.safe_load((ROOT / "deploy" / "k8s" / "secret.yaml.example").read_text())
    entries = {e.strip().split(":")[0]: e.strip().split(":")[2]
               for e in secret["stringData"]["WALLET_PROXY_CLIENTS"].split(",")}
    assert entries[user] == "metrics"


def test_promtool_checks_the_scrape_configuration():
    result = subprocess.run([promtool(), "check", "config", str(SCRAPE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid prometheus config file syntax" in result.stdout + result.stderr


def readme_anchors() -> set[str]:
    """GitHub's anchors of the README's headings (lower case, spaces to dashes, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_a_runbook_url_to_a_section_of_the_readme():
    anchors = readme_anchors()
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://") and "README.md#" in url, rule["alert"]
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no README section {url.split('#', 1)[1]}"
