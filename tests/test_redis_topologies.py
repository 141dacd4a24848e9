"""Redis in the forms operators run it, against real servers started here: TLS, Sentinel, Cluster.

The service runs as real processes (the Procfile's gunicorn line) where a behaviour spans processes:
a Sentinel failover under load, coalescing and purges across processes on a Redis Cluster.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from tests.conftest import CLIENTS, OFFERS_PATH, ROOT, fixture_json, free_port, make_settings, need
from tests.fakes import FakeClock, Reply
from tests.redis_servers import ClusterSetup, SentinelSetup, Topology, server_argv, wait_until
from wallet_proxy.settings import ConfigError
from wallet_proxy.redis_client import ClusterClient, check_url, make_client, parse_multi
from wallet_proxy.sends.idempotency import RedisIdempotency
from wallet_proxy.wallet import keys
from wallet_proxy.wallet.redis_store import RedisLocker, RedisStore
from wallet_proxy.wallet.stores import Entry, MemoryStore

pytestmark = pytest.mark.redis

AUTH = ("braze", "bz-secret")
OK = fixture_json("get_user_offers.ok.json")
WALLET = {"offers": [], "groups": [], "categories": [], "available_points": 5, "total_points": 9,
          "user": {"opted_in": True, "activated": True}}


def new_user(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def store_for(url: str, clock=None) -> tuple[RedisStore, object]:
    clock = clock or FakeClock()
    client = make_client(url, 8)
    return RedisStore(client, MemoryStore(1 << 20, 360, timer=clock), 60, 300, clock=clock), client


class Service:
    """The Procfile's web line as its own process, logging to a file (a pipe could fill and block it)."""

    def __init__(self, connect_url: str, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tempfile.mktemp(prefix="wp-service-", suffix=".log")
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("SESSIONM_", "BRAZE_", "WALLET_PROXY_"))}
        environ.update(PORT=str(self.port), SESSIONM_CONNECT_URL=connect_url,
                       SESSIONM_CONNECT_AUTH="Y29ubmVjdDpzZWNyZXQ=", SESSIONM_RETAILER_ID="retailer-1",
                       WALLET_PROXY_CLIENTS=CLIENTS, **env)
        line = next(l for l in (ROOT / "Procfile").read_text().splitlines() if l.startswith("web:"))
        argv = [str(Path(sys.executable).with_name("gunicorn"))] + line.split(":", 1)[1].split()[1:]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.proc.poll() is None and requests.get(self.url + "/healthz",
                                                                          timeout=0.5).ok,
                       20, "the service answers /healthz")
        except (AssertionError, requests.RequestException):
            self.stop()
            raise RuntimeError("the service did not start:\n" + self.log())

    # Connection: close, or an idle keep-alive connection holds SIGTERM for the graceful timeout.
    def get(self, user: str) -> requests.Response:
        return requests.get(f"{self.url}/v1/wallets/{user}", auth=AUTH, timeout=10,
                            headers={"Connection": "close"})

    def delete(self, user: str) -> requests.Response:
        return requests.delete(f"{self.url}/v1/wallets/{user}", auth=("ops", "ops-secret"), timeout=10,
                               headers={"Connection": "close"})

    def shares_redis(self) -> bool:
        """Whether this process uses the shared cache again (a read probes Redis after a back-off)."""
        self.get(new_user("probe"))
        ready = requests.get(self.url + "/readyz", timeout=5, headers={"Connection": "close"})
        checks = ready.json()["checks"]
        return checks.get("redis") == "ok" and checks["cache"] == "redis"

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        Path(self.log_path).unlink(missing_ok=True)


@pytest.fixture
def services(sessionm):
    """Start service processes sharing one WALLET_PROXY_REDIS_URL, all pointed at the fake SessionM."""
    started = []

    def start(url: str, count: int = 2, **env):
        with ThreadPoolExecutor(count) as pool:  # side by side: each start costs seconds on a busy machine
            futures = [pool.submit(Service, sessionm.url, WALLET_PROXY_REDIS_URL=url, **env)
                       for _ in range(count)]
        processes = [f.result() for f in futures if f.exception() is None]
        started.extend(processes)
        if len(processes) < count:
            raise next(f.exception() for f in futures if f.exception() is not None)
        return processes

    yield start
    for service in started:
        service.stop()


