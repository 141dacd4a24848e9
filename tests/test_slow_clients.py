"""Slow request bodies and clients that never read (issue #22 items 1-2), over real sockets against the
Procfile's gunicorn line (SPEC: All JSON POST routes, Connections).

Timeouts are set short through the environment so each attack is seen ending in seconds.
"""
from __future__ import annotations

import selectors
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.test_hostile import SIG, USER, WALLET, gunicorn  # noqa: F401  (the Procfile's server)
from wallet_proxy.web.worker import PIPELINE_DEPTH

LOGIN_COOKIE = "Cookie: wallet_proxy_preview_login=anything\r\n"  # makes the login route read its form


def trickle_head(port: int, chunked: bool) -> bytes:
    framing = "Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: 100000\r\n"
    return (f"POST /preview/login HTTP/1.1\r\nHost: x\r\n{LOGIN_COOKIE}"
            f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n").encode()


def trickle_byte(chunked: bool) -> bytes:
    return b"1\r\na\r\n" if chunked else b"a"


def closed_within(sock: socket.socket, seconds: float, every: float, byte: bytes) -> tuple[float | None, bytes]:
    """Send `byte` every `every` s until the server closes; (seconds it took or None, what it answered)."""
    started = time.monotonic()
    answer = b""
    sock.settimeout(every)
    while time.monotonic() - started < seconds:
        try:
            sock.sendall(byte)
        except OSError:
            return time.monotonic() - started, answer
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - started, answer
        if not data:
            return time.monotonic() - started, answer
        answer += data
    return None, answer


class TestSlowBodies:
    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_a_trickled_body_ends_at_the_body_timeout_with_a_json_408(self, gunicorn, chunked):
        server = gunicorn(WALLET_PROXY_BODY_TIMEOUT="2")
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(trickle_head(server.port, chunked))
            # one byte every 0.4 s: never a gap of a whole second, yet the body never completes
            took, answer = closed_within(sock, 8, 0.4, trickle_byte(chunked))
        assert took is not None and 1.8 <= took <= 4, took  # gunicorn's worker: never closed
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'"code": "request_timeout"' in answer or b'"code":"request_timeout"' in answer, answer
        # the server is fine afterwards
        assert requests.get(server.url + "/healthz", timeout=2).status_code == 200

    def test_a_body_that_stops_ends_after_half_the_body_timeout(self, gunicorn):
        server = gunicorn(WALLET_PROXY_BODY_TIMEOUT="6")
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(trickle_head(server.port, False) + b"name=a&")
            started = time.monotonic()
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            took = time.monotonic() - started
        assert 2.8 <= took <= 4.5, took  # no byte for 3 s (half of 6) ends it, before the whole 6 s
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]

    def test_a_body_routes_never_read_is_bounded_too(self, gunicorn):
        # the wallet route reads no body: gunicorn discarded the rest under the head's timer, or none
        server = gunicorn(WALLET_PROXY_BODY_TIMEOUT="2")
        requests.get(f"{server.url}/v1/wallets/{USER}?sig={SIG}", headers=WALLET, timeout=5)
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall((f"GET /v1/wallets/{USER}?sig={SIG} HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: {WALLET['Authorization']}\r\nContent-Length: 100000\r\n\r\n").encode())
            took, answer = closed_within(sock, 8, 0.4, b"a")
        assert took is not None and took <= 4, took
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]  # answered, then closed at the deadline


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends within `timeout`, and whether it closed the connection."""
    sock.settimeout(timeout)
    data = []
    try:
        while chunk := sock.recv(1 << 20):
            data.append(chunk)
    except socket.timeout:
        return b"".join(data), False
    except OSError:
        pass
    return b"".join(data), True


def non_reader(port: int, requests_count: int = 100) -> socket.socket:
    """A connection with a tiny receive buffer that pipelines GET /openapi.json and reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        sock.send(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * requests_count)
    except BlockingIOError:
        pass
    return sock


class TestClientsThatDoNotRead:
    def test_an_answer_the_client_does_not_read_is_dropped_after_the_write_timeout(self, gunicorn):
        server = gunicorn(WALLET_PROXY_WRITE_TIMEOUT="2")
        sock = non_reader(server.port)
        try:
            time.sleep(5)  # the write stalls from the first answers on; 2 s later the server gives up
            data, closed = read_all(sock, 3)
        finally:
            sock.close()
        # gunicorn's worker: still open, waiting to write the other answers of 100 x 80 KB
        assert closed, f"still open after {len(data)} bytes"
        assert 0 < data.count(b"HTTP/1.1 200 ") < 100

    def test_pipelined_requests_get_a_bounded_number_of_answers_in_a_row(self, gunicorn):
        server = gunicorn()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
            data, closed = read_all(sock, 5)
        # then the connection closes: a client that waits for its answers never sees this
        assert closed and data.count(b"HTTP/1.1 200 ") == PIPELINE_DEPTH, (closed, data.count(b"HTTP/1.1 200 "))

    def test_a_client_reading_between_requests_keeps_its_connection(self, gunicorn):
        server = gunicorn()
        with requests.Session() as session:
            for _ in range(PIPELINE_DEPTH * 2):
                assert session.get(server.url + "/healthz", timeout=2).status_code == 200
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                for _ in range(PIPELINE_DEPTH * 2):
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    answer = b""
                    while not answer.endswith(b"}\n"):  # the whole answer before the next request
                        answer += sock.recv(4096)
                    assert answer.startswith(b"HTTP/1.1 200 "), answer


