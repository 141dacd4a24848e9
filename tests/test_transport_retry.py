"""A kept-alive connection closed by the server without an answer is sent again, once, for reads.

Seen in issue #14's overload runs: the SessionM stand-in's keep-alive idle timeout closed pooled
connections just as the service reused them, and each such race became a "SessionM refused or
dropped the connection" 503 that counted against the breaker. get_user_offers only reads, so it is
sent once more on another connection (as browsers and HTTP clients do for idempotent requests);
writes (Core tags, Braze sends) are never repeated this way. Real sockets on loopback.
"""
from __future__ import annotations

import json
import socket
import threading

import pytest

from wallet_proxy.errors import UpstreamUnavailable
from wallet_proxy.upstream import transport
from wallet_proxy.upstream.connect import ConnectClient

BODY = json.dumps({"status": "ok", "payload": {"user_offers": [], "total_records": 0,
                                               "available_points": 5}}).encode()


class ClosingServer:
    """Answers HTTP/1.1 on loopback; the first `drop` requests are read and then closed unanswered."""

    def __init__(self, drop: int):
        self.drop = drop
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn):
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                data = rest[length:]
                self.requests += 1
                if self.requests <= self.drop:
                    return  # closed without a byte of answer
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)

    def close(self):
        self.sock.close()


@pytest.fixture
def server(request):
    made = []

    def make(drop):
        made.append(ClosingServer(drop))
        return made[-1]

    yield make
    for s in made:
        s.close()


def connect(url):
    return ConnectClient(url, "Basic YTpi", "retailer", transport.make_session(4))


def test_a_read_closed_unanswered_once_is_sent_again_and_answered(server):
    upstream = server(drop=1)
    reply = connect(upstream.url).fetch_raw("u", "en-US", 2.0)
    assert reply.status == 200 and reply.data["payload"]["available_points"] == 5
    assert upstream.requests == 2


def test_only_once_a_second_close_is_a_503(server):
    upstream = server(drop=2)
    with pytest.raises(UpstreamUnavailable) as failed:
        connect(upstream.url).fetch_raw("u", "en-US", 2.0)
    assert "refused or dropped" in failed.value.message and upstream.requests == 2


def test_a_write_is_never_sent_twice(server):
    upstream = server(drop=1)
    with pytest.raises(UpstreamUnavailable):
        transport.call(transport.make_session(4), "POST", upstream.url + "/tags", json={"tags": ["a"]},
                       timeout=2.0, name="SessionM Core")
    assert upstream.requests == 1


def test_a_refused_connection_is_not_retried():
    from tests.conftest import free_port

    with pytest.raises(UpstreamUnavailable):
        connect(f"http://127.0.0.1:{free_port()}").fetch_raw("u", "en-US", 1.0)


def test_what_counts_as_closed_unanswered():
    import http.client

    import requests
    from urllib3.exceptions import ProtocolError

    closed = requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", http.client.RemoteDisconnected("closed")))
    reset = requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104)))
    refused = requests.exceptions.ConnectionError(ConnectionRefusedError(111))
    assert transport.closed_unanswered(closed) and transport.closed_unanswered(reset)
    assert not transport.closed_unanswered(refused)
    assert not transport.closed_unanswered(requests.exceptions.ConnectionError("no cause"))