def calls_for(sessionm, user: str) -> int:
    return sum(1 for call in sessionm.calls(OFFERS_PATH) if call.json["user_id"] == user)


def burst_on_both(processes, user: str, per_process: int = 6) -> list[int]:
    """Concurrent first reads of one user through every process; their status codes."""
    targets = [p for p in processes for _ in range(per_process)]
    with ThreadPoolExecutor(len(targets)) as pool:
        return [r.status_code for r in pool.map(lambda p: p.get(user), targets)]


# --- URLs -------------------------------------------------------------------------------------

class TestUrls:
    def test_sentinel_urls_name_the_sentinels_the_master_and_the_db(self):
        target = parse_multi("redis+sentinel://:s3cret@10.0.0.1:26380,[::1],sentinel-b/prod-master/2")
        assert target.nodes == (("10.0.0.1", 26380), ("::1", 26379), ("sentinel-b", 26379))
        assert (target.master, target.db) == ("prod-master", 2)
        assert (target.password, target.username) == ("s3cret", None)
        assert parse_multi("redis+sentinel://h/m").db == 0

    def test_cluster_urls_list_seed_nodes(self):
        target = parse_multi("redis+cluster://app:pw@n1:7000,n2:7001")
        assert target.nodes == (("n1", 7000), ("n2", 7001))
        assert (target.username, target.password) == ("app", "pw")

    @pytest.mark.parametrize("url, reason", [
        ("http://x", "must start with"),
        ("redis+sentinel://h:26379", "needs the master's name"),
        ("redis+sentinel://h:26379/m/x", "/MASTER_NAME/db"),
        ("redis+sentinel://h:port/m", "not a number"),
        ("redis+cluster://n1:7000/3", "no path"),
        ("redis+cluster://:pw@,n2:7000", "host is missing"),
        ("redis+cluster://n1:7000?ssl=true", "no ?options"),
    ])
    def test_a_bad_url_is_refused_at_start_with_the_reason_and_without_the_secret(self, url, reason):
        with pytest.raises(ValueError, match=reason.replace("?", r"\?")):
            check_url(url)
        with pytest.raises(ConfigError) as refused:
            make_settings(WALLET_PROXY_REDIS_URL=url.replace("@", "hunter2@", 1) if "@" in url else url)
        assert "WALLET_PROXY_REDIS_URL" in str(refused.value) and "hunter2" not in str(refused.value)

    def test_a_cluster_that_is_down_at_start_is_a_redis_error_not_a_crash(self):
        client = make_client(f"redis+cluster://127.0.0.1:{free_port()}", 8)
        assert isinstance(client, ClusterClient)
        store = RedisStore(client, MemoryStore(1 << 20, 60), 60, 300)
        store.put("u-1", "en-US", Entry(WALLET, 1.0))
        assert store.get("u-1", "en-US") == Entry(WALLET, 1.0)  # from this process's memory
        assert not store.healthy()
        with pytest.raises(redis.ConnectionError):
            client.ping()


