"""deploy/nginx: `nginx -t`, then a real nginx in front of two real instances sharing one real Redis.

The shipped files run as they are; only the upstream addresses (compose's `app1:8000`, `app2:8000`)
and the listening port are replaced by loopback ones (test_the_test_changes_only_addresses checks it).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import OFFERS_PATH, ROOT, fixture_json, free_port, need
from tests.fakes import Reply
from tests.test_gunicorn import Gunicorn

NGINX_DIR = ROOT / "deploy" / "nginx"
SITE = NGINX_DIR / "conf.d" / "wallet-proxy.conf"
PROXY_RULES = NGINX_DIR / "conf.d" / "wallet-proxy.proxy"  # included by both of SITE's servers
AUTH = ("braze", "bz-secret")
OK = fixture_json("get_user_offers.ok.json")
UPSTREAM_SERVER = re.compile(r"^(\s*server\s+)app\d:8000(\s[^;]*)?;", re.M)
LISTEN = re.compile(r"^(\s*listen\s+)8080\b", re.M)


def nginx_binary() -> str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    need("nginx", binary is not None, "apt-get install nginx")
    return binary


def site_for(upstreams: list[int], port: int) -> str:
    """The shipped site with loopback instances and port; everything else byte for byte."""
    text = SITE.read_text()
    ports = iter(upstreams)
    text, servers = UPSTREAM_SERVER.subn(lambda m: f"{m.group(1)}127.0.0.1:{next(ports)}{m.group(2) or ''};",
                                         text)
    assert servers == len(upstreams) == 2
    text, listens = LISTEN.subn(lambda m: f"{m.group(1)}127.0.0.1:{port}", text)
    assert listens == 2  # the Braze host and the webhooks' host
    return text


def lay_out(tmp: Path, upstreams: list[int], port: int) -> Path:
    """nginx.conf and conf.d/ in `tmp`, as compose mounts them in /etc/nginx; temp paths in `tmp`."""
    tmp.chmod(0o755)
    shutil.copy(NGINX_DIR / "nginx.conf", tmp / "nginx.conf")
    (tmp / "conf.d").mkdir()
    (tmp / "conf.d" / "wallet-proxy.conf").write_text(site_for(upstreams, port))
    shutil.copy(PROXY_RULES, tmp / "conf.d" / PROXY_RULES.name)
    # Not a change to the shipped files: the package's temp folders may not be writable here.
    (tmp / "conf.d" / "00-test-temp-paths.conf").write_text("".join(
        f"{kind}_temp_path {tmp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")))
    return tmp / "nginx.conf"


def nginx_args(conf: Path) -> list[str]:
    main = f"pid {conf.parent / 'nginx.pid'};"
    if os.geteuid() == 0:
        main += " user root;"  # workers would otherwise switch to nobody, who cannot enter the temp dir
    return [nginx_binary(), "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "error.log"),
            "-g", main]


def test_the_test_changes_only_addresses():
    shipped = SITE.read_text()
    changed = site_for([1111, 2222], 3333)
    diff = [(a, b) for a, b in zip(shipped.splitlines(), changed.splitlines()) if a != b]
    assert len(shipped.splitlines()) == len(changed.splitlines())
    assert [b.split()[:2] for _, b in diff] == [["server", "127.0.0.1:1111"], ["server", "127.0.0.1:2222"],
                                                ["listen", "127.0.0.1:3333"], ["listen", "127.0.0.1:3333;"]]


def test_nginx_accepts_the_configuration(tmp_path):
    conf = lay_out(tmp_path, [free_port(), free_port()], free_port())
    result = subprocess.run(nginx_args(conf) + ["-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_braze_timeouts_and_buffering_are_set():
    # The values the README and the app's own limits rely on, so an edit cannot drop them silently.
    text = SITE.read_text() + PROXY_RULES.read_text()
    for directive in ("client_header_timeout 10s;", "client_max_body_size 1m;", "client_body_buffer_size 1m;",
                      "proxy_max_temp_file_size 0;", "proxy_next_upstream off;", "proxy_http_version 1.1;",
                      'proxy_set_header Connection "";',
                      "proxy_set_header X-Request-ID $wallet_proxy_request_id;",
                      "keepalive 128;"):
        assert directive in text, directive
    wallet = text.split("location /v1/wallets/ {", 1)[1].split("}", 1)[0]
    assert "proxy_next_upstream error timeout;" in wallet  # the only place a request may be retried


class Nginx:
    """A real nginx master in the foreground, on the shipped configuration."""

    def __init__(self, tmp: Path, upstreams: list[int]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = lay_out(tmp, upstreams, self.port)
        self.access = (tmp / "access.log").open("wb")
        self.errors = tmp / "stderr.log"
        self.proc = subprocess.Popen(nginx_args(conf)[:-1] + [nginx_args(conf)[-1] + " daemon off;"],
                                     stdout=self.access, stderr=self.errors.open("wb"))
        self.log_path = tmp / "access.log"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited:\n" + self.errors.read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not listen in 10 s")

    def log(self, until=lambda lines: True, timeout: float = 5.0) -> list[dict]:
        """The access log's lines, once `until(lines)` holds (nginx logs a request as it finishes)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
            if until(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.access.close()


@pytest.fixture
def front(sessionm, redis_url, tmp_path):
    """nginx in front of two Procfile instances sharing one real Redis, SessionM a fake on loopback."""
    nginx_binary()
    # A deadline under nginx's 5 s for wallet reads but roomy: these tests are about routing and single
    # flight through nginx on a shared, loaded machine; latency is measured in bench/.
    instances = [Gunicorn(sessionm.url, WALLET_PROXY_REDIS_URL=redis_url, WALLET_PROXY_DEADLINE="4",
                          WALLET_PROXY_UPSTREAM_TIMEOUT="3") for _ in range(2)]
    proxy = None
    try:
        proxy = Nginx(tmp_path, [g.port for g in instances])
        yield proxy, instances
    finally:
        if proxy:
            proxy.stop()
        for instance in instances:
            instance.stop()


def fallbacks(base: str) -> str:
    """An instance's Redis fallback count, to tell a degraded Redis from a coalescing bug."""
    text = requests.get(f"{base}/metrics", auth=("ops", "ops-secret"), timeout=5).text
    lines = text.splitlines()
    return next((line for line in lines if line.startswith("wallet_proxy_cache_fallback_total")), "")


def wallet(base: str, user: str, **kwargs) -> requests.Response:
    return requests.get(f"{base}/v1/wallets/{user}", auth=AUTH, timeout=10, **kwargs)


@pytest.mark.redis
def test_a_burst_through_nginx_makes_one_sessionm_call_per_user(sessionm, front):
    proxy, instances = front
    sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.4))
    users = [f"burst-{uuid.uuid4().hex[:8]}-{n}" for n in range(12)]
    # Each user rendered 6 times at once (HTML, text and AMP, twice), all users together.
    renders = [user for user in users for _ in range(6)]
    with ThreadPoolExecutor(len(renders)) as pool:
        answers = list(pool.map(lambda user: wallet(proxy.url, user), renders))
    assert [a.status_code for a in answers] == [200] * len(renders), [a.text for a in answers if not a.ok][:3]
    assert all(a.json()["available_points"] == OK["payload"]["available_points"] for a in answers)
    calls = [c.json["user_id"] for c in sessionm.calls(OFFERS_PATH)]
    # Exactly one SessionM call per user, across both instances.
    assert sorted(calls) == sorted(users), ([fallbacks(g.url) for g in instances], sorted(calls),
                                            [(a.status_code, a.headers.get("Cache-Status")) for a in answers])
    lines = proxy.log(until=lambda lines: len(lines) >= len(renders))
    served = {line["upstream"] for line in lines if line["route"] == "wallet"}
    assert served == {f"127.0.0.1:{g.port}" for g in instances}  # both instances took renders


