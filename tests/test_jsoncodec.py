"""wallet_proxy.jsoncodec: orjson on the hot paths, reading and writing what the standard library did."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet_proxy import jsoncodec


def stdlib(value) -> bytes:
    """What wallet bodies were before: compact, non-ASCII as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


texts = st.text(st.characters(exclude_categories=("Cs",)))  # any text but lone surrogates
scalars = st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(texts, inner, max_size=4), max_leaves=20)


@given(values)
def test_writes_the_same_bytes_as_the_standard_library(value):
    assert jsoncodec.dumps(value) == stdlib(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_reads_back_as_the_same_number(number):
    # orjson writes 1e16 where Python writes 1e+16: other text, the same number for any JSON reader
    assert json.loads(jsoncodec.dumps({"points": number})) == {"points": number}


@given(values)
def test_reads_what_it_writes_and_what_the_standard_library_writes(value):
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value
    assert jsoncodec.loads(stdlib(value)) == value
    assert jsoncodec.loads(stdlib(value).decode()) == value


@pytest.mark.parametrize("value", [
    {"points": 2 ** 70},            # past 64 bits: orjson refuses, the standard library writes it
    {1: "non-string key"},          # the standard library writes the key as "1"
])
def test_what_orjson_refuses_to_write_is_written_as_before(value):
    assert jsoncodec.dumps(value) == stdlib(value)


def test_a_lone_surrogate_fails_as_before():
    with pytest.raises(UnicodeEncodeError):
        stdlib({"title": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        jsoncodec.dumps({"title": "\ud800"})


@pytest.mark.parametrize("text, check", [
    (b'{"points": NaN}', lambda v: math.isnan(v["points"])),
    (b'{"points": -Infinity}', lambda v: v["points"] == -math.inf),
    (b'{"title": "\\ud800"}', lambda v: v["title"] == "\ud800"),
])
def test_what_orjson_refuses_to_read_is_read_as_before(text, check):
    # SessionM's answer is read as the standard library read it; the payload rules then decide
    # (a non-finite number drops its offer, tests/test_payload.py)
    assert check(jsoncodec.loads(text))
    assert check(json.loads(text))


def test_an_integer_past_64_bits_is_read_as_a_float_of_the_same_value():
    # The one reading that differs from the standard library's (which kept every digit): no points
    # balance or id number comes near 2**64, and the value is kept to 16 significant digits.
    value = jsoncodec.loads(b'{"points": 123456789012345678901234567890}')["points"]
    assert value == pytest.approx(123456789012345678901234567890, rel=1e-15)
    assert jsoncodec.loads(b'{"points": 18446744073709551615}')["points"] == 2 ** 64 - 1  # u64 exact


@pytest.mark.parametrize("text", [b"", b"{", b"<html>bad gateway</html>", b"\xff\xfe"])
def test_not_json_is_a_value_error(text):
    with pytest.raises(ValueError):
        jsoncodec.loads(text)


def test_no_process_wide_switch():
    # benchmarks compare implementations by constructing them, never by flipping a module's flag
    assert not hasattr(jsoncodec, "FAST")
    assert jsoncodec.dumps({"a": [1, "é"]}) == b'{"a":[1,"\xc3\xa9"]}'
    assert jsoncodec.loads(b'{"a": 1}') == {"a": 1}


def stdlib_line(value) -> str:
    """What a log line's JSON is: compact, non-ASCII kept, anything else as its str()."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


exact_values = st.recursive(scalars | st.datetimes() | st.uuids() | st.decimals(allow_nan=False),
                            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                            max_leaves=20)


@given(st.dictionaries(texts, exact_values, max_size=8))
def test_a_log_line_is_the_standard_librarys_line(fields):
    assert jsoncodec.log_line(fields) == stdlib_line(fields)


@given(st.dictionaries(texts, st.floats(allow_nan=False, allow_infinity=False), max_size=4))
def test_a_log_lines_numbers_read_back_the_same(fields):
    # orjson spells 1e16 where Python writes 1e+16: the same number for any JSON reader
    assert json.loads(jsoncodec.log_line(fields)) == json.loads(stdlib_line(fields)) == fields


@pytest.mark.parametrize("fields", [
    {"points": 2 ** 70}, {1: "non-string key"}, {"title": "\ud800"},  # orjson refuses: stdlib writes
    {"when": __import__("datetime").datetime(2026, 12, 7, 6, 0)},     # str(), as before, not RFC 3339
])
def test_what_orjson_refuses_in_a_log_line_is_written_as_before(fields):
    assert jsoncodec.log_line(fields) == stdlib_line(fields)
