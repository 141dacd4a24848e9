"""compose.yaml: valid against the Compose specification's JSON schema, and consistent with the front.

The schema is the compose-spec one that check-jsonschema ships (`--builtin-schema vendor.compose-spec`).
No Docker daemon here: the containers themselves are not started (tests/test_nginx.py runs the same
nginx configuration in front of two real instances sharing one real Redis instead).
"""
from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT
from wallet_proxy.web.drain import drain_window

COMPOSE = ROOT / "compose.yaml"
CHECK = [str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema", "vendor.compose-spec"]


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CHECK + [str(path)], capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_against_the_compose_spec_schema():
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation done" in result.stdout


def test_the_schema_check_can_fail(tmp_path):
    # The same file with an impossible depends_on condition and a port that is no port: refused.
    broken = COMPOSE.read_text().replace("condition: service_healthy", "condition: maybe_later", 1)
    (tmp_path / "compose.yaml").write_text(broken)
    result = validate(tmp_path / "compose.yaml")
    assert result.returncode != 0 and "maybe_later" in result.stdout


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_two_instances_of_the_image_share_one_redis():
    svc = services()
    apps = {name: s for name, s in svc.items() if s.get("build") == "."}
    assert sorted(apps) == ["app1", "app2"]
    (network,) = yaml.safe_load(COMPOSE.read_text())["networks"]["default"]["ipam"]["config"]
    subnet = ipaddress.ip_network(network["subnet"])
    for app in apps.values():
        env = app["environment"]
        assert env["WALLET_PROXY_REDIS_URL"] == "redis://redis:6379/0"
        assert app["depends_on"]["redis"]["condition"] == "service_healthy"
        assert app["read_only"] is True and "/tmp" in app["tmpfs"]
        assert "ports" not in app, "only nginx is published"
        # gunicorn's drain window and then some: docker stop lets every answer in flight finish.
        assert int(app["stop_grace_period"].rstrip("s")) >= drain_window().pod_grace(pre_stop=0)
        # forwarded headers believed from nginx only, at its fixed address
        assert env["FORWARDED_ALLOW_IPS"] == svc["nginx"]["networks"]["default"]["ipv4_address"]
        assert ipaddress.ip_address(app["networks"]["default"]["ipv4_address"]) in subnet
    assert svc["redis"]["image"].startswith("redis:")


def test_nginx_mounts_the_shipped_front_and_reaches_both_instances():
    svc = services()
    nginx = svc["nginx"]
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in nginx["volumes"]}
    assert mounts["/etc/nginx/nginx.conf"] == ROOT / "deploy/nginx/nginx.conf"
    assert mounts["/etc/nginx/conf.d"].resolve() == (ROOT / "deploy/nginx/conf.d").resolve()
    assert all(path.exists() for path in mounts.values())
    site = (ROOT / "deploy/nginx/conf.d/wallet-proxy.conf").read_text()
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", site, re.M)
    assert upstreams == [("app1", "8000"), ("app2", "8000")]
    assert all(svc[name]["expose"] == [port] for name, port in upstreams)
    listen = re.search(r"^\s*listen\s+(\d+)", site, re.M).group(1)
    assert nginx["ports"] == [f"{listen}:{listen}"]
    assert {name: dep["condition"] for name, dep in nginx["depends_on"].items()} == {
        "app1": "service_healthy", "app2": "service_healthy"}


def test_the_instances_environment_is_a_valid_production_configuration():
    from wallet_proxy.settings import ConfigError, parse

    env = dict(services()["app1"]["environment"])
    resolved = {k: re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), str(v)) for k, v in env.items()}
    # `WALLET_PROXY_SANDBOX=1 docker compose up`: the simulators, sharing Redis.
    sandbox = parse(dict(resolved, WALLET_PROXY_SANDBOX="1"), implicit_sandbox=False)
    assert sandbox.sandbox and sandbox.redis_url == "redis://redis:6379/0"
    # Nothing in .env and no flag: the production entry refuses, it never serves made-up wallets.
    try:
        parse(resolved, implicit_sandbox=False)
    except ConfigError as exc:
        assert "WALLET_PROXY_SANDBOX=1" in str(exc)
    else:
        raise AssertionError("compose without settings must not start on the simulators")
