"""The access line written straight to our handler is the line logging would have made."""
from __future__ import annotations

import io
import json
import logging
import re
import sys
from datetime import datetime, timezone

import pytest

from wallet_proxy.web import logs


@pytest.fixture
def sole_handler(monkeypatch):
    """Our JSON handler, writing to a buffer; `alone(*others)` makes it the root logger's only handler
    (as under gunicorn), with `others` beside it. Called in the test: pytest adds its log capture
    handlers to the root logger between a fixture's setup and the test."""
    handler = logs.configure(json_lines=True)
    redactor = handler.filters[0]
    saved_secrets = redactor.secrets
    redactor.secrets = set(saved_secrets) | {"s3cr3t-value"}
    buffer = io.StringIO()

    def alone(*others):
        monkeypatch.setattr(logging.getLogger(), "handlers", [handler, *others])
        monkeypatch.setattr(sys, "stderr", buffer)  # (pytest's capture swaps it between phases too)

    yield handler, buffer, alone
    redactor.secrets = saved_secrets


FIELDS = logs.access_fields("rid-s3cr3t-value", "GET", "/v1/wallets/<anypath:user_id>", 200, 0.00123,
                            "wallet-proxy; hit; ttl=42", "user-1", "braze", None, None, 0.02)


def test_the_direct_line_is_the_formatters_line(sole_handler):
    handler, buffer, alone = sole_handler
    alone()
    assert logs._sole_json_handler(logging.INFO) is handler
    logs.log_request(logging.INFO, dict(FIELDS))
    (direct,) = [json.loads(line) for line in buffer.getvalue().splitlines()]

    record = logs.ACCESS.makeRecord(logs.ACCESS.name, logging.INFO, "", 0,
                                    "GET /v1/wallets/<anypath:user_id> 200", None, None, extra=dict(FIELDS))
    assert handler.filter(record)
    expected = json.loads(handler.format(record))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", direct.pop("ts"))
    expected.pop("ts")
    assert list(direct) == list(expected) and direct == expected
    assert direct["request_id"] == "rid-[redacted]" and "user-1" not in buffer.getvalue()


def test_any_other_handler_gets_the_record_as_usual(sole_handler):
    handler, buffer, alone = sole_handler
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    alone(Keep())
    assert logs._sole_json_handler(logging.INFO) is None
    logs.log_request(logging.INFO, dict(FIELDS))
    assert [r.status for r in seen] == [200] and len(buffer.getvalue().splitlines()) == 1


def test_text_lines_on_a_terminal_go_through_the_formatter(sole_handler):
    handler, _, alone = sole_handler
    alone()
    handler.setFormatter(logs.TextFormatter())
    try:
        assert logs._sole_json_handler(logging.INFO) is None
    finally:
        handler.setFormatter(logs.JsonFormatter())


def test_timestamps_are_utc_with_milliseconds():
    for moment in (1_795_000_000.1234, 1_795_000_001.0, 1_795_000_001.999):
        iso = datetime.fromtimestamp(moment, tz=timezone.utc).isoformat(timespec="milliseconds")
        assert logs._timestamp(moment) == iso.replace("+00:00", "Z")