@pytest.mark.redis
def test_request_ids_pass_through_and_the_log_holds_no_user_id_or_query(sessionm, front):
    proxy, _ = front
    user = f"secret-user-{uuid.uuid4().hex[:8]}"
    given = wallet(proxy.url, user, params={"culture": "fr-FR", "sig": "deadbeef" * 8},
                   headers={"X-Request-ID": "braze-send-42"})
    assert given.headers["X-Request-ID"] == "braze-send-42"  # nginx passed it, the instance echoed it
    made = wallet(proxy.url, user)
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])  # nginx's own $request_id
    hostile = wallet(proxy.url, user, headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["X-Request-ID"])
    lines = proxy.log(until=lambda lines: len(lines) >= 3)
    text = proxy.log_path.read_text()
    assert {"braze-send-42", made.headers["X-Request-ID"]} <= {line["request_id"] for line in lines}
    assert user not in text and "deadbeef" not in text and "culture" not in text
    assert {line["route"] for line in lines} == {"wallet"}


@pytest.mark.redis
def test_an_oversized_body_is_refused_by_nginx_in_json(sessionm, front):
    proxy, _ = front
    answer = requests.post(f"{proxy.url}/v1/braze/trigger", auth=AUTH, data=b"{" + b" " * (1024 * 1024 + 10),
                           headers={"Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    lines = proxy.log(until=lambda lines: any(line["status"] == 413 for line in lines))
    assert [line["upstream"] for line in lines if line["status"] == 413] == [""]  # never reached an instance


@pytest.mark.redis
def test_only_wallet_reads_are_retried_on_the_other_instance(sessionm, front):
    proxy, instances = front
    instances[1].stop()  # one instance gone: its port now refuses connections
    dead = f"127.0.0.1:{instances[1].port}"
    posts = []
    for _ in range(6):  # round robin: a POST soon lands on the dead instance
        posts.append(requests.post(f"{proxy.url}/v1/braze/trigger", auth=AUTH, json={}, timeout=10))
        if posts[-1].status_code == 502:
            break
    assert posts[-1].status_code == 502 and posts[-1].json()["error"]["code"] == "upstream_unavailable"
    reads = [wallet(proxy.url, f"retry-{uuid.uuid4().hex[:8]}") for _ in range(6)]
    assert [r.status_code for r in reads] == [200] * 6  # a read that met the dead one went to the other
    lines = proxy.log(until=lambda lines: len(lines) >= len(posts) + len(reads))
    post_lines = [line for line in lines if line["method"] == "POST"]
    assert post_lines and all("," not in line["upstream"] for line in post_lines)  # never replayed
    assert any(line["upstream"] == dead for line in post_lines)
    retried = [line for line in lines if line["route"] == "wallet" and "," in line["upstream"]]
    assert retried and all(line["upstream"].startswith(dead) and line["status"] == 200 for line in retried)


@pytest.mark.redis
def test_a_client_that_never_finishes_its_request_head_is_closed_after_10_s(front):
    proxy, _ = front
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        started = time.monotonic()
        try:
            assert sock.recv(1024) == b""  # closed, nothing answered
        except ConnectionResetError:
            pass  # reset_timedout_connection: closed with a reset, freeing the socket at once
        waited = time.monotonic() - started
    assert 9 <= waited < 13, waited


def raw_get(port: int, path: str, headers: dict, source: str = "127.0.0.1") -> tuple[int, str]:
    """GET through nginx from `source` (127.0.0.2 is not a trusted front); (status, the head)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "x", "Connection": "close", **headers}.items())
        sock.sendall(f"GET {path} HTTP/1.1\r\n{head}\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    text = data.decode("latin-1")
    return int(text.split()[1]), text.split("\r\n\r\n", 1)[0].lower()


@pytest.mark.redis
def test_the_front_keeps_https_from_a_trusted_front_hides_metrics_and_gives_webhooks_their_host(sessionm, front):
    """#23 item 7. The instance answers HSTS only to a request it believes came over https."""
    proxy, instances = front
    # A TLS front on a trusted address says https: kept (was overwritten by nginx's own `http`).
    status, head = raw_get(proxy.port, "/healthz", {"X-Forwarded-Proto": "https"})
    assert status == 200 and "strict-transport-security" in head
    # Anyone else saying so is not believed.
    status, head = raw_get(proxy.port, "/healthz", {"X-Forwarded-Proto": "https"}, source="127.0.0.2")
    assert status == 200 and "strict-transport-security" not in head
    # /metrics is not served on the public listener, even with the admin credential...
    answer = requests.get(f"{proxy.url}/metrics", auth=("ops", "ops-secret"), timeout=5)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert "wallet_proxy_" not in answer.text
    # ... while each instance still serves it to Prometheus directly.
    assert "wallet_proxy_" in requests.get(f"{instances[0].url}/metrics", auth=("ops", "ops-secret"), timeout=5).text
    # The webhooks' host serves the webhooks and nothing else.
    hooks = {"Host": "wallet-proxy-hooks.example.com"}
    tagged = requests.post(f"{proxy.url}/v1/users/u-1/tags", headers=hooks, auth=AUTH, json={}, timeout=10)
    assert tagged.status_code != 404 and tagged.headers["Content-Type"].startswith("application/json")
    assert tagged.json()["error"]["code"] != "not_found"  # reached an instance (which judged the body)
    elsewhere = requests.get(f"{proxy.url}/v1/wallets/u-1", headers=hooks, auth=AUTH, timeout=10)
    assert elsewhere.status_code == 404 and "webhooks only" in elsewhere.json()["error"]["message"]
