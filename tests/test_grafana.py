"""deploy/grafana: the dashboard charts only metrics that exist, and every metric that exists."""
from __future__ import annotations

import json
import re

from tests.conftest import ROOT
from tests.test_prometheus import assert_known, exported, selectors

DASHBOARD = ROOT / "deploy" / "grafana" / "wallet-proxy.json"


def panels() -> list[dict]:
    found = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # panels inside collapsed rows
    return found


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p.get("targets", [])]


def test_every_expression_references_an_existing_metric_and_labels():
    exprs = expressions()
    assert exprs
    for expr in exprs:
        assert assert_known(expr, f"dashboard: {expr}") >= 1, f"no wallet_proxy metric in {expr}"


def test_every_exported_metric_is_on_the_dashboard():
    charted = {name for expr in expressions() for name, _ in selectors(expr)}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported()}
    missing = sorted(f for f in families if not charted & {f, f + "_bucket", f + "_sum", f + "_count"})
    assert not missing, f"not on the dashboard: {missing}"


def test_the_dashboard_is_importable():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"  # works with whichever Prometheus is picked
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        assert all(t["refId"] and t["expr"] for t in panel["targets"])


def test_job_and_namespace_variables_scope_every_query():
    """#23 item 11: one Grafana for several deployments (namespaces, compose and Kubernetes jobs)."""
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    for name in ("job", "namespace"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*"  # All also matches series without the label
    for expr in expressions():
        for matchers in re.findall(r"\bwallet_proxy_[a-z0-9_]+\{([^}]*)\}", expr):
            assert 'job=~"$job"' in matchers and 'namespace=~"$namespace"' in matchers, expr
        assert not re.search(r"\bwallet_proxy_[a-z0-9_]+\b(?!\{)", expr), f"unscoped selector in {expr}"
