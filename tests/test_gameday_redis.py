"""Game day (#25): at most once across losing Redis, on a real master and replica.

The replica follows the master through a TCP relay the test can hold, which is replication lag
made on demand: what a Sentinel failover promotes is whatever the replica had. Braze is a fake on
loopback; the trigger door is the app's own.

Why at most once matters: a SessionM external message reaches Braze's trigger API at most once,
and Braze de-duplicates recipients only within one call
(https://www.braze.com/docs/api/objects_filters/recipient_object).
"""
from __future__ import annotations

import socket
import threading
import uuid

import pytest
import redis

from tests.conftest import free_port, make_settings
from tests.fakes import FakeUpstream, Reply
from tests.redis_servers import Topology, server_argv, wait_until

pytestmark = pytest.mark.redis

SEND = "/campaigns/trigger/send"
BODY = {"campaign_id": "c-gameday", "external_user_id": "u-1"}


class Relay:
    """A TCP relay from the replica to the master; `hold()` stops the master's stream reaching it."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.held = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the master is gone: the replica keeps trying, and is refused
                client.close()
                continue
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source, sink, from_master):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_master and self.held.is_set():
                    continue  # lagging: the replica never gets these bytes
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def hold(self):
        self.held.set()

    def close(self):
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def pair():
    """A master and a replica that follows it through a Relay; yields (topology, master, replica, relay)."""
    topology = Topology("wp-gameday-")
    master_port, replica_port = free_port(), free_port()
    master = topology.start(server_argv(master_port, "--repl-diskless-sync-delay", "0"), master_port)
    relay = Relay(master_port)
    replica = topology.start(server_argv(replica_port, "--replicaof", "127.0.0.1", str(relay.port)),
                             replica_port)
    follower = redis.Redis(port=replica_port, socket_timeout=1)
    wait_until(lambda: follower.info("replication").get("master_link_status") == "up", 15,
               "the replica follows the master")
    leader = redis.Redis(port=master_port, socket_timeout=1)
    wait_until(lambda: leader.info("replication").get("connected_slaves") == 1, 15, "the master sees it")
    try:
        yield topology, master, replica, relay
    finally:
        relay.close()
        topology.close()


def promote(replica) -> str:
    """What a Sentinel failover does to the replica: make it the master. Returns its URL."""
    redis.Redis(port=replica.port, socket_timeout=1).replicaof("NO", "ONE")
    return f"redis://127.0.0.1:{replica.port}/0"


def trigger(client, key):
    return client.post("/v1/braze/trigger", json=BODY,
                       headers={"Authorization": "Bearer secret", "Idempotency-Key": key})


def test_the_in_flight_mark_reaches_the_replica_before_braze_is_called(pair, app_for):
    _, master, replica, relay = pair
    braze = FakeUpstream()
    braze.on("POST", SEND, Reply(201, {"dispatch_id": "d-1", "message": "success"}))
    key = "gd-" + uuid.uuid4().hex
    try:
        first = app_for(make_settings(braze_url=braze.url,
                                      WALLET_PROXY_REDIS_URL=f"redis://127.0.0.1:{master.port}/0"))
        relay.hold()  # the replica lags: nothing written from now on reaches it
        answer = trigger(first.test_client(), key)
        master.kill()  # the master is lost; the lagging replica is promoted
        second = app_for(make_settings(braze_url=braze.url, WALLET_PROXY_REDIS_URL=promote(replica)))
        retry = trigger(second.test_client(), key)  # the caller repeats with the same key
        sends = braze.calls(SEND)
        assert len(sends) == 1, f"Braze was called {len(sends)} times for one Idempotency-Key"
        # The first attempt could not make its mark durable, so it refused before calling Braze.
        assert answer.status_code == 503 and "replica" in answer.json["error"]["message"]
        assert retry.status_code == 201 and retry.json["dispatch_ids"] == ["d-1"]
    finally:
        braze.close()


def test_braze_s_answer_reaches_the_caller_when_redis_is_lost_after_the_send(pair, app_for, clock):
    _, master, replica, _ = pair
    braze = FakeUpstream()

    def accept_then_lose_redis(request):
        master.kill()  # Braze accepted; Redis goes before the result is recorded
        return Reply(201, {"dispatch_id": "d-2", "message": "success"})

    braze.on("POST", SEND, accept_then_lose_redis)
    key = "gd-" + uuid.uuid4().hex
    try:
        first = app_for(make_settings(braze_url=braze.url,
                                      WALLET_PROXY_REDIS_URL=f"redis://127.0.0.1:{master.port}/0"))
        answer = trigger(first.test_client(), key)
        assert answer.status_code == 201 and answer.json["dispatch_ids"] == ["d-2"], answer.json

        # Had the answer been lost on the way anyway, a repeat must not send again: the promoted
        # replica holds the SENDING mark. While its lease runs it waits (here 0.3 s) and asks for a
        # retry; once the lease is over the outcome is unknown (504), never a second send.
        second = app_for(make_settings(braze_url=braze.url, WALLET_PROXY_REDIS_URL=promote(replica)),
                         braze_options={"idempotency_wait": 0.3}).test_client()
        waiting = trigger(second, key)
        assert waiting.status_code == 503
        clock.tick(301)  # past the 300 s lease of the lost attempt
        unknown = trigger(second, key)
        assert unknown.status_code == 504 and unknown.json["error"]["code"] == "outcome_unknown"
        assert len(braze.calls(SEND)) == 1
    finally:
        braze.close()


def test_with_appendfsync_always_a_restarted_redis_still_knows_the_key(app_for, clock):
    """README's guidance for one server: `appendonly yes` + `appendfsync always` keeps every record."""
    topology = Topology("wp-gameday-aof-")
    port = free_port()
    argv = server_argv(port) + ["--appendonly", "yes", "--appendfsync", "always"]  # later flags win
    server = topology.start(argv, port)
    braze = FakeUpstream()

    def accept_then_crash(request):
        server.kill()  # SIGKILL: no shutdown save; only what the append-only file holds survives
        return Reply(201, {"dispatch_id": "d-3", "message": "success"})

    braze.on("POST", SEND, accept_then_crash)
    key = "gd-" + uuid.uuid4().hex
    try:
        settings = make_settings(braze_url=braze.url, WALLET_PROXY_REDIS_URL=f"redis://127.0.0.1:{port}/0")
        answer = trigger(app_for(settings).test_client(), key)
        assert answer.status_code == 201
        topology.start(argv, port)  # restarted on the same directory: it replays the file
        again = app_for(settings, braze_options={"idempotency_wait": 0.3}).test_client()
        assert trigger(again, key).status_code == 503  # the sending mark, its lease still running
        clock.tick(301)
        assert trigger(again, key).json["error"]["code"] == "outcome_unknown"
        assert len(braze.calls(SEND)) == 1
    finally:
        braze.close()
        topology.close()
