"""upstream/fast.py, the hot SessionM call's transport under gevent: the transport contract (Reply for
every status, the ApiErrors and `reached`, one more send of an idempotent call whose kept-alive
connection was closed unanswered, the caller's timeout) against real sockets, in a gevent process."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

SCRIPT = textwrap.dedent(r'''
    from gevent import monkey; monkey.patch_all()
    import json, socket, time
    import gevent
    from gevent.server import StreamServer
    from wallet_proxy.upstream.fast import GeventTransport, Request

    connections = []
    mode = {"now": "ok"}

    def answer(status, body, extra=b""):
        return (b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                % (status, len(body), extra)) + body

    def handle(sock, address):
        connections.append(address)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                continue
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                         .split(b":")[1])
            if len(rest) < length:
                continue
            data = rest[length:]
            request = json.loads(rest[:length])
            now = mode["now"]
            if now == "close-once":  # the kept-alive connection dies unanswered (idle timeout race)
                mode["now"] = "ok"
                sock.close()
                return
            if now == "hang":
                gevent.sleep(5)
            if now == "garbage":
                sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                sock.close()
                return
            if now == "html":
                sock.sendall(answer(502, b"<html>bad gateway</html>"))
                continue
            if now == "429":
                sock.sendall(answer(429, b'{"status":"error"}', b"Retry-After: 7\r\n"))
                continue
            sock.sendall(answer(200, json.dumps({"status": "ok", "echo": request,
                                                 "head": head.decode("latin-1")}).encode()))

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    url = f"http://127.0.0.1:{server.server_port}/offers/api/2.0/offers/get_user_offers"
    fast = GeventTransport(url, 4)
    out = {}

    def call(timeout=2.0, idempotent=True, **kw):
        request = Request("POST", url, name="SessionM", timeout=timeout, idempotent=idempotent,
                          headers={"Authorization": "Basic abc", "Content-Type": "application/json"},
                          content=json.dumps({"user_id": "u1", "culture": "fr"}).encode(), **kw)
        try:
            reply = fast.send(request)
            return {"status": reply.status, "data": reply.data, "text": reply.text,
                    "retry_after": reply.headers.get("Retry-After")}
        except Exception as exc:
            return {"error": type(exc).__name__, "code": getattr(exc, "code", None),
                    "reached": getattr(exc, "reached", None), "message": str(exc)}

    out["ok"] = [call() for _ in range(5)]
    out["connections_after_5"] = len(connections)
    mode["now"] = "close-once"; out["closed_idempotent"] = call(); out["connections_after_close"] = len(connections)
    call(); mode["now"] = "close-once"; out["closed_not_idempotent"] = call(idempotent=False); mode["now"] = "ok"
    mode["now"] = "429"; out["429"] = call()
    mode["now"] = "html"; out["html"] = call()
    mode["now"] = "hang"; started = time.monotonic(); out["hang"] = call(timeout=0.3)
    out["hang_seconds"] = time.monotonic() - started
    mode["now"] = "garbage"; out["garbage"] = call()
    mode["now"] = "ok"; out["after"] = call()
    refused = socket.socket(); refused.bind(("127.0.0.1", 0)); port = refused.getsockname()[1]; refused.close()
    try:
        GeventTransport(f"http://127.0.0.1:{port}/x", 2).send(Request(
            "POST", f"http://127.0.0.1:{port}/x", name="SessionM", timeout=1.0, content=b"{}"))
    except Exception as exc:
        out["refused"] = {"error": type(exc).__name__, "reached": exc.reached}
    print(json.dumps(out))
''')


def run() -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_fast_transport_keeps_the_transport_contract():
    out = run()
    first = out["ok"][0]
    assert first["status"] == 200 and first["data"]["echo"] == {"user_id": "u1", "culture": "fr"}
    head = first["data"]["head"]
    assert head.startswith("POST /offers/api/2.0/offers/get_user_offers HTTP/1.1\r\n")
    assert "Authorization: Basic abc" in head and "Content-Type: application/json" in head
    assert out["connections_after_5"] == 1, "one kept-alive connection for calls one after another"
    # an idempotent call is sent once more on a new connection when the kept one closed unanswered
    assert out["closed_idempotent"]["status"] == 200 and out["connections_after_close"] == 2
    # a call that is not safe twice is not: the caller learns it may have reached the server
    assert out["closed_not_idempotent"]["code"] == "upstream_unavailable"
    assert out["closed_not_idempotent"]["reached"] is True
    # every HTTP status is a Reply; what it means is the client's business
    assert out["429"]["status"] == 429 and out["429"]["retry_after"] == "7"
    assert out["html"]["status"] == 502 and out["html"]["data"] is None and "bad gateway" in out["html"]["text"]
    assert out["hang"]["code"] == "upstream_timeout" and 0.25 < out["hang_seconds"] < 1.0
    assert out["garbage"]["code"] in ("upstream_error", "upstream_unavailable")
    assert out["after"]["status"] == 200, "a timed-out or broken connection is never reused"
    assert out["refused"] == {"error": "UpstreamUnavailable", "reached": False}
