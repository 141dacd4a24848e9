"""Schemathesis against /openapi.json of a live sandbox app: no server errors, answers as documented,
and the document agrees with the server: data it calls valid is accepted, data it calls invalid refused.

The documented 502/503/504 are the upstream's trouble reported as the SPEC says; any other 5xx
(500 above all) is a bug of ours and fails the run.
"""
from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, negative_data_rejection, positive_data_acceptance,
                                 response_schema_conformance, status_code_conformance)

from wallet_proxy import create_app
from wallet_proxy.sends.plan import snake_case
from wallet_proxy.settings import parse

UPSTREAM_5XX = {502, 503, 504}
# per operation and mode: ~30 runs x 20 examples stays well under 60 s (more: SCHEMATHESIS_EXAMPLES=200)
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "20"))
# Found by this test, in code owned elsewhere; listed so the rest keeps running until fixed.
KNOWN_BUGS: dict = {}  # (method, path) -> pytest mark, for a failure found and not yet fixed


@pytest.fixture(scope="module")
def sandbox(request):
    """A sandbox app (demo:demo, built-in simulators) served on loopback, and its OpenAPI schema."""
    from tests.fakes import LiveServer

    server = LiveServer(create_app(parse({})))
    request.addfinalizer(server.close)
    spec = requests.get(f"{server.url}/openapi.json", timeout=5).json()
    return server.url, schemathesis.openapi.from_dict(spec)


def operations():
    """Every documented operation and generation mode (negative only where there is input to break)."""
    app = create_app(parse({}))  # a throwaway app: its routes do not depend on the mode
    spec = app.test_client().get("/openapi.json").get_json()
    cases = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            marks = KNOWN_BUGS.get((method.upper(), path), ())
            cases.append(pytest.param(method.upper(), path, GenerationMode.POSITIVE, marks=marks,
                                      id=f"{method.upper()} {path} positive"))
            if operation.get("requestBody") or any(_breakable(p) for p in operation["parameters"]):
                cases.append(pytest.param(method.upper(), path, GenerationMode.NEGATIVE, marks=marks,
                                          id=f"{method.upper()} {path} negative"))
    return cases


def _breakable(parameter: dict) -> bool:
    """A parameter negative testing can violate (a bare string path segment accepts anything)."""
    if parameter["in"] == "query":
        return True
    return parameter["in"] == "path" and set(parameter["schema"]) - {"type"} != set()


def _beyond_json_schema(value, depth: int = 0) -> bool:
    """A body the server refuses for a rule JSON Schema cannot state: an unpaired surrogate in a string
    (SPEC "All JSON POST routes": a 400), nesting past 32 levels, or two field names that become one
    snake_case property (SessionM's flat body: `"0"` and `"0@"`). Also a float with no fraction: JSON
    Schema counts `2.0` as an integer, while the server's integer fields (a tag's `ttl`) are strict."""
    if depth > 30 or (isinstance(value, float) and value.is_integer()):
        return True
    if isinstance(value, dict) and len({snake_case(str(k)) for k in value}) < len(value):
        return True
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, dict):
        return any(_beyond_json_schema(k, depth + 1) or _beyond_json_schema(v, depth + 1)
                   for k, v in value.items())
    if isinstance(value, list):
        return any(_beyond_json_schema(v, depth + 1) for v in value)
    return False


@pytest.mark.parametrize("method,path,mode", operations())
def test_no_server_errors_and_documented_answers(sandbox, method, path, mode):
    base_url, schema = sandbox
    operation = schema[path][method]
    session = requests.Session()
    session.auth = ("demo", "demo")
    seen = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(base_url=base_url, session=session, timeout=10, allow_redirects=False)
        seen.append(response.status_code)
        assert response.status_code < 500 or response.status_code in UPSTREAM_5XX, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")
        checks = [status_code_conformance, content_type_conformance]
        if mode is GenerationMode.POSITIVE or response.status_code >= 400:
            checks.append(response_schema_conformance)
        # the document and the server agree: what it calls valid is accepted, what it calls invalid is
        # refused (schemathesis' positive_data_acceptance / negative_data_rejection)
        if mode is GenerationMode.NEGATIVE:
            if not (lenient_dry_run and (case.query or {}).get("dry_run", "0") not in ("0", "1")):
                checks.append(negative_data_rejection)
        elif not _beyond_json_schema(case.body):
            checks.append(positive_data_acceptance)
        case.validate_response(response, checks=checks)

    lenient_dry_run = _accepts_blank_dry_run(base_url, session)
    run()
    assert seen, "no request was made"


def _accepts_blank_dry_run(base_url: str, session) -> bool:
    """Whether this server still takes `?dry_run=` (the document says `0` or `1` only; the server's own
    check of the query flag comes with the one admission step, issue 20). While it does, a negative case
    whose only fault is that flag is not held against the document; once the server refuses it, every
    negative case is checked again, with no change here."""
    reply = session.post(f"{base_url}/v1/braze/trigger?dry_run=", json={"campaign_id": ""}, timeout=10)
    problems = str(reply.json().get("error", {}).get("details", {}))
    return "dry_run" not in problems


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_signed_wallet_reads_never_crash(mode):
    """With WALLET_PROXY_SIGNING_KEY set, any `sig` (non-ASCII included) is a 403, never a 500."""
    from tests.fakes import LiveServer

    server = LiveServer(create_app(parse({"WALLET_PROXY_SIGNING_KEY": "sandbox-signing-key"})))
    try:
        spec = requests.get(f"{server.url}/openapi.json", timeout=5).json()
        operation = schemathesis.openapi.from_dict(spec)["/v1/wallets/{user_id}"]["GET"]
        session = requests.Session()
        session.auth = ("demo", "demo")

        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            response = case.call(base_url=server.url, session=session, timeout=10)
            assert response.status_code < 500 or response.status_code in UPSTREAM_5XX, response.text[:300]
            case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])

        run()
    finally:
        server.close()