# --- TLS --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_redis():
    """redis-server with only a TLS port, on a throwaway self-signed certificate for 127.0.0.1."""
    need("openssl", shutil.which("openssl") is not None, "apt-get install openssl")
    topology = Topology("wp-tls-")
    cert, key = os.path.join(topology.directory, "cert.pem"), os.path.join(topology.directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    try:
        topology.start(server_argv(0, "--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key,
                                   "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"), port)
    except RuntimeError as exc:
        topology.close()
        need("redis-server with TLS", "tls" not in str(exc).lower(), str(exc)[-300:])
        raise
    yield {"port": port, "ca": cert}
    topology.close()


class TestTls:
    def test_rediss_with_the_servers_ca_shares_the_cache(self, tls_redis):
        url = f"rediss://127.0.0.1:{tls_redis['port']}/0?ssl_ca_certs={tls_redis['ca']}"
        first, client = store_for(url)
        second, _ = store_for(url)
        user = new_user()
        first.put(user, "en-US", Entry(WALLET, 5.0))
        assert second.get(user, "en-US") == Entry(WALLET, 5.0) and second.healthy()
        assert client.connection_pool.connection_class.__name__ == "SSLConnection"

    def test_a_certificate_the_client_does_not_trust_is_refused(self, tls_redis):
        store, _ = store_for(f"rediss://127.0.0.1:{tls_redis['port']}/0")  # system CAs only
        store.put(new_user(), "en-US", Entry(WALLET, 5.0))
        assert not store.healthy() and store.errors_total == 1

    def test_the_certificate_must_name_the_host(self, tls_redis):
        # The certificate names IP 127.0.0.1 only: trusted, but not for the name "localhost".
        client = make_client(f"rediss://localhost:{tls_redis['port']}/0?ssl_ca_certs={tls_redis['ca']}", 8)
        with pytest.raises(redis.ConnectionError, match="(?i)mismatch"):
            client.ping()

    def test_plain_redis_on_a_tls_port_fails(self, tls_redis):
        store, _ = store_for(f"redis://127.0.0.1:{tls_redis['port']}/0")
        store.put(new_user(), "en-US", Entry(WALLET, 5.0))
        assert not store.healthy()


# --- one server: the near cache across processes ------------------------------------------------

def test_hits_skip_redis_and_a_purge_reaches_the_other_process(redis_url, sessionm, services, quiet_fakes):
    processes = services(redis_url)
    admin = redis.Redis.from_url(redis_url)

    def hgets() -> int:
        return admin.info("commandstats").get("cmdstat_hget", {}).get("calls", 0)

    user = new_user("near")
    assert processes[0].get(user).status_code == 200  # fetched (and stored) through the first
    assert processes[1].get(user).headers["Cache-Status"].startswith("wallet-proxy; hit")  # from Redis
    before = hgets()
    for _ in range(5):
        assert processes[1].get(user).headers["Cache-Status"].startswith("wallet-proxy; hit")
    assert hgets() == before, "hits are served from the process's near cache, not Redis"
    assert processes[0].delete(user).status_code == 204
    assert processes[1].get(user).headers["Cache-Status"] == "wallet-proxy; fwd=uri-miss; stored"
    assert calls_for(sessionm, user) == 2, "the purge through one process reached the other at once"


# --- Sentinel ---------------------------------------------------------------------------------

@pytest.fixture
def sentinel():
    setup = SentinelSetup()
    yield setup
    setup.close()


class TestSentinel:
    def test_the_store_follows_a_failover(self, sentinel):
        monotonic = FakeClock(0)
        client = make_client(sentinel.url, 8)
        store = RedisStore(client, MemoryStore(1 << 20, 360), 60, 300, monotonic=monotonic)
        user = new_user()
        store.put(user, "en-US", Entry(WALLET, 1.0))
        assert client.connection_pool.master_address[1] == sentinel.master_port
        assert isinstance(client.connection_pool, redis.BlockingConnectionPool), "a bounded pool"
        wait_until(lambda: redis.Redis(port=sentinel.replica_port).hget(keys.wallet_key(user), "en-US"), 5,
                   "replicated")
        sentinel.master.kill()
        sentinel.wait_failover()
        assert store.get(user, "en-US") == Entry(WALLET, 1.0)
        monotonic.tick(5)  # past the back-off if the first call after the kill tripped it
        other = new_user()
        store.put(other, "fr", Entry(WALLET, 2.0))
        assert store.healthy()
        assert redis.Redis(port=sentinel.replica_port).hexists(keys.wallet_key(other), "fr"), \
            "written to the promoted replica"

    def test_master_killed_during_a_burst_from_two_processes(self, sentinel, sessionm, services, quiet_fakes):
        """Every answer 2xx through the failover; then coalescing across processes works again."""
        processes = services(sentinel.url)
        users = [new_user("burst") for _ in range(40)]
        for n, user in enumerate(users):  # cached before the kill: the burst mixes hits and misses
            assert processes[n % 2].get(user).status_code == 200
        users += [new_user("burst") for _ in range(40)]
        statuses, stop = [], threading.Event()

        def reader(n: int) -> None:
            while not stop.is_set():
                n += 1
                answer = processes[n % 2].get(users[n % len(users)])
                statuses.append(answer.status_code)

        with ThreadPoolExecutor(8) as pool:
            for n in range(8):
                pool.submit(reader, n * 7)
            wait_until(lambda: len(statuses) >= 30, 20, "30 reads before the kill")
            before_kill = len(statuses)
            sentinel.master.kill()
            sentinel.wait_failover()
            after_failover = len(statuses)
            wait_until(lambda: len(statuses) >= after_failover + 30, 20, "30 reads after the failover")
            stop.set()
        assert after_failover > before_kill, "reads while the master was down"
        assert [s for s in statuses if s // 100 != 2] == [], "every answer 2xx"
        wait_until(lambda: all(p.shares_redis() for p in processes), 15, "both processes back on Redis",
                   interval=0.3)
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.5))
        user = new_user("after")
        assert burst_on_both(processes, user) == [200] * 12
        assert calls_for(sessionm, user) == 1, \
            "one SessionM call for both processes after the failover:\n" + \
            "\n".join(p.log() for p in processes)


