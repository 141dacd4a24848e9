"""Real Redis topologies started by the tests: TLS, Sentinel (master + replica + sentinel), Cluster.

Every server listens on a free loopback port, keeps nothing on disk beyond its own temporary
directory, and is killed by `close()`; starting each one waits until it answers, bounded in time.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis

from tests.conftest import free_port, need


def _binary(name: str) -> str:
    path = shutil.which(name)
    need(name, path is not None, "apt-get install redis-server redis-sentinel redis-tools")
    return path


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = condition()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s")


class Process:
    """One redis-server (or redis-sentinel) with its own directory."""

    def __init__(self, argv: list[str], port: int, directory: str):
        self.argv, self.port, self.directory = argv, port, directory
        self.log = os.path.join(directory, f"redis-{port}.log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=directory, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        end = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        with open(self.log, errors="replace") as log:
            raise RuntimeError(f"{argv[0]} on port {port} did not start:\n" + log.read())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def server_argv(port: int, *extra: str) -> list[str]:
    return [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", *extra]


class Topology:
    """Processes started together and closed together, in one temporary directory."""

    def __init__(self, prefix: str):
        self.directory = tempfile.mkdtemp(prefix=prefix)
        self.processes: list[Process] = []

    def start(self, argv: list[str], port: int) -> Process:
        process = Process(argv, port, self.directory)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(open(p.log, errors="replace").read()[-3000:] for p in self.processes)


class SentinelSetup(Topology):
    """A master, one replica, and a Sentinel watching them under the name `wp-master`.

    The Sentinel declares the master down after 400 ms without an answer, and with a quorum of 1
    starts the failover on its own; the URL lists a Sentinel that is down first, so the client
    has to move on to the next one, as it must when a Sentinel host is lost.
    """

    NAME = "wp-master"

    def __init__(self):
        super().__init__("wp-sentinel-")
        self.master_port, self.replica_port, self.sentinel_port = free_port(), free_port(), free_port()
        self.master = self.start(server_argv(self.master_port), self.master_port)
        self.replica = self.start(server_argv(self.replica_port, "--replicaof", "127.0.0.1",
                                              str(self.master_port)), self.replica_port)
        config = os.path.join(self.directory, "sentinel.conf")
        with open(config, "w") as out:
            out.write(f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.directory}\n"
                      f"sentinel monitor {self.NAME} 127.0.0.1 {self.master_port} 1\n"
                      f"sentinel down-after-milliseconds {self.NAME} 400\n"
                      f"sentinel failover-timeout {self.NAME} 4000\n"
                      f"sentinel parallel-syncs {self.NAME} 1\n")
        self.sentinel = self.start([_binary("redis-sentinel"), config], self.sentinel_port)
        sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=1)
        wait_until(lambda: sentinel.sentinel_slaves(self.NAME), 15, "the Sentinel sees the replica")
        replica = redis.Redis(port=self.replica_port, socket_timeout=1)
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 15,
                   "the replica follows the master")
        self.dead_sentinel = free_port()  # listed first in the URL, never started
        self.url = (f"redis+sentinel://127.0.0.1:{self.dead_sentinel},127.0.0.1:{self.sentinel_port}"
                    f"/{self.NAME}/0")

    def master_address(self) -> tuple:
        sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=1)
        return tuple(sentinel.sentinel_get_master_addr_by_name(self.NAME))

    def wait_failover(self, timeout: float = 20.0) -> None:
        """Until the Sentinel names the replica as a master it sees up, and the replica accepts writes."""
        sentinel = redis.Redis(port=self.sentinel_port, socket_timeout=1)

        def promoted_and_up():
            state = sentinel.sentinel_master(self.NAME)
            return state["port"] == self.replica_port and not state["is_sdown"] and not state["is_odown"]

        wait_until(promoted_and_up, timeout, "the Sentinel promoted the replica")
        promoted = redis.Redis(port=self.replica_port, socket_timeout=1)
        wait_until(lambda: promoted.info("replication")["role"] == "master", timeout, "replica promoted")


class ClusterSetup(Topology):
    """Three masters (no replicas) sharing the 16,384 slots, created with `redis-cli --cluster create`."""

    def __init__(self, masters: int = 3):
        super().__init__("wp-cluster-")
        self.ports = [free_port() for _ in range(masters)]
        for port in self.ports:
            # The bus port defaults to port + 10000, which may be taken or past 65535: pick one.
            self.start(server_argv(port, "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                                   "--cluster-config-file", f"nodes-{port}.conf",
                                   "--cluster-node-timeout", "2000"), port)
        created = subprocess.run([_binary("redis-cli"), "--cluster", "create",
                                  *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-replicas", "0",
                                  "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed:\n" + created.stdout + created.stderr)
        for port in self.ports:
            node = redis.Redis(port=port, socket_timeout=1)
            wait_until(lambda: node.cluster("info")["cluster_state"] == "ok", 20, f"cluster node {port} ok")
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])
