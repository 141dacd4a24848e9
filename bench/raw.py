"""The ceiling: a raw WSGI app returning a fixed body, served by the same gunicorn line as the
service. Whatever the service's cache hits cost above this is ours (routing, auth, cache, headers,
the JSON access log, metrics).

The body is the bytes of a real hit (the file named by BENCH_RAW_BODY, written by bench/run.py), so
both send the same bytes and the comparison is of the work per request, not of the payload.
"""
import os

BODY = b'{"ok":true}'
if os.environ.get("BENCH_RAW_BODY"):
    with open(os.environ["BENCH_RAW_BODY"], "rb") as body:
        BODY = body.read()
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    """Answer the fixed body, whatever was asked."""
    start_response("200 OK", HEADERS)
    return [BODY]