# --- Cluster ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    setup = ClusterSetup()
    yield setup
    setup.close()


class TestCluster:
    def test_the_keys_of_one_user_share_a_slot_and_users_spread_over_the_masters(self, cluster):
        client = make_client(cluster.url, 8).cluster()
        users = [new_user() for _ in range(30)]
        for user in users:
            assert client.keyslot(keys.wallet_key(user)) == client.keyslot(keys.flight_key(user, "fr-FR"))
        nodes = {client.get_node_from_key(keys.wallet_key(u)).name for u in users}
        assert len(nodes) == 3

    def test_store_and_lock_work_for_users_on_every_node(self, cluster):
        store, client = store_for(cluster.url)
        locker = RedisLocker(client, store)
        for user in [new_user() for _ in range(12)]:
            def call(u=user):
                store.put(u, "en-US", Entry(WALLET, 3.0))
                return Entry(WALLET, 3.0)

            assert locker.fetch_once(user, "en-US", 1.0, call) == Entry(WALLET, 3.0)
            assert not client.exists(keys.flight_key(user, "en-US")), "released by the Lua script"
            assert store.get(user, "en-US") == Entry(WALLET, 3.0)
            store.forget(user)
            assert not client.exists(keys.wallet_key(user))
        assert store.healthy() and store.errors_total == 0

    def test_idempotency_records_swap_atomically_on_a_cluster(self, cluster):
        first = RedisIdempotency(make_client(cluster.url, 8), poll=0.01, wait_timeout=0.3)
        second = RedisIdempotency(make_client(cluster.url, 8), poll=0.01, wait_timeout=0.3)
        for n in range(6):  # keys in several slots
            key = f"send-{uuid.uuid4().hex}-{n}"
            claim = first.begin(key, "digest", [{"state": "new"}])
            assert not claim.replay
            with pytest.raises(Exception, match="still being sent"):
                second.begin(key, "digest", [{"state": "new"}])
            first.record(key, claim.owner, [{"state": "sent", "dispatch_id": "d"}], done=True)
            replay = second.begin(key, "digest", [{"state": "new"}])
            assert replay.replay and replay.record["chunks"][0]["dispatch_id"] == "d"

    def test_the_braze_rate_budget_script_is_shared_on_a_cluster(self, cluster):
        from wallet_proxy.upstream.budget import RedisTokenBucket

        name = f"test-{uuid.uuid4().hex}"
        first = RedisTokenBucket(make_client(cluster.url, 8), name, rate=0.001, capacity=2)
        second = RedisTokenBucket(make_client(cluster.url, 8), name, rate=0.001, capacity=2)
        assert first.take() == 0 and second.take() == 0
        assert first.take() > 0 and second.take() > 0, "one bucket for both clients"
        assert not first._degraded and not second._degraded

    def test_coalescing_and_purge_across_two_processes(self, cluster, sessionm, services, quiet_fakes):
        processes = services(cluster.url)
        sessionm.on("POST", OFFERS_PATH, Reply(200, OK, delay=0.5))
        for user in [new_user("cl") for _ in range(3)]:  # users in different slots
            assert burst_on_both(processes, user) == [200] * 12
            assert calls_for(sessionm, user) == 1, "one SessionM call for both processes"
            for _ in range(2):  # the second read is served from the process's near cache
                assert processes[1].get(user).headers["Cache-Status"].startswith("wallet-proxy; hit")
            assert processes[0].delete(user).status_code == 204
            assert processes[1].get(user).status_code == 200
            assert calls_for(sessionm, user) == 2, "the purge through one process reached the other"