class TestTheIssuesAttack:
    """#22 Done when: 55 trickling bodies and 55 non-reading clients against a worker of 50 connections."""

    def test_a_wallet_read_answers_within_2_s_of_the_timeouts(self, gunicorn):
        timeout = 3
        server = gunicorn(WALLET_PROXY_WORKER_CONNECTIONS="50", WALLET_PROXY_BODY_TIMEOUT=str(timeout),
                          WALLET_PROXY_WRITE_TIMEOUT=str(timeout))
        wallet_url = f"{server.url}/v1/wallets/{USER}?sig={SIG}"
        assert requests.get(wallet_url, headers=WALLET, timeout=5).status_code == 200
        tricklers, readers = [], []
        selector = selectors.DefaultSelector()
        try:
            for n in range(55):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(trickle_head(server.port, chunked=n % 2 == 1))
                sock.setblocking(False)
                tricklers.append(sock)
                selector.register(sock, selectors.EVENT_READ)
                readers.append(non_reader(server.port))
            opened = time.monotonic()
            closed_at = {}

            def trickle_until(stop: float) -> None:
                next_byte = 0.0
                while time.monotonic() < stop and len(closed_at) < len(tricklers):
                    if time.monotonic() >= next_byte:  # one byte a second: under the gap (1.5 s)
                        for n, sock in enumerate(tricklers):
                            if sock not in closed_at:
                                try:
                                    sock.send(trickle_byte(chunked=n % 2 == 1))
                                except OSError:
                                    pass
                        next_byte = time.monotonic() + 1
                    for key, _ in selector.select(timeout=0.1):
                        try:
                            data = key.fileobj.recv(65536)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        if not data:
                            closed_at[key.fileobj] = time.monotonic() - opened
                            selector.unregister(key.fileobj)

            with ThreadPoolExecutor(1) as pool:
                trickling = pool.submit(trickle_until, opened + timeout + 8)
                started = time.monotonic()
                answer = requests.get(wallet_url, headers={**WALLET, "Connection": "close"}, timeout=timeout + 4)
                took = time.monotonic() - started
                trickling.result()
            # gunicorn's worker: no answer while the trickle lasts (ReadTimeout above)
            assert answer.status_code == 200 and took <= timeout + 2, took
            # and every trickler was closed by the server, within its body timeout (+ being accepted late)
            assert len(closed_at) == 55, len(closed_at)
            assert max(closed_at.values()) <= 2 * timeout + 3, sorted(closed_at.values())
        finally:
            for sock in tricklers + readers:
                sock.close()

    def test_trickling_heads_give_way_to_a_wallet_read(self, gunicorn):
        # more connections trickling a request head than the worker has slots: the longest waiting give way
        server = gunicorn(WALLET_PROXY_WORKER_CONNECTIONS="50")
        wallet_url = f"{server.url}/v1/wallets/{USER}?sig={SIG}"
        assert requests.get(wallet_url, headers=WALLET, timeout=5).status_code == 200
        socks = []
        try:
            for _ in range(60):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                socks.append(sock)
            time.sleep(0.5)
            started = time.monotonic()
            answer = requests.get(wallet_url, headers={**WALLET, "Connection": "close"}, timeout=8)
            # gunicorn's worker, or ours before: a slot only when the oldest head timed out (10 s)
            assert answer.status_code == 200 and time.monotonic() - started < 2
        finally:
            for sock in socks:
                sock.close()


def test_the_timeouts_are_checked_settings():
    from wallet_proxy.settings import ConfigError, parse

    assert (parse({}).body_timeout, parse({}).write_timeout) == (10.0, 10.0)
    timeouts = parse({"WALLET_PROXY_BODY_TIMEOUT": "2.5", "WALLET_PROXY_WRITE_TIMEOUT": "4"})
    assert (timeouts.body_timeout, timeouts.write_timeout) == (2.5, 4.0)
    for name, value in (("WALLET_PROXY_BODY_TIMEOUT", "0"), ("WALLET_PROXY_WRITE_TIMEOUT", "soon"),
                        ("WALLET_PROXY_BODY_TIMEOUT", "301")):
        with pytest.raises(ConfigError, match=name):
            parse({name: value})


def test_a_file_answer_goes_through_the_bounded_writes_whole(gunicorn):
    # Flask serves static files through gunicorn's sendfile, which the worker replaces by bounded writes
    server = gunicorn()
    answer = requests.get(server.url + "/static/preview.css", timeout=5)
    shipped = (Path(__file__).parent.parent / "wallet_proxy" / "preview" / "static" / "preview.css").read_bytes()
    assert answer.status_code == 200 and answer.content == shipped
